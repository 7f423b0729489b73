"""Memory of a long session: RSS every 10 simulated minutes of an accelerated session.

Runs the same loop as ``st-agent session --board virtual --accelerated --minutes 60``
(in process, so its RSS can be read while it runs) and prints:

* the resident set size (``VmRSS`` of ``/proc/self/status``, MB) at each
  ``--every`` simulated minutes of music;
* the growth per simulated hour: least-squares slope of RSS against simulated
  time from the first sample on, with its 95 % CI (the first minutes load the
  composer and the estimator, they are not growth), and over the second half of the
  run alone (caches that are bounded fill during the first hours);
* the peak RSS of the whole run (``ru_maxrss``), which includes writing the
  session's files at the end (score, summary, report).

With ``--trace`` Python's own allocations are traced (``tracemalloc``, 8 frames; the
session runs several times slower) and the allocation sites that grew most between the
first and the last sample are printed: growth there is Python objects that pile up;
growth of RSS beyond it is below Python (the allocator, torch, FluidSynth). The RSS
figures of a traced run include tracemalloc's own records: read only its Python growth.

With ``--maps`` each sample also splits the RSS by where it lives (``/proc/self/smaps``:
glibc's main heap, other anonymous mappings such as thread arenas and large ``mmap``
blocks, shared libraries, other mapped files), reads glibc's own count of bytes in use
and free (``mallinfo2``), pymalloc's arenas and the interpreter's allocated blocks, and
the number of threads, and prints the growth per simulated hour of each: the part that
grows names the layer that holds the memory.

With ``--vmas`` the anonymous mappings themselves are compared between the first and
the last sample of the loop (``/proc/self/smaps``, matched by start address): the ones
whose resident size grew most, with their size, transparent huge pages and what they
probably are (a glibc thread arena is a 64 MiB-aligned mapping of at most 64 MiB), and
glibc's own account of each arena (``malloc_info``): which mapping holds the growth.

``--glibc-mmap`` keeps glibc's moving mmap threshold, which a session otherwise fixes
(``st_agent.live.composing.fix_mmap_threshold``): run it beside a plain run to see what
the fix changes.

With ``--trim`` each sample also asks glibc to hand freed memory back to the OS
(``malloc_trim(0)``) and prints the RSS after it: growth that disappears there
is freed memory kept by the allocator (fragmentation), not objects that pile up.

With ``--types`` each sample also counts the objects the garbage collector tracks, by
type (``gc.get_objects()``; containers and instances, not str, float or array data),
and the types whose count grew most between the first and the last sample of the loop
(a dict named by its first keys) are printed with their growth per simulated hour, and
the lists, dicts, sets and deques that grew most in place, with the attribute that
holds them: what a session keeps that it should not is named by its type or its owner;
and the entries of the bar grammar's caches (key tables, masks), which gc cannot see.

Run: ``nice python benchmarks/bench_session_rss.py [--minutes 60] [--every 10] [--trim]
[--sound session|plain] [--trace] [--maps] [--vmas] [--types] [--glibc-mmap]``
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from collections import Counter, deque
from pathlib import Path

import numpy as np
from scipy import stats

from st_agent.live.session import SessionConfig, SessionStatus, run_session
from st_agent.policies.controllers import make_controller


def _status_field(name: str) -> int:
    """The first number of ``name:`` in ``/proc/self/status`` (Linux only)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {name} in /proc/self/status (Linux only)")


