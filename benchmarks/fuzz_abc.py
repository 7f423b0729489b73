"""Fuzz the ABC entry points with malformed tunes (issue 22, "ABC input").

Strings (10,200 in the full run, seeded):

* ``mutated``: real tunes (music21's bundled ABC corpus, tunes <= 3 kB, and the
  project's test phrases) with 1-6 random edits each: a character inserted (ABC
  punctuation, digits, letters, now and then any Unicode code point), deleted,
  replaced, a span duplicated up to 50 times, lines swapped or cut, a random field
  line inserted;
* ``random bytes``: 1-3,000 random bytes decoded as Latin-1 or as UTF-8 with
  ``surrogateescape`` (lone surrogates), alone or after a valid header;
* ``surrogates``: a real tune with lone surrogates (``\\ud800``-``\\udfff``) in the
  title, the body or a comment;
* ``huge``: repeats of tune slices from 20 kB to 700 kB, the issue's reproducers
  (``'('*50000 + 'CDE' + ')'*50000``, ``'CDEF|'*40000``, a 650 kB repeat), and
  near-limit (60-65 kB) runs of ``(``, ``[``, ``{``, ``(3``, ``|:CDEF:|``, chords;
* ``directives``: ``%%abc-include`` / ``%%MIDI ptstress`` / ``I:MIDI=ptstress`` /
  ``[I:MIDI=ptstress ...]`` naming ``/dev/urandom``, ``/etc/passwd``, a FIFO, ... in
  every spelling abc2midi reads, and other ``%%MIDI`` directives with random values;
* ``fields``: ``M:``, ``L:``, ``Q:``, ``K:``, ``P:``, ``V:`` header and inline
  fields with huge, zero, negative and malformed values.

Each string goes to :func:`~st_agent.music.abc.check_abc` and, when that says ok, to
:func:`~st_agent.music.abc.abc_to_midi`. A string **passes** when both return or
raise :class:`~st_agent.music.abc.AbcError` (a :class:`~st_agent.errors.DataError`),
each call takes at most ``MAX_SEC`` (2 s) and the peak memory of the process during
the call (``VmHWM`` after a reset through ``/proc/self/clear_refs``) and of every
``abc2midi`` child (``RUSAGE_CHILDREN``) stays under ``MAX_MB`` (500 MB). The
``abc2midi`` calls are timed on their own (wrapping the module's one-call helper):
the note gives how many strings the project's own screening decided without
``abc2midi``.

Run: ``python benchmarks/fuzz_abc.py [--quick] [--seed 0]`` (each family in its own
worker process, so the memory figures of one do not leak into the next).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MAX_SEC = 2.0
MAX_MB = 500.0
COUNTS = {"mutated": 6000, "random bytes": 1000, "surrogates": 500, "huge": 300,
          "directives": 1400, "fields": 1000}
QUICK_DIV = 20

PROJECT_PHRASES = [
    "X:1\nM:4/4\nL:1/8\nQ:1/4=100\nK:C\nCDEF GABc|cBAG FEDC|E2G2 c4|C8|]\n",
    "X:7\nT:Known\nM:4/4\nL:1/8\nQ:1/4=100\nK:G\n|:\"G\"GABc dedB|G4 D4:|A4- A2 B2|"
    "[GBd]4 (3ABc d2|]\n",
    "X:1\nM:6/8\nL:1/8\nQ:3/8=80\nK:Ador\nABA cBA|ded cBA|GAB AGE|A3 A2z|]\n",
    "X:1\nM:3/4\nL:1/8\nQ:1/4=90\nK:Am\nA2 c2 e2|d2 B2 G2|A4 E2|A6|]\n",
    "X:1\nM:4/4\nL:1/8\nQ:1/4=120\nK:Dm\nV:1\nd2f2 a2f2|e2g2 c'2g2|\nV:2\nD4 A,4|C4 G,4|\n",
]
_PUNCT = list("|:[](){}<>-_=^,'/\\\"!+.%&*~#$@ \t\n0123456789ABCDEFGabcdefgzxyKLMQTVWwPX")
_FIELDS = "MLQKPVIWw"


# ---------------------------------------------------------------------- seeds
def seed_tunes(limit: int = 3000) -> list[str]:
    """Real tunes: music21's ABC corpus (<= ``limit`` characters) + project phrases."""
    import music21

    root = Path(music21.__file__).parent / "corpus"
    tunes: list[str] = []
    for f in sorted(glob.glob(str(root / "**" / "*.abc"), recursive=True)):
        text = Path(f).read_text(encoding="utf-8", errors="replace")
        tunes += [p.strip() + "\n" for p in re.split(r"\n(?=X:)", text)
                  if p.startswith("X:") and len(p) <= limit]
    return tunes + PROJECT_PHRASES


