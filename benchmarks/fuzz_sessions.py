"""Fuzz the session reader with corrupted session folders (issue 22).

One real session (16 channels at 250 Hz, recorded by ``SessionRecorder`` with its
default 0.5 s flush, so 0.5 s segments) is copied and damaged in each case:

* ``bitflip``: 1-5 random bit flips anywhere in ``samples.seg``;
* ``overwrite``: a run of random bytes written over part of it;
* ``truncate``: cut at a random byte (a crash while writing, or a short copy);
* ``insert``: junk or a duplicated segment inserted between segments;
* ``forged``: headers with valid CRCs but a ``first_sample`` jump of 1e8, a
  sequence jump, a NaN start time, a sample count that does not fit, an
  out-of-order segment, an AEAD failure (encrypted session);
* ``meta``: a bad ``session.json`` (sfreq 1e-6 or 1e9, a string, 2000 channels,
  not JSON, not UTF-8, missing fields, another format version, 2 MB);
* ``events``: garbage, deeply nested and overflowing lines in ``events.jsonl``.

A case passes when reading either succeeds or raises one of the project's typed
errors (``st_agent.errors.DataError``) as the case expects, takes at most
``MAX_SEC`` and at most ``MAX_MB`` of traced allocations, and -- where the
session can be read -- every segment the damage did not touch reads back
exactly, at its place (``nothing recorded lost``). The note gives the share of
intact data recovered over the cases that can be read.

Run: ``python benchmarks/fuzz_sessions.py [--quick] [--seed 0]``
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import struct
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from st_agent.biometrics.recording import (
    EVENTS_FILE,
    META_FILE,
    SAMPLES_FILE,
    ConsentRecord,
    SessionMeta,
    SessionRecorder,
    create_key_file,
    read_session,
)
from st_agent.errors import DataError
from st_agent.types import SignalChunk

SFREQ = 250.0
N_CH = 16
SECONDS = 30
MAX_SEC = 5.0  # per read (the reader reads a 30 s session in tens of ms)
MAX_MB = 200.0  # traced allocations per read; the clean read needs about 10 MB
NAMES = tuple(f"EEG{i:02d}" for i in range(N_CH))
TYPES = ("eeg",) * N_CH


def _record(folder: Path, key: bytes | None = None) -> np.ndarray:
    """Record SECONDS of a seeded random stream in 0.1 s chunks; return it, float32."""
    data = np.random.default_rng(7).normal(size=(N_CH, int(SECONDS * SFREQ))) * 1e-5
    meta = SessionMeta(SFREQ, NAMES, TYPES, consent=ConsentRecord("fuzz"),
                       subject_id="s00000099")
    with SessionRecorder(folder, meta, key=key) as rec:
        for i in range(0, data.shape[1], 25):
            rec.write_chunk(SignalChunk(data[:, i:i + 25], SFREQ, NAMES, TYPES,
                                        first_sample=i, t0_sec=i / SFREQ))
            if i % 250 == 0:
                rec.write_marker("tick", t_sec=i / SFREQ)
    return data.astype(np.float32).astype(np.float64)


def _layout(buf: bytes) -> list[tuple[int, int, int, int]]:
    """(byte start, byte end, first_sample, n_times) of each segment of a clean file."""
    out, pos = [], 0
    while pos < len(buf):
        first, = struct.unpack_from("<Q", buf, pos + 16)
        n_times, body_len = struct.unpack_from("<II", buf, pos + 36)
        end = pos + 48 + body_len + 4
        out.append((pos, end, first, n_times))
        pos = end
    return out


@dataclass
class Case:
    """One damaged folder: the family, what was done, and what a correct read gives."""

    family: str
    what: str
    damage: Callable[[Path], None]
    touched: Callable[[list[tuple[int, int, int, int]]], set[int]] | None
    expect_error: bool = False
    encrypted: bool = False


def _rewrite(folder: Path, fn: Callable[[bytearray], bytearray]) -> None:
    path = folder / SAMPLES_FILE
    path.write_bytes(bytes(fn(bytearray(path.read_bytes()))))


def _forge(buf: bytearray, at: int, off: int, fmt: str, value: object) -> bytearray:
    buf[at + off:at + off + struct.calcsize(fmt)] = struct.pack(fmt, value)
    buf[at + 44:at + 48] = struct.pack("<I", zlib.crc32(bytes(buf[at:at + 44])))
    return buf


def _overlapping(lo: int, hi: int) -> Callable[[list], set[int]]:
    """Segments whose bytes overlap [lo, hi)."""
    return lambda lay: {k for k, (a, b, _, _) in enumerate(lay) if a < hi and lo < b}


def _byte_cases(rng: np.random.Generator, lay: list, size: int, n: int) -> list[Case]:
    cases = []
    for _ in range(n):
        bits = rng.choice(size * 8, size=int(rng.integers(1, 6)), replace=False)
        bytes_hit = sorted({int(b) // 8 for b in bits})

        def flip(folder: Path, bits=bits) -> None:
            def fn(buf: bytearray) -> bytearray:
                for b in bits:
                    buf[int(b) // 8] ^= 1 << (int(b) % 8)
                return buf
            _rewrite(folder, fn)
        cases.append(Case("bitflip", f"{len(bits)} bit(s)", flip,
                          lambda lay, h=bytes_hit: set().union(
                              *(_overlapping(x, x + 1)(lay) for x in h))))
    for _ in range(max(2, n // 3)):
        lo = int(rng.integers(0, size - 200))
        hi = lo + int(rng.integers(1, 20_000))
        junk = rng.bytes(hi - lo)

        def over(folder: Path, lo=lo, hi=hi, junk=junk) -> None:
            def fn(buf: bytearray) -> bytearray:
                buf[lo:hi] = junk[:len(buf[lo:hi])]
                return buf
            _rewrite(folder, fn)
        cases.append(Case("overwrite", f"bytes {lo}-{hi}", over, _overlapping(lo, hi)))
    for _ in range(max(2, n // 3)):
        cut = int(rng.integers(0, size))
        cases.append(Case("truncate", f"at byte {cut}",
                          lambda f, cut=cut: _rewrite(f, lambda b, c=cut: b[:c]),
                          _overlapping(cut, size + 1)))
    return cases


def _crafted_cases(lay: list) -> list[Case]:
    k = len(lay) // 2
    a, b, _, _ = lay[k]

    def seg(buf: bytearray) -> bytes:
        return bytes(buf[a:b])
    return [
        Case("insert", "100 junk bytes between segments",
             lambda f: _rewrite(f, lambda buf: buf[:b] + bytearray(b"\xa5" * 100) + buf[b:]),
             lambda lay: set()),
        Case("insert", f"segment {k} duplicated after itself",
             lambda f: _rewrite(f, lambda buf: buf[:b] + seg(buf) + buf[b:]), lambda lay: set()),
        Case("insert", "b'STSG' magic inside a body",
             lambda f: _rewrite(f, lambda buf: buf[:a + 200] + b"STSG" + buf[a + 204:]),
             lambda lay: {k}),
        Case("forged", "first_sample jump 1e8 (valid CRCs)",
             lambda f: _rewrite(f, lambda buf: _forge(buf, lay[-1][0], 16, "<Q", 10**8)),
             None, expect_error=True),
        Case("forged", "sequence number 1e12 (valid CRCs)",
             lambda f: _rewrite(f, lambda buf: _forge(buf, a, 8, "<Q", 10**12)),
             None, expect_error=True),
        Case("forged", "first_sample 2**64-1 in segment 0",
             lambda f: _rewrite(f, lambda buf: _forge(buf, 0, 16, "<Q", 2**64 - 1)),
             None, expect_error=True),  # the rest would be out of order: refused
        Case("forged", "t0_sec NaN (valid CRC)",
             lambda f: _rewrite(f, lambda buf: _forge(buf, a, 24, "<d", float("nan"))),
             lambda lay: {k}),
        Case("forged", "n_times 2**32-1 (valid CRC)",
             lambda f: _rewrite(f, lambda buf: _forge(buf, a, 36, "<I", 2**32 - 1)),
             lambda lay: {k}),
        Case("forged", "segment moved back (first_sample of segment 0)",
             lambda f: _rewrite(f, lambda buf: _forge(buf, a, 16, "<Q", 0)), None,
             expect_error=True),
        Case("forged", "samples.seg of random bytes",
             lambda f: (f / SAMPLES_FILE).write_bytes(np.random.default_rng(1).bytes(300_000)),
             lambda lay: set(range(len(lay)))),
        Case("forged", "empty samples.seg",
             lambda f: (f / SAMPLES_FILE).write_bytes(b""), lambda lay: set(range(len(lay)))),
    ]


def _meta_case(what: str, edit: Callable[[dict], object]) -> Case:
    def damage(folder: Path) -> None:
        path = folder / META_FILE
        doc = json.loads(path.read_text())
        out = edit(doc)
        path.write_bytes(out if isinstance(out, bytes) else json.dumps(doc).encode())
    return Case("meta", what, damage, None, expect_error=True)


def _meta_cases() -> list[Case]:
    def set_meta(**kv: object) -> Callable[[dict], None]:
        return lambda doc: doc["meta"].update(kv)
    many = [f"C{i}" for i in range(2000)]
    return [
        _meta_case("sfreq 1e-6", set_meta(sfreq=1e-6)),
        _meta_case("sfreq 1e9", set_meta(sfreq=1e9)),
        _meta_case("sfreq '250'", set_meta(sfreq="250")),
        _meta_case("2000 channels", set_meta(ch_names=many, ch_types=["eeg"] * 2000)),
        _meta_case("segment_samples -1", set_meta(segment_samples=-1)),
        _meta_case("not JSON", lambda doc: b'{"format": "st-agent-rec'),
        _meta_case("not UTF-8", lambda doc: b"\xff\xfe\x00garbage"),
        _meta_case("no meta", lambda doc: doc.pop("meta")),
        _meta_case("format version 99", lambda doc: doc.update(format_version=99)),
        _meta_case("2 MB meta file", lambda doc: b" " * (2 << 20) + b"{}"),
    ]


def _event_cases() -> list[Case]:
    def append(data: bytes) -> Callable[[Path], None]:
        def damage(folder: Path) -> None:
            with open(folder / EVENTS_FILE, "ab") as f:
                f.write(data)
        return damage
    return [
        Case("events", "nested 200k deep", append(b"[" * 200_000 + b"\n"), lambda lay: set()),
        Case("events", "seq 1e999", append(b'{"seq":1e999,"t_sec":1,"kind":"x"}\n'),
             lambda lay: set()),
        Case("events", "binary garbage", append(np.random.default_rng(2).bytes(5000)),
             lambda lay: set()),
    ]


def _aead_case(lay_enc: list) -> Case:
    a, b, _, _ = lay_enc[3]

    def fn(buf: bytearray) -> bytearray:
        buf[a + 100] ^= 1  # ciphertext; body CRC fixed so only authentication can tell
        buf[b - 4:b] = struct.pack("<I", zlib.crc32(bytes(buf[a + 48:b - 4])))
        return buf
    return Case("forged", "AEAD failure in segment 3 (encrypted, CRC fixed)",
                lambda f: _rewrite(f, fn), lambda lay: {3}, encrypted=True)


def _check(case: Case, folder: Path, key: Path | None, data: np.ndarray, lay: list
           ) -> tuple[bool, float, float, int, int, str]:
    """Read the damaged folder: (passed, seconds, MB, intact samples, recovered, error)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    err: BaseException | None = None
    try:
        s = read_session(folder, key)
    except Exception as e:  # any error is judged below: only DataError may pass
        err, s = e, None
    sec = time.perf_counter() - t0
    mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    bounded = sec <= MAX_SEC and mb <= MAX_MB
    if case.expect_error or err is not None:
        ok = case.expect_error and isinstance(err, DataError)
        return ok and bounded, sec, mb, 0, 0, f"{type(err).__name__}: {err}"[:120]
    touched = case.touched(lay)
    intact = [k for k in range(len(lay)) if k not in touched]
    x = s.raw.get_data() if s.raw is not None else np.zeros((N_CH, 0))
    good = 0
    for k in intact:
        _, _, first, n = lay[k]
        col = first - s.first_sample
        if 0 <= col and col + n <= x.shape[1] and np.array_equal(
                x[:, col:col + n], data[:, first:first + n]):
            good += n
    n_intact = sum(lay[k][3] for k in intact)
    return bounded and good == n_intact, sec, mb, n_intact, good, ""


