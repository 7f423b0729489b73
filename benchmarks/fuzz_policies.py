"""Fuzz the policy and model loaders with malicious files (issue 22).

Every case is a copy of a shipped file (``policies/assets/calm`` PPO policy,
``policies/assets/jam3`` jam ensemble, the ``pid`` / ``constant`` / ``adaptive``
settings and ``calm/controller.json``, a ``listener.json``) damaged on purpose:

* ``policy.json fields``: ``history_len`` 1e9, NaN / inf / 1e300 statistics,
  negative variance, NaN ``clip_obs``, short vectors, absurd ``net_arch``, wrong
  types, deep nesting, 5000-digit integers, non-UTF-8, a sparse 5 GB file;
* ``weights``: NaN / inf / 3e38 weights, int8 / float64 / bool casts, missing, extra
  and misshaped tensors, crafted headers and offsets, truncation, pickles with a
  payload (protocols 0 and 4, a torch.save zip), symlinks to ``/dev/zero`` and
  ``/dev/urandom``, a directory, a FIFO, a broken link;
* ``jam policy``: ensemble members out of range, 48 members, missing member tensors,
  observation sizes that are no jam observation;
* ``controller settings``: PID / constant / adaptive files and the manifest out of
  range (an MPC ``grid`` of 1e6, a path-traversing ``run``), ``jam3`` given to a session;
* ``listener.json``: parameters NaN, out of range, unknown, of an unknown family;
  the file a device;
* ``random JSON mutations`` of ``policy.json`` (a seeded value or deletion at a
  random place) and ``random byte flips`` of ``policy.safetensors``.

Each case is loaded in a worker process (restarted after a time-out) that resets its
peak-RSS mark (``/proc/self/clear_refs``) before the load and reads ``VmHWM`` after:
``worst_mb`` is the largest peak RSS above the worker's resting size. A case passes
when the loader returns or raises one of the project's typed errors
(:class:`st_agent.errors.STAgentError`), within ``MAX_SEC`` and ``MAX_MB``, and no
payload ran (the pickles would create a marker file).

Run: ``python benchmarks/fuzz_policies.py [--quick] [--seed 0]``
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import select
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "policies" / "assets"
MAX_SEC, MAX_MB = 60.0, 500.0
NAN, INF = float("nan"), float("inf")


@dataclass
class Case:
    family: str
    name: str
    kind: str  # which loader: policy, jam, pid, constant, adaptive, manifest, session, listener
    path: str
    marker: str = ""


# --------------------------------------------------------------------------- file builders


def _json(path: Path, change: Callable[[Any], Any] | None) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    if change is not None:
        change(doc)  # in place; what it returns is ignored
    path.write_text(json.dumps(doc), encoding="utf-8")


def _weights(path: Path, change: Callable[[dict[str, np.ndarray]], None]) -> None:
    from safetensors.numpy import load_file, save_file

    state = dict(load_file(str(path)))
    change(state)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))


def _copy(src: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("policy.json", "policy.safetensors"):
        shutil.copy(src / name, folder / name)
    return folder


class _Payload:
    """Unpickling creates ``marker`` (proof that code ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (Path(self.marker),))


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.__setitem__(key, value)