def _mutate(t: str, rng: np.random.Generator) -> str:
    for _ in range(int(rng.integers(1, 7))):
        n = len(t)
        i = int(rng.integers(0, n + 1))
        op = int(rng.integers(0, 8))
        if op == 0:
            c = (chr(int(rng.integers(0x80, 0x10FFFF))) if rng.random() < 0.1
                 else _PUNCT[int(rng.integers(len(_PUNCT)))])
            t = t[:i] + c + t[i:]
        elif op == 1:
            t = t[:i] + t[i + int(rng.integers(1, 20)):]
        elif op == 2 and n:
            t = t[:i] + _PUNCT[int(rng.integers(len(_PUNCT)))] + t[i + 1:]
        elif op == 3:
            span = t[i:i + int(rng.integers(1, 40))]
            t = t[:i] + span * int(rng.integers(2, 51)) + t[i:]
        elif op == 4:
            lines = t.split("\n")
            a, b = (int(x) for x in rng.integers(0, len(lines), 2))
            lines[a], lines[b] = lines[b], lines[a]
            t = "\n".join(lines)
        elif op == 5:
            t = t[:i]
        elif op == 6:
            lines = t.split("\n")
            k = int(rng.integers(0, len(lines) + 1))
            value = _random_value(rng)
            lines.insert(k, f"{_FIELDS[int(rng.integers(len(_FIELDS)))]}:{value}")
            t = "\n".join(lines)
        else:
            t = t[:i] + "\n" + t[i:]
    return t


def _random_value(rng: np.random.Generator) -> str:
    pick = int(rng.integers(0, 9))
    big = str(int(rng.integers(0, 10))) * int(rng.integers(1, 40))
    return [big, f"1/{big}", f"{big}/4", f"1/4={big}", "0", "-3", "1/0", "none",
            f"{int(rng.integers(-5, 200))}/{int(rng.integers(-1, 70))}"][pick]


def gen_mutated(rng: np.random.Generator, n: int, seeds: list[str]) -> list[str]:
    return [_mutate(seeds[int(rng.integers(len(seeds)))], rng) for _ in range(n)]


def gen_random_bytes(rng: np.random.Generator, n: int, seeds: list[str]) -> list[str]:
    out = []
    for _ in range(n):
        raw = rng.bytes(int(rng.integers(1, 3001)))
        text = raw.decode("latin-1") if rng.random() < 0.5 else raw.decode(
            "utf-8", errors="surrogateescape")
        out.append(("X:1\nM:4/4\nL:1/8\nK:C\n" + text) if rng.random() < 0.5 else text)
    return out