def rss_mb() -> float:
    """Resident set size of this process now, MB (``VmRSS``)."""
    return _status_field("VmRSS") / 1024.0


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc >= 2.33), summed over every arena."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def memory_parts(libc) -> dict[str, float]:
    """Where this process's RSS lives now, MB, and what glibc's allocator reports.

    ``heap``: the ``[heap]`` mapping (glibc's main arena, grown with ``brk``);
    ``anon``: other anonymous mappings (thread arenas, ``mmap``-ed blocks, pymalloc's
    arenas, thread stacks); ``libs``: shared objects; ``files``: other mapped files;
    ``malloc_used`` / ``malloc_free``: bytes glibc counts as allocated / free in its
    arenas (``uordblks`` / ``fordblks``) plus ``mmap``-ed chunks (``hblkhd``) in use;
    ``pymalloc``: the 1 MiB arenas of Python's small-object allocator now held
    (``sys._debugmallocstats``; an arena goes back only when all its objects are gone);
    ``py_kblocks``: thousands of memory blocks the interpreter has allocated now
    (``sys.getallocatedblocks``: flat while ``pymalloc`` grows is fragmentation, not
    objects that pile up);
    ``threads``: the process's thread count; ``python``: what ``tracemalloc`` traces
    (Python's own allocations), when it runs.
    """
    parts = {"heap": 0.0, "anon": 0.0, "libs": 0.0, "files": 0.0}
    kind = "anon"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and len(head) >= 5:  # a mapping's header line
            path = head[5] if len(head) > 5 else ""
            kind = ("heap" if path == "[heap]" else
                    "anon" if not path or path.startswith("[") else
                    "libs" if ".so" in Path(path).name else "files")
        elif head[0] == "Rss:":
            parts[kind] += int(head[1]) / 1024.0
    if libc is not None and hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        parts["malloc_used"] = (info.uordblks + info.hblkhd) / 2**20
        parts["malloc_free"] = info.fordblks / 2**20
    parts["pymalloc"] = _pymalloc_arena_mb()
    parts["py_kblocks"] = sys.getallocatedblocks() / 1e3
    parts["threads"] = float(_status_field("Threads"))
    if tracemalloc.is_tracing():
        parts["python"] = tracemalloc.get_traced_memory()[0] / 2**20
    return parts


def anon_vmas() -> dict[int, dict[str, int]]:
    """The anonymous mappings now, by start address: ``size``, ``rss``, ``huge``
    (``AnonHugePages``) and ``dirty`` (``Private_Dirty``), kB; ``end``."""
    vmas: dict[int, dict[str, int]] = {}
    cur: dict[str, int] | None = None
    fields = {"Size:": "size", "Rss:": "rss", "AnonHugePages:": "huge",
              "Private_Dirty:": "dirty"}
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and len(head) >= 5:
            path = head[5] if len(head) > 5 else ""
            cur = None
            if not path or path in ("[heap]", "[anon]") or path.startswith("[anon:"):
                start, end = (int(x, 16) for x in head[0].split("-"))
                cur = vmas[start] = {"end": end, "perms": head[1] != "---p",
                                     "heap": path == "[heap]"}
        elif cur is not None and head[0] in fields:
            cur[fields[head[0]]] = int(head[1])
    return vmas


def _vma_kind(start: int, v: dict[str, int]) -> str:
    """A guess at what an anonymous mapping holds."""
    if v.get("heap"):
        return "glibc main arena ([heap])"
    size = v["end"] - start
    if start % (64 << 20) == 0 and size <= 64 << 20:
        return "glibc thread arena (64 MiB-aligned)"
    if size == 1 << 20:
        return "1 MiB (a pymalloc arena?)"
    if 8 << 20 <= size <= (8 << 20) + 8192:
        return "8 MiB (a thread stack?)"
    return ""


def _print_vma_growth(first: dict[int, dict[str, int]], last: dict[int, dict[str, int]],
                      hours: float, top: int = 12) -> None:
    """The anonymous mappings whose resident size grew most between two samples."""
    new = [s for s in last if s not in first]
    gone = [s for s in first if s not in last]
    d_rss = sum(v["rss"] for v in last.values()) - sum(v["rss"] for v in first.values())
    d_huge = sum(v.get("huge", 0) for v in last.values()) - \
        sum(v.get("huge", 0) for v in first.values())
    print(f"anonymous mappings: {len(first)} → {len(last)} ({len(new)} new, {len(gone)} gone); "
          f"RSS {d_rss / 1024 / hours:+.2f} MB per hour, of it transparent huge pages "
          f"{d_huge / 1024 / hours:+.2f}; in new mappings "
          f"{sum(last[s]['rss'] for s in new) / 1024:.1f} MB, in gone ones "
          f"{sum(first[s]['rss'] for s in gone) / 1024:.1f} MB")
    grown = sorted(((v["rss"] - first[s]["rss"], s) for s, v in last.items() if s in first),
                   reverse=True)[:top]
    print("  the mappings present at both samples whose RSS grew most:")
    for kb, s in grown:
        v, v0 = last[s], first[s]
        print(f"  {kb / 1024 / hours:+7.2f} MB/h  {s:#014x} size {(v['end'] - s) >> 10:>8} kB  "
              f"rss {v0['rss']:>7} → {v['rss']:>7} kB  huge {v0.get('huge', 0)} → "
              f"{v.get('huge', 0)} kB  dirty {v0.get('dirty', 0)} → {v.get('dirty', 0)} kB  "
              f"{_vma_kind(s, v)}")