def _item(key: str, i: int, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d[key].__setitem__(i, value)


def policy_json_cases() -> list[tuple[str, Any]]:
    """(name, change of calm's policy.json: a function, or raw text / bytes)."""
    return [
        ("history_len 1e9", _set("history_len", 1_000_000_000)),
        ("history_len 1e9 as float", _set("history_len", 1e9)),
        ("history_len -1", _set("history_len", -1)),
        ("history_len true", _set("history_len", True)),
        ("history_len '3'", _set("history_len", "3")),
        ("obs_mean NaN", _item("obs_mean", 0, NAN)),
        ("obs_mean inf", _item("obs_mean", 4, INF)),
        ("obs_mean 1e300", _item("obs_mean", 2, 1e300)),
        ("obs_var negative", _item("obs_var", 5, -0.5)),
        ("obs_var NaN", _item("obs_var", 1, NAN)),
        ("clip_obs NaN", _set("clip_obs", NAN)),
        ("clip_obs 0", _set("clip_obs", 0.0)),
        ("clip_obs inf", _set("clip_obs", INF)),
        ("epsilon negative", _set("epsilon", -1e-8)),
        ("short obs_mean", lambda d: d.update(obs_mean=d["obs_mean"][:-1])),
        ("long obs_var", lambda d: d.update(obs_var=d["obs_var"] + [1.0] * 1000)),
        ("net_arch 1e9 wide", _set("net_arch", [10 ** 9])),
        ("net_arch 8 x 1024", _set("net_arch", [1024] * 8)),
        ("net_arch empty", _set("net_arch", [])),
        ("net_arch nested", _set("net_arch", [[64]])),
        ("obs_var missing", lambda d: d.pop("obs_var")),
        ("format wrong", _set("format", "st-agent-jam-policy")),
        ("version 2", _set("version", 2)),
        ("top level list", "[1, 2, 3]"),
        ("5000-digit int", '{"format": "st-agent-ppo-policy", "version": 1, "history_len": 1'
                           + "0" * 5000 + "}"),
        ("nested 100k deep", "[" * 100_000 + "]" * 100_000),
        ("not UTF-8", b'{"format": "\xff\xfe"}'),
        ("empty file", ""),
        ("5 GB sparse", None),
    ]


def weight_cases(marker: Path) -> list[tuple[str, Any]]:
    """(name, change of calm's policy.safetensors: a function of the state, or bytes, or
    ``("link", target)`` / ``"dir"`` / ``"fifo"``)."""
    w = "mlp_extractor.policy_net.2.weight"

    def poke(value: float) -> Callable[[dict[str, np.ndarray]], None]:
        return lambda s: s[w].__setitem__((7, 3), value)

    def cast(dtype: Any) -> Callable[[dict[str, np.ndarray]], None]:
        return lambda s: s.update({k: v.astype(dtype) for k, v in s.items()})

    zipped = tempfile.SpooledTemporaryFile()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(_Payload(marker), protocol=2))
    zipped.seek(0)
    return [
        ("NaN weight", poke(NAN)), ("inf weight", poke(INF)), ("3e38 weight", poke(3e38)),
        ("log_std -200", lambda s: s.update(log_std=np.full(3, -200.0, np.float32))),
        ("int8 cast", cast(np.int8)), ("uint8 cast", cast(np.uint8)),
        ("float64 cast", cast(np.float64)), ("bool cast", cast(np.bool_)),
        ("missing tensor", lambda s: s.pop("log_std")),
        ("extra tensor", lambda s: s.update(extra=np.zeros(2, np.float32))),
        ("wrong shape", lambda s: s.update({"action_net.weight": np.zeros((3, 65), np.float32)})),
        ("header length 2**63", (2 ** 63).to_bytes(8, "little") + b"{}"),
        ("header not JSON", (64).to_bytes(8, "little") + b"{" * 64),
        ("header a list", (16).to_bytes(8, "little") + b'["not", "a map"]'),
        ("header shape 2**40", None),
        ("lying offsets", None),
        ("truncated", None),
        ("pickle protocol 4", pickle.dumps(_Payload(marker), protocol=4)),
        ("pickle protocol 0", pickle.dumps(_Payload(marker), protocol=0)),
        ("torch.save zip", zipped.read()),
        ("symlink /dev/zero", ("link", "/dev/zero")),
        ("symlink /dev/urandom", ("link", "/dev/urandom")),
        ("broken symlink", ("link", "/nonexistent/policy.safetensors")),
        ("directory", "dir"), ("FIFO", "fifo"), ("empty file", b""),
    ]


def _rewrite_header(path: Path, change: Callable[[dict[str, Any]], None], cut: int = 0) -> None:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    change(header)
    text = json.dumps(header).encode()
    data = raw[8 + n:]
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[:len(data) - cut])


def _build_weights(folder: Path, change: Any) -> None:
    st = folder / "policy.safetensors"
    if callable(change):
        _weights(st, change)
    elif isinstance(change, bytes):
        st.write_bytes(change)
    elif isinstance(change, tuple):
        st.unlink()
        st.symlink_to(change[1])
    elif change in ("dir", "fifo"):
        st.unlink()
        st.mkdir() if change == "dir" else os.mkfifo(st)


def _special_weights(name: str, st: Path) -> None:
    if name == "header shape 2**40":
        _rewrite_header(st, lambda h: h["log_std"].update(shape=[2 ** 40]))
    elif name == "lying offsets":
        _rewrite_header(st, lambda h: h["log_std"].update(data_offsets=[0, 10 ** 12]))
    elif name == "truncated":
        _rewrite_header(st, lambda h: None, cut=20_000)