def run(quick: bool = False, seed: int = 0) -> list[dict]:
    """Damage copies of one recorded session and read each back; one row per family.

    Parameters
    ----------
    quick : bool
        Fewer random cases (about 30 folders instead of about 50).
    seed : int
        Seed of the random damage.

    Returns
    -------
    rows : list of dict
        ``family, tried, passed, worst_sec, worst_mb, note`` per family.
    """
    logging.getLogger("st_agent").setLevel(logging.ERROR)  # each case logs its losses
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="fuzz_sessions_") as tmp:
        root = Path(tmp)
        data = _record(root / "clean")
        key = create_key_file(root / "keys" / "k.key")
        _record(root / "clean_enc", key)
        lay = _layout((root / "clean" / SAMPLES_FILE).read_bytes())
        lay_enc = _layout((root / "clean_enc" / SAMPLES_FILE).read_bytes())
        size = (root / "clean" / SAMPLES_FILE).stat().st_size
        read_session(root / "clean")  # import MNE before timing anything
        cases = (_byte_cases(rng, lay, size, 6 if quick else 20) + _crafted_cases(lay)
                 + _meta_cases() + _event_cases() + [_aead_case(lay_enc)])
        stats: dict[str, dict] = {}
        failures: dict[str, list[str]] = {}
        for i, case in enumerate(cases):
            src = root / ("clean_enc" if case.encrypted else "clean")
            folder = root / f"case{i:03d}"
            shutil.copytree(src, folder)
            case.damage(folder)
            ok, sec, mb, n_intact, good, err = _check(
                case, folder, root / "keys" / "k.key" if case.encrypted else None, data,
                lay_enc if case.encrypted else lay)
            shutil.rmtree(folder)
            st = stats.setdefault(case.family, {"tried": 0, "passed": 0, "sec": 0.0,
                                                "mb": 0.0, "intact": 0, "good": 0,
                                                "refused": 0})
            st["tried"] += 1
            st["passed"] += ok
            st["sec"], st["mb"] = max(st["sec"], sec), max(st["mb"], mb)
            st["intact"] += n_intact
            st["good"] += good
            st["refused"] += ok and case.expect_error
            if not ok:
                failures.setdefault(case.family, []).append(
                    f"{case.what}: {err or f'{good}/{n_intact} intact samples'}, "
                    f"{sec:.2f} s, {mb:.0f} MB")
    rows = []
    for fam, st in stats.items():
        share = (f"intact data recovered {100 * st['good'] / st['intact']:.1f} % "
                 f"({st['good']}/{st['intact']} samples)" if st["intact"]
                 else "all refused with a typed error (DataError)")
        if st["intact"] and st["refused"]:
            share += f"; {st['refused']} forged refused with a typed error (DataError)"
        if fam in failures:
            share += "; FAILED: " + " | ".join(failures[fam])
        rows.append({"family": f"sessions/{fam}", "tried": st["tried"], "passed": st["passed"],
                     "worst_sec": st["sec"], "worst_mb": st["mb"], "note": share})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer random cases")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random damage")
    args = ap.parse_args()
    rows = run(quick=args.quick, seed=args.seed)
    print(f"{'family':<20} {'tried':>5} {'passed':>6} {'worst_s':>8} {'worst_MB':>8}  note")
    for r in rows:
        print(f"{r['family']:<20} {r['tried']:>5} {r['passed']:>6} {r['worst_sec']:>8.3f} "
              f"{r['worst_mb']:>8.1f}  {r['note']}")
    tried, passed = sum(r["tried"] for r in rows), sum(r["passed"] for r in rows)
    good = sum(int(r["note"].split("(")[1].split("/")[0]) for r in rows
               if r["note"].startswith("intact"))
    intact = sum(int(r["note"].split("/")[1].split(" ")[0]) for r in rows
                 if r["note"].startswith("intact"))
    print(f"total: {passed}/{tried} corrupted session folders passed; intact data recovered "
          f"{100 * good / max(intact, 1):.1f} % ({good}/{intact} samples)")


if __name__ == "__main__":
    main()