def malloc_arenas(libc) -> list[dict[str, int]]:
    """glibc's ``malloc_info`` per arena: bytes free in its bins (``free``), bytes it
    holds from the system now (``current``) and at most (``max``); the last entry is the
    process total (``mmap``: bytes in chunks with their own mapping)."""
    import xml.etree.ElementTree as ET

    with tempfile.NamedTemporaryFile(suffix=".xml") as tmp:
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        fp = libc.fopen(tmp.name.encode(), b"w")
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.malloc_info(0, fp)
        libc.fclose.argtypes = [ctypes.c_void_p]
        libc.fclose(fp)
        root = ET.parse(tmp.name).getroot()
    out = []
    for heap in [*root.findall("heap"), root]:
        row = {"nr": int(heap.get("nr", -1))}
        for el in heap.findall("total"):
            row[el.get("type")] = int(el.get("size", 0))
        row["free"] = sum(int(el.get("size", 0)) for el in heap.findall("total")
                          if el.get("type") in ("fast", "rest"))
        for el in heap.findall("system"):
            row[el.get("type")] = int(el.get("size", 0))
        out.append(row)
    return out


def _print_arena_growth(first: list[dict[str, int]], last: list[dict[str, int]],
                        hours: float) -> None:
    print("glibc arenas (malloc_info): MB held from the system now and free in bins, "
          "first → last sample (-1: all arenas)")
    before = {a["nr"]: a for a in first}
    for a1 in last:
        a0 = before.get(a1["nr"], {"free": 0})
        cur0, cur1 = a0.get("current", 0) / 2**20, a1.get("current", 0) / 2**20
        extra = (f"  mmap-ed chunks {a0.get('mmap', 0) / 2**20:.1f} → "
                 f"{a1.get('mmap', 0) / 2**20:.1f}" if a1["nr"] < 0 else "")
        print(f"  arena {a1['nr']:>3} current {cur0:7.1f} → {cur1:7.1f} "
              f"({(cur1 - cur0) / hours:+.2f}/h)  free {a0['free'] / 2**20:6.1f} → "
              f"{a1['free'] / 2**20:6.1f}{extra}")


def _pymalloc_arena_mb() -> float:
    """MB in the arenas pymalloc holds now (its statistics go to the C ``stderr``)."""
    with tempfile.TemporaryFile(mode="w+") as out:
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        for line in out:
            if "bytes/arena" in line:  # "N arenas * 1048576 bytes/arena = X"
                return int(line.rsplit("=", 1)[1].replace(",", "")) / 2**20
    return float("nan")