def jam_cases() -> list[tuple[str, Any, Any]]:
    """(name, change of jam3's policy.json, change of its weights)."""
    return [
        ("member clip_obs NaN", lambda d: d["members"][4].update(clip_obs=NAN), None),
        ("member obs_var negative", lambda d: d["members"][0]["obs_var"].__setitem__(3, -1.0),
         None),
        ("48 members", lambda d: d.update(members=d["members"] * 8), None),
        ("members without tensors", lambda d: d.update(members=d["members"] + d["members"][:2]),
         None),
        ("obs_size not a jam size", lambda d: [m.update(obs_size=43, obs_mean=m["obs_mean"]
                                                        + [0.0], obs_var=m["obs_var"] + [1.0])
                                               for m in d["members"]], None),
        ("obs_size 4000", lambda d: d["members"][0].update(obs_size=4000), None),
        ("members of two sizes", lambda d: d["members"][1].update(
            obs_size=47, obs_mean=d["members"][1]["obs_mean"] + [0.0] * 5,
            obs_var=d["members"][1]["obs_var"] + [1.0] * 5), None),
        ("member NaN weight", None,
         lambda s: s["member5/value_net.bias"].__setitem__(0, NAN)),
    ]


def settings_cases() -> list[tuple[str, str, str, Any]]:
    """(name, loader kind, file under the assets copy, change)."""
    return [
        ("pid kp NaN", "pid", "pid/calm.json", _set("kp", NAN)),
        ("pid kd negative", "pid", "pid/calm.json", _set("kd", -1.0)),
        ("pid ki missing", "pid", "pid/calm.json", lambda d: d.pop("ki")),
        ("constant knob 2", "constant", "constant/calm.json", _set("knobs", [2.0, 0.5, 0.5])),
        ("adaptive grid 1e6", "adaptive", "adaptive/calm.json",
         lambda d: d["config"].update(grid=1_000_000)),
        ("adaptive horizon 1e9", "adaptive", "adaptive/calm.json",
         lambda d: d["config"].update(horizon=10 ** 9)),
        ("adaptive prior NaN", "adaptive", "adaptive/calm.json",
         lambda d: d["prior"]["mean"][1].__setitem__(4, NAN)),
        ("adaptive noise_var 0", "adaptive", "adaptive/calm.json",
         lambda d: d["prior"].update(noise_var=[0.1, 0.0])),
        ("manifest run ../../etc", "manifest", "calm/controller.json",
         lambda d: d.update(kind="residual", run="../../etc")),
        ("manifest kind unknown", "manifest", "calm/controller.json", _set("kind", "mystery")),
        ("jam3 to a session", "session", "calm/controller.json", None),
    ]


def listener_cases() -> list[tuple[str, Any]]:
    """(name, change of a valid listener.json; ``("link", target)`` for a link)."""
    p = "params"
    return [
        ("param NaN", lambda d: d[p].update(tau_arousal_sec=NAN)),
        ("param 1e9", lambda d: d[p].update(tau_arousal_sec=1e9)),
        ("param a string", lambda d: d[p].update(tau_arousal_sec="20")),
        ("param unknown", lambda d: d[p].update(mystery=1.0)),
        ("family unknown", lambda d: d[p].update(family="quantum")),
        ("params a list", _set(p, [1, 2])),
        ("100k params", _set(p, {f"k{i}": 0.0 for i in range(100_000)})),
        ("symlink /dev/zero", ("link", "/dev/zero")),
    ]


def _mutate(doc: Any, rng: np.random.Generator) -> Any:
    """One random value replaced (or deleted) at a random place of ``doc``."""
    palette: list[Any] = [NAN, INF, -INF, 1e308, -1, 0, 10 ** 12, True, None, "x", [], {},
                          [1.0] * 5, [[[]]], -1e-300, 2 ** 63]
    parent, key = None, None
    node = doc
    for _ in range(int(rng.integers(1, 4))):
        if isinstance(node, dict) and node:
            parent, key = node, list(node)[int(rng.integers(len(node)))]
        elif isinstance(node, list) and node:
            parent, key = node, int(rng.integers(len(node)))
        else:
            break
        node = parent[key]
    if parent is None:
        return palette[int(rng.integers(len(palette)))]
    if isinstance(parent, dict) and rng.random() < 0.2:
        del parent[key]
    else:
        parent[key] = palette[int(rng.integers(len(palette)))]
    return doc