def gen_surrogates(rng: np.random.Generator, n: int, seeds: list[str]) -> list[str]:
    out = []
    for _ in range(n):
        t = seeds[int(rng.integers(len(seeds)))]
        s = chr(int(rng.integers(0xD800, 0xE000)))
        where = int(rng.integers(0, 3))
        if where == 0:
            t = t.replace("\n", f"\nT:{s}\n", 1)
        elif where == 1:
            i = int(rng.integers(len(t) // 2, len(t)))
            t = t[:i] + s + t[i:]
        else:
            t = t + f"% {s}\n"
        out.append(t)
    return out


def gen_huge(rng: np.random.Generator, n: int, seeds: list[str]) -> list[str]:
    head = "X:1\nM:4/4\nL:1/8\nK:C\n"
    fixed = ["(" * 50000 + "CDE" + ")" * 50000, "CDEF|" * 40000,
             head + "CDEF GABc|" * 65000]
    units = ["(", "[", "{", "(3", "|:CDEF:|", "[CEG]", "C-", '"', "!", "CDEF|\n", "V:1\nC|\n"]
    out = list(fixed)
    while len(out) < n:
        if rng.random() < 0.5:
            u = units[int(rng.integers(len(units)))]
            size = int(rng.integers(60_000, 65_500))
            out.append(head + u * ((size - len(head)) // len(u)) + "\n")
        else:
            t = seeds[int(rng.integers(len(seeds)))]
            body = t[int(rng.integers(0, max(1, len(t) // 2))):]
            size = int(rng.integers(20_000, 700_000))
            out.append(t + body * (size // max(1, len(body))))
    return out[:n]


def gen_directives(rng: np.random.Generator, n: int, seeds: list[str]) -> list[str]:
    fifo = Path(tempfile.gettempdir()) / f"fuzz_abc_fifo_{os.getpid()}"
    targets = ["/dev/urandom", "/etc/passwd", "../../../etc/shadow", str(fifo), "/dev/zero",
               "x.abc"]
    spell = ["%%abc-include {f}", " %%abc-include {f}", "%%abc-include\t{f}",
             "%%MIDI ptstress {f}", "%%MIDI  ptstress {f}", "I:MIDI=ptstress {f}",
             "I:MIDI ptstress {f}", "I: MIDI = ptstress {f}", "[I:MIDI=ptstress {f}] C|"]
    other = ["%%MIDI program {v}", "%%MIDI transpose {v}", "%%MIDI chordprog {v}",
             "%%MIDI beat {v} {v} {v} {v}", "%%MIDI gchord {g}", "%%MIDI drum {g} {v} {v}",
             "%%MIDI chordname m {v} {v} {v}", "%%MIDI ratio {v} {v}", "%%MIDI grace {v}/{v}",
             "%%MIDI stressmodel {v}", "%%abc-version {v}", "%%MIDI bassvol {v}",
             "%%MIDI channel {v}", "%%MIDI deltaloudness {v}", "%%MIDI temperamentlinear {v} {v}"]
    out = []
    for k in range(n):
        t = seeds[int(rng.integers(len(seeds)))].split("\n")
        if k % 2 == 0:
            line = spell[int(rng.integers(len(spell)))].format(
                f=targets[int(rng.integers(len(targets)))])
        else:
            line = other[int(rng.integers(len(other)))].format(
                v=_random_value(rng), g="".join(rng.choice(list("fzcbghij"), 8)))
        t.insert(int(rng.integers(1, len(t) + 1)), line)
        out.append("\n".join(t))
    return out


def gen_fields(rng: np.random.Generator, n: int, seeds: list[str]) -> list[str]:
    out = []
    for _ in range(n):
        name = "MLQKPV"[int(rng.integers(6))]
        value = _random_value(rng)
        if name == "P":
            value = "(" * int(rng.integers(1, 12)) + "AB" + ")9" * int(rng.integers(1, 12))
        if rng.random() < 0.5:
            out.append(f"X:1\n{name}:{value}\nM:4/4\nL:1/8\nK:C\nCDEF GABc|\n")
        else:
            out.append(f"X:1\nM:4/4\nL:1/8\nK:C\nCDEF|[{name}:{value}]GABc|\n")
    return out


GENERATORS: dict[str, Callable[[np.random.Generator, int, list[str]], list[str]]] = {
    "mutated": gen_mutated, "random bytes": gen_random_bytes, "surrogates": gen_surrogates,
    "huge": gen_huge, "directives": gen_directives, "fields": gen_fields,
}


# ---------------------------------------------------------------------- worker
def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(family: str, n: int, seed: int) -> dict:
    """Run one family in this process and return its row."""
    from st_agent.music import abc as abc_mod
    from st_agent.music.abc import AbcError, abc_to_midi, check_abc

    rng = np.random.default_rng([seed, list(GENERATORS).index(family)])
    cases = GENERATORS[family](rng, n, seed_tunes())
    fifo = Path(tempfile.gettempdir()) / f"fuzz_abc_fifo_{os.getpid()}"
    if family == "directives" and not fifo.exists():
        os.mkfifo(fifo)  # abc2midi would block on it forever if it opened it
    calls: list[float] = []
    real = abc_mod._run_one

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            calls.append(time.perf_counter() - t0)

    abc_mod._run_one = timed
    passed = ok = screened = 0
    worst_sec = worst_mb = 0.0
    failures: list[str] = []
    try:
        for text in cases:
            good = True
            before = len(calls)
            for fn in (check_abc, abc_to_midi):
                _reset_peak()
                t0 = time.perf_counter()
                try:
                    result = fn(text)
                except AbcError:
                    result = None
                except Exception as e:  # counting untyped errors is the point
                    good = False
                    failures.append(f"{fn.__name__}: {type(e).__name__}: {e}"[:200])
                    result = None
                dt = time.perf_counter() - t0
                worst_sec, worst_mb = max(worst_sec, dt), max(worst_mb, _peak_mb())
                good = good and dt <= MAX_SEC
                if fn is check_abc:
                    screened += len(calls) == before
                    if result is None or not result.ok:
                        break
                    ok += 1
            passed += good
    finally:
        abc_mod._run_one = real
        fifo.unlink(missing_ok=True)
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    worst_mb = max(worst_mb, child_mb)
    if worst_mb > MAX_MB:
        passed = 0  # a bound over the whole family: no string can be called passed
    arr = np.array(calls) if calls else np.zeros(1)
    note = (f"screened without abc2midi {screened}/{len(cases)} "
            f"({100 * screened / max(1, len(cases)):.0f} %); abc2midi calls {len(calls)} "
            f"(mean {1000 * arr.mean():.1f} ms, p99 {1000 * np.quantile(arr, 0.99):.0f} ms, "
            f"worst {arr.max():.2f} s, child peak {child_mb:.0f} MB); ok {ok}")
    if failures:
        note += f"; first failure: {failures[0]}"
    return {"family": f"abc: {family}", "tried": len(cases), "passed": passed,
            "worst_sec": worst_sec, "worst_mb": worst_mb, "note": note}


def run(quick: bool = False, seed: int = 0) -> list[dict]:
    """Every family in its own worker process; rows as the fuzz convention says."""
    rows = []
    for family, n in COUNTS.items():
        n = max(5, n // QUICK_DIV) if quick else n
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", family, "--n", str(n), "--seed", str(seed)],
            capture_output=True, text=True, check=False, cwd=REPO)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            rows.append({"family": f"abc: {family}", "tried": n, "passed": 0,
                         "worst_sec": float("nan"), "worst_mb": float("nan"),
                         "note": f"worker failed ({proc.returncode}): {proc.stderr[-300:]}"})
        else:
            rows.append(json.loads(lines[-1]))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", choices=list(GENERATORS), help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.seed)), flush=True)
        return 0
    rows = run(quick=args.quick, seed=args.seed)
    head = f"{'family':<20} {'tried':>6} {'passed':>6} {'worst s':>8} {'worst MB':>9}  note"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['family']:<20} {r['tried']:>6} {r['passed']:>6} {r['worst_sec']:>8.3f} "
              f"{r['worst_mb']:>9.0f}  {r['note']}")
    tried = sum(r["tried"] for r in rows)
    passed = sum(r["passed"] for r in rows)
    print(f"total: {tried} tried, {passed} passed")
    return 0 if tried == passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