def _slope_ci(t_min: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Least-squares slope per simulated hour and the half-width of its 95 % CI."""
    fit = stats.linregress(t_min / 60.0, values)
    if len(t_min) < 3:
        return float(fit.slope), float("nan")
    return float(fit.slope), float(stats.t.ppf(0.975, len(t_min) - 2) * fit.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0, help="minutes of music")
    ap.add_argument("--every", type=float, default=10.0, help="simulated minutes per sample")
    ap.add_argument("--calibration-sec", type=float, default=30.0)
    ap.add_argument("--no-report", action="store_true", help="skip report.html")
    ap.add_argument("--sound", default="session", choices=["session", "plain"],
                    help="the session's sound (as st-agent session --sound)")
    ap.add_argument("--trim", action="store_true",
                    help="also print RSS after glibc malloc_trim(0) at each sample")
    ap.add_argument("--maps", action="store_true",
                    help="split RSS by mapping and read glibc's counts at each sample")
    ap.add_argument("--vmas", action="store_true",
                    help="compare the anonymous mappings and glibc's arenas between the "
                         "first and the last sample; print the ones that grew")
    ap.add_argument("--types", action="store_true",
                    help="count gc-tracked objects by type; print the types that grew most")
    ap.add_argument("--trace", action="store_true",
                    help="trace Python allocations; print the sites that grew most")
    ap.add_argument("--glibc-mmap", action="store_true",
                    help="keep glibc's moving mmap threshold (skip the session's "
                         "fix_mmap_threshold), to measure what fixing it changes")
    args = ap.parse_args()
    if args.glibc_mmap:
        import st_agent.live.composing as composing

        composing.fix_mmap_threshold = lambda n_bytes=0: False
    snapshots: list = []
    if args.trace:
        tracemalloc.start(8)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    tmp = Path(tempfile.mkdtemp(prefix="bench_rss_"))
    cfg = SessionConfig(board="virtual", accelerated=True, minutes=args.minutes,
                        calibration_sec=args.calibration_sec, record=tmp, name="rss",
                        status_sec=30.0, report=not args.no_report, sound=args.sound)
    controller, name = make_controller(cfg.policy, cfg.bounds(), cfg.target, None, cfg.seed)
    libc = (ctypes.CDLL(ctypes.util.find_library("c"))
            if args.trim or args.maps or args.vmas else None)
    vmas: list[tuple[float, dict, list]] = []
    parts: list[tuple[float, dict[str, float]]] = []
    counts: list[tuple[float, Counter]] = []
    sizes: list[dict] = []
    caches: list[tuple[float, dict[str, int]]] = []
    samples: list[tuple[float, float]] = []
    trimmed: list[tuple[float, float]] = []
    music0: list[float] = []
    wall0 = time.perf_counter()

    def on_status(s: SessionStatus) -> None:
        if s.phase != "music":
            return
        if not music0:
            music0.append(s.t_sec)
        t_music = (s.t_sec - music0[0]) / 60.0
        if not samples or t_music >= samples[-1][0] + args.every - 1e-9:
            samples.append((t_music, rss_mb()))
            after = ""
            if args.maps:
                parts.append((t_music, memory_parts(libc)))
                after += "  " + " ".join(f"{k} {v:.1f}" for k, v in parts[-1][1].items())
            if args.types and t_music > 0:
                counts[min(len(counts), 1):] = [(t_music, type_counts())]  # first, latest
                sizes[min(len(sizes), 1):] = [container_sizes()]
                caches[min(len(caches), 1):] = [(t_music, grammar_caches())]
            if args.trim:
                libc.malloc_trim(0)
                trimmed.append((t_music, rss_mb()))
                after += f"  after malloc_trim {trimmed[-1][1]:8.1f} MB"
            print(f"  {t_music:6.1f} simulated min  RSS {samples[-1][1]:8.1f} MB{after}  "
                  f"(wall {time.perf_counter() - wall0:6.0f} s)", flush=True)
            if args.vmas and t_music > 0:
                vmas[min(len(vmas), 1):] = [(t_music, anon_vmas(), malloc_arenas(libc))]
            if args.trace and t_music > 0:  # the first and the latest sample of the loop
                snapshots[1:] = [tracemalloc.take_snapshot()]

    print(f"session: virtual board, accelerated, {args.minutes:g} min of music, {name}, "
          f"sound {args.sound}")
    res = run_session(cfg, controller, name, on_status)
    samples.append(((res.summary["music_sec"]) / 60.0, rss_mb()))
    print(f"  {samples[-1][0]:6.1f} simulated min  RSS {samples[-1][1]:8.1f} MB  "
          "(after the session's files were written)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    for label, series in (("RSS", samples[:-1]), ("RSS after malloc_trim", trimmed)):
        loop = [(t, r) for t, r in series if t > 0]
        if len(loop) >= 2:
            t, r = np.array(loop).T
            slope, half = _slope_ci(t, r)
            ci = f", 95 % CI {slope - half:+.1f} … {slope + half:+.1f}" if len(t) >= 3 else ""
            print(f"{label} growth during the loop: {slope:+.1f} MB per simulated hour"
                  f"{ci} (fit over {t[0]:.0f}-{t[-1]:.0f} min, {len(t)} samples; the "
                  "sawtooth of phrase audio makes the samples correlated: read the CI as "
                  "a lower bound on the uncertainty)")
            late = t >= t[-1] / 2
            if label == "RSS" and late.sum() >= 3:  # bounded caches fill early on
                slope, half = _slope_ci(t[late], r[late])
                print(f"{label} growth over the second half ({t[late][0]:.0f}-{t[-1]:.0f} min, "
                      f"{int(late.sum())} samples): {slope:+.1f} MB per simulated hour, "
                      f"95 % CI {slope - half:+.1f} … {slope + half:+.1f}")
    loop_parts = [(t, p) for t, p in parts if t > 0]
    if len(loop_parts) >= 3:
        t = np.array([t for t, _ in loop_parts])
        print("growth per simulated hour by part (95 % CI half-width):")
        for key in loop_parts[0][1]:
            slope, half = _slope_ci(t, np.array([p[key] for _, p in loop_parts]))
            print(f"  {key:12s} {slope:+8.2f} ± {half:.2f} per hour  "
                  f"({loop_parts[0][1][key]:.1f} → {loop_parts[-1][1][key]:.1f})")
    wav = res.folder / "session.wav"
    print(f"peak RSS of the run: {peak:.0f} MB; session.wav "
          f"{wav.stat().st_size / 1e6 if wav.is_file() else 0:.0f} MB; "
          f"{res.summary['phrases']} phrases; wall {time.perf_counter() - wall0:.0f} s")
    if len(counts) == 2:
        _print_type_growth(*counts)
        _print_container_growth(*sizes, (counts[1][0] - counts[0][0]) / 60.0)
        _print_cache_growth(*caches)
    if len(vmas) == 2:
        hours = max(vmas[1][0] - vmas[0][0], 1e-9) / 60.0
        print(f"from {vmas[0][0]:.0f} to {vmas[1][0]:.0f} simulated min:")
        _print_vma_growth(vmas[0][1], vmas[1][1], hours)
        _print_arena_growth(vmas[0][2], vmas[1][2], hours)
    if len(snapshots) == 2:
        _print_growth(*snapshots, samples[1][0], samples[-2][0])
    print(f"artifacts in {tmp}")


def type_counts() -> Counter:
    """Number of gc-tracked objects of each type now (``module.qualname``; a dict also
    by its first keys, which name what it records)."""
    def name(o: object) -> str:
        kind = f"{type(o).__module__}.{type(o).__qualname__}"
        if type(o) is dict:
            kind += "[" + ", ".join(map(str, list(o)[:4])) + "]"
        return kind

    return Counter(name(o) for o in gc.get_objects())


def grammar_caches() -> dict[str, int]:
    """Entries of the bar grammars' caches now, summed over grammars
    (:meth:`BarGrammar.cache_sizes`). Their masks are arrays under keys of plain
    values, which the garbage collector does not track, so :func:`type_counts` and
    :func:`container_sizes` cannot see them grow."""
    from st_agent.music.bar_grammar import BarGrammar

    total: Counter = Counter()
    for o in gc.get_objects():
        if type(o) is BarGrammar:  # isinstance wakes lazy torch modules (warnings)
            total.update(o.cache_sizes())
    return dict(total)


def _print_cache_growth(first: tuple[float, dict[str, int]],
                        last: tuple[float, dict[str, int]]) -> None:
    (t0, c0), (t1, c1) = first, last
    hours = max(t1 - t0, 1e-9) / 60.0
    print("bar grammar caches (bounded: MAX_LEARNED_TABLES, MAX_CACHED_STATES):")
    for k in c1:
        print(f"  {k:10s} {(c1[k] - c0.get(k, 0)) / hours:+8.0f} per hour  "
              f"({c0.get(k, 0)} → {c1[k]})")


def container_sizes() -> dict[int, tuple[int, type]]:
    """``id -> (len, type)`` of every gc-tracked list, dict, set and deque now (a
    container that grows in place adds no object to :func:`type_counts`). Only ids are
    kept, so the containers can still be freed; an id reused by a new container of the
    same type can alias, rarely."""
    kinds = (list, dict, set, deque)
    return {id(o): (len(o), type(o)) for o in gc.get_objects() if type(o) in kinds}


def _owner(o: object) -> str:
    """Where a container lives: the attribute of the object that holds it."""
    for ref in gc.get_referrers(o):
        if type(ref) is dict:
            for owner in gc.get_referrers(ref):
                if getattr(owner, "__dict__", None) is ref:
                    name = next((k for k, v in ref.items() if v is o), "?")
                    return f"{type(owner).__module__}.{type(owner).__qualname__}.{name}"
    return "?"


def _print_container_growth(first: dict, last: dict, hours: float, top: int = 10) -> None:
    """The containers alive at both samples (same id and type) whose length grew most."""
    grown = sorted(((last[i][0] - n, i) for i, (n, kind) in first.items()
                    if i in last and last[i][1] is kind), reverse=True)[:top]
    wanted = {i for _, i in grown}
    alive = {id(o): o for o in gc.get_objects() if id(o) in wanted}
    print("containers that grew most in place (per simulated hour):")
    for n, i in grown:
        if n <= 0 or i not in alive:
            continue
        print(f"  {n / hours:+10.0f} entries per hour  (len {last[i][0]})  "
              f"{last[i][1].__name__} {_owner(alive[i])}")


def _print_type_growth(first: tuple[float, Counter], last: tuple[float, Counter],
                       top: int = 15) -> None:
    """The types whose number of gc-tracked objects grew most, per simulated hour."""
    (t0, c0), (t1, c1) = first, last
    hours = max(t1 - t0, 1e-9) / 60.0
    grown = sorted(((c1[k] - c0[k], k) for k in c1), reverse=True)[:top]
    print(f"gc-tracked objects from {t0:.0f} to {t1:.0f} simulated min: "
          f"{sum(c1.values()) - sum(c0.values()):+d} in all; the {top} types that grew most:")
    for n, k in grown:
        print(f"  {n / hours:+10.0f} per hour  ({c0[k]} → {c1[k]})  {k}")


def _print_growth(first, last, t_first: float, t_last: float, top: int = 15) -> None:
    """The allocation sites (tracebacks) whose traced Python memory grew most.

    Sites that changed by one block are left out of the list (and counted apart): a
    phrase's audio buffer alive at one sample and not at the other is the sawtooth,
    not growth.
    """
    diff = last.compare_to(first, "traceback")
    total = sum(d.size_diff for d in diff)
    single = sum(d.size_diff for d in diff if abs(d.count_diff) <= 1)
    print(f"Python allocations (tracemalloc) from {t_first:.0f} to {t_last:.0f} simulated min: "
          f"{total / 1e6:+.2f} MB in all, {single / 1e6:+.2f} MB of it in sites that changed "
          f"by one block (buffers alive at one sample only); the {top} others that grew most:")
    for d in [d for d in diff if abs(d.count_diff) > 1][:top]:
        frames = [f for f in d.traceback if "st_agent" in f.filename] or list(d.traceback)
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames[-3:][::-1])
        print(f"  {d.size_diff / 1e6:+.2f} MB ({d.count_diff:+d} blocks)  {where}")
    by_file: dict[str, int] = {}
    for d in last.compare_to(first, "filename"):
        by_file[d.traceback[0].filename] = d.size_diff
    print("by file:")
    for name, size in sorted(by_file.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {size / 1e6:+.2f} MB  {name}")


if __name__ == "__main__":
    main()