def build_cases(root: Path, quick: bool, seed: int) -> list[Case]:
    """Write every case's files under ``root``; return the cases."""
    rng = np.random.default_rng(seed)
    marker = root / "PAYLOAD_RAN"
    calm, jam3 = ASSETS / "calm", ASSETS / "jam3"
    cases: list[Case] = []
    pj = policy_json_cases()
    wc = weight_cases(marker)
    for i, (name, change) in enumerate(pj[::3] if quick else pj):
        d = _copy(calm, root / f"pj{i}")
        js = d / "policy.json"
        if name == "5 GB sparse":
            with js.open("r+b") as fh:
                fh.truncate(5 * 2 ** 30)
        elif isinstance(change, bytes):
            js.write_bytes(change)
        elif isinstance(change, str):
            js.write_text(change, encoding="utf-8")
        else:
            _json(js, change)
        cases.append(Case("policy.json fields", name, "policy", str(d)))
    for i, (name, change) in enumerate(wc[::3] if quick else wc):
        d = _copy(calm, root / f"w{i}")
        if change is None:
            _special_weights(name, d / "policy.safetensors")
        else:
            _build_weights(d, change)
        cases.append(Case("weights", name, "policy", str(d), str(marker)))
    for i, (name, jchange, wchange) in enumerate(jam_cases()[::2] if quick else jam_cases()):
        d = _copy(jam3, root / f"j{i}")
        if jchange is not None:
            _json(d / "policy.json", jchange)
        if wchange is not None:
            _weights(d / "policy.safetensors", wchange)
        cases.append(Case("jam policy", name, "jam", str(d)))
    for i, (name, kind, rel, change) in enumerate(settings_cases()):
        if quick and i % 2:
            continue
        d = root / f"s{i}"
        shutil.copytree(ASSETS, d, ignore=shutil.ignore_patterns("*.safetensors", "*.md"))
        if change is not None:
            _json(d / rel, change)
        cases.append(Case("controller settings", name, kind, str(d)))
    good = {"format": "st-agent-listener", "version": 1, "params": _listener_params()}
    for i, (name, change) in enumerate(listener_cases()):
        path = root / f"l{i}.json"
        if isinstance(change, tuple):
            path.symlink_to(change[1])
        else:
            path.write_text(json.dumps(good), encoding="utf-8")
            _json(path, change)
        cases.append(Case("listener.json", name, "listener", str(path)))
    base = json.loads((calm / "policy.json").read_text(encoding="utf-8"))
    for i in range(8 if quick else 40):
        d = _copy(calm, root / f"m{i}")
        doc = _mutate(json.loads(json.dumps(base)), rng)
        (d / "policy.json").write_text(json.dumps(doc), encoding="utf-8")
        cases.append(Case("random JSON mutations", f"mutation {i}", "policy", str(d)))
    size = (calm / "policy.safetensors").stat().st_size
    for i in range(4 if quick else 20):
        d = _copy(calm, root / f"b{i}")
        raw = bytearray((d / "policy.safetensors").read_bytes())
        n_head = 8 + int.from_bytes(raw[:8], "little")
        for _ in range(int(rng.integers(1, 6))):  # half in the header, half anywhere
            pos = int(rng.integers(n_head if rng.random() < 0.5 else size))
            raw[pos] ^= 1 << int(rng.integers(8))
        (d / "policy.safetensors").write_bytes(bytes(raw))
        cases.append(Case("random byte flips", f"flips {i}", "policy", str(d)))
    return cases


def _listener_params() -> dict[str, float]:
    from st_agent.listener.model import ListenerParams

    return ListenerParams().as_dict()


# --------------------------------------------------------------------------- worker


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _load(kind: str, path: str) -> str:
    from st_agent.contract import SafetyBounds

    if kind == "policy":
        from st_agent.policies.loading import load_policy

        return f"loaded (obs {load_policy(path).obs_size})"
    if kind == "jam":
        from st_agent.policies.jam import load_jam_policy

        return f"loaded (obs {load_jam_policy(path).obs_size})"
    if kind == "listener":
        from st_agent.listener.fitting import load_fit

        return f"loaded {type(load_fit(path)).__name__}"
    from st_agent.policies import controllers

    controllers.BUNDLED_DIR = ASSETS if kind == "session" else Path(path)
    load = {"pid": lambda: controllers.pid_for("calm"),
            "constant": lambda: controllers.constant_for("calm", SafetyBounds()),
            "adaptive": lambda: controllers.adaptive_for("calm", SafetyBounds()),
            "manifest": lambda: controllers.make_controller("calm", SafetyBounds()),
            "session": lambda: controllers.make_controller("jam3", SafetyBounds())}[kind]
    return f"loaded {type(load()).__name__}"


def worker() -> None:
    """Read cases (JSON lines) from stdin; answer one JSON line per case."""
    import torch

    from st_agent.errors import STAgentError

    torch.set_num_threads(1)
    # the loaders' imports happen before the resting size is taken
    import st_agent.policies.controllers
    import st_agent.policies.jam  # noqa: F401

    for line in sys.stdin:
        case = json.loads(line)
        can_reset = _reset_peak()
        base = _status_kb("VmRSS")
        t0 = time.perf_counter()
        try:
            outcome, ok = _load(case["kind"], case["path"]), True
        except STAgentError as e:
            outcome, ok = f"{type(e).__name__}: {e}", True
        except Exception as e:  # the benchmark's point: any other error fails the case
            outcome, ok = f"UNTYPED {type(e).__name__}: {e}", False
        sec = time.perf_counter() - t0
        # without a reset (no clear_refs) this is an upper bound: the peak of the imports
        # of this fresh worker counts too
        peak_mb = (_status_kb("VmHWM") - base) / 1024
        print(json.dumps({"ok": ok, "outcome": outcome[:300], "sec": sec, "mb": peak_mb,
                          "reset": can_reset}), flush=True)
        if not can_reset:
            return  # one case per process: the parent starts a fresh one


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=ROOT)

    def ask(self, case: Case, timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"kind": case.kind, "path": case.path}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        return json.loads(line) if line else None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run(quick: bool = False, seed: int = 0, verbose: bool = False) -> list[dict[str, Any]]:
    """Build and load every case; one row per family (module docstring)."""
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="st_fuzz_policies_") as tmp:
        root = Path(tmp)
        cases = build_cases(root, quick, seed)
        w: _Worker | None = None
        # the first answer also waits for the worker's imports (slow on a busy machine)
        first = True
        for case in cases:
            w = w if (w is not None and w.proc.poll() is None) else _Worker()
            res = w.ask(case, MAX_SEC + (120.0 if first else 0.0))
            first = False
            if res is None:
                w.close()
                w, first = None, True
                res = {"ok": False, "outcome": f"TIMEOUT or crash after {MAX_SEC} s",
                       "sec": MAX_SEC, "mb": float("nan")}
            elif not res.get("reset", True):  # no peak reset here: one case per worker
                w.close()
                w, first = None, True
            ran = case.marker and Path(case.marker).exists()
            passed = res["ok"] and not ran and res["sec"] <= MAX_SEC \
                and not (res["mb"] >= MAX_MB)
            row = rows.setdefault(case.family, {"family": f"policies: {case.family}", "tried": 0,
                                                "passed": 0, "worst_sec": 0.0, "worst_mb": 0.0,
                                                "loads": 0, "fails": []})
            row["tried"] += 1
            row["passed"] += int(passed)
            row["loads"] += int(res["outcome"].startswith("loaded"))
            row["worst_sec"] = max(row["worst_sec"], res["sec"])
            if res["mb"] == res["mb"]:
                row["worst_mb"] = max(row["worst_mb"], res["mb"])
            if not passed:
                row["fails"].append(f"{case.name}: {'PAYLOAD RAN; ' if ran else ''}"
                                    f"{res['outcome'][:120]}")
            if verbose:
                print(f"{'ok ' if passed else 'BAD'} {case.family:<22} {case.name:<26} "
                      f"{res['sec']:6.2f} s {res['mb']:6.1f} MB  {res['outcome'][:110]}",
                      flush=True)
        if w is not None:
            w.close()
    out = []
    for row in rows.values():
        typed = row["tried"] - row["loads"] - len(row["fails"])
        note = f"{typed} typed errors, {row['loads']} valid loads"
        if row["fails"]:
            note += "; FAILED: " + " | ".join(row["fails"][:3])
        out.append({k: row[k] for k in ("family", "tried", "passed", "worst_sec", "worst_mb")}
                   | {"note": note})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small run of every family")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random mutations")
    ap.add_argument("--verbose", action="store_true", help="one line per case")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker()
        return 0
    rows = run(args.quick, args.seed, args.verbose)
    head = f"{'family':<34} {'tried':>6} {'passed':>6} {'worst s':>8} {'worst MB':>9}  note"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['family']:<34} {r['tried']:>6} {r['passed']:>6} {r['worst_sec']:>8.2f} "
              f"{r['worst_mb']:>9.1f}  {r['note']}")
    tried, passed = sum(r["tried"] for r in rows), sum(r["passed"] for r in rows)
    print(f"total: {tried} malicious policy/model files, {passed} passed "
          f"(typed error or valid load, no payload run, < {MAX_SEC:.0f} s, < {MAX_MB:.0f} MB)")
    return 0 if tried == passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
