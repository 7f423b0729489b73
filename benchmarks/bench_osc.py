"""OSC out: message rate and loss to a local UDP receiver over an accelerated session.

Runs a virtual-listener session on the accelerated clock with ``--osc`` pointed at a
UDP receiver thread on 127.0.0.1 (a plain socket with a 4 MiB receive buffer, each
datagram parsed as an OSC message), then compares, per address, the messages the
output sent (:attr:`st_agent.live.osc_out.OscOutput.sent`) with those that arrived.
Loss must be 0 on loopback (issue 17).

    python benchmarks/bench_osc.py                  # 10 minutes of music (default)
    python benchmarks/bench_osc.py --minutes 2      # shorter

Prints a table (per address: sent, received, lost, messages per session minute) and
the message rate per wall second, the lateness of real-time beats (20 s at 120 BPM,
arrival at the receiver minus the beat's time), then a stress burst (2000 phrases of 16 beats handed
to the output as fast as the CPU allows); writes it to ``runs/bench_osc.txt``.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path


class UdpCounter:
    """Counts OSC messages per address arriving on a UDP port of 127.0.0.1."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.counts: Counter[str] = Counter()
        self.beats: list[tuple[float, float]] = []  # (t_sec sent, monotonic arrival)
        self.bad = 0
        self.last = time.monotonic()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from pythonosc.osc_message import OscMessage

        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.last = time.monotonic()
            try:
                msg = OscMessage(data)
            except Exception:  # a datagram that is not OSC: counted, not fatal
                self.bad += 1
                continue
            self.counts[msg.address] += 1
            if msg.address.endswith("/beat"):
                self.beats.append((float(msg.params[-1]), self.last))

    def close(self, quiet_sec: float = 0.5) -> None:
        while time.monotonic() - self.last < quiet_sec:
            time.sleep(0.05)
        self._stop.set()
        self.thread.join()
        self.sock.close()


def run(minutes: float = 10.0, seed: int = 0, policy: str = "calm") -> dict:
    """One accelerated session with OSC out; the counts per address."""
    import torch

    torch.set_num_threads(1)
    from st_agent.live.runtime import LiveSession
    from st_agent.live.session import SessionConfig
    from st_agent.policies.controllers import make_controller

    recv = UdpCounter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SessionConfig(board="virtual", accelerated=True, minutes=minutes,
                            calibration_sec=30.0, record=Path(tmp), name="bench-osc",
                            policy=policy, seed=seed, report=False,
                            osc=f"127.0.0.1:{recv.port}", status_sec=60.0)
        ctrl, name = make_controller(cfg.policy, cfg.bounds(), cfg.target, seed=seed)
        session = LiveSession(cfg, ctrl, name)
        osc = next(o for o in session.outputs.outputs if o.name == "osc")
        t0 = time.perf_counter()
        res = session.run()
        wall = time.perf_counter() - t0
    recv.close()
    return {"sent": Counter(osc.sent), "received": recv.counts, "bad": recv.bad,
            "errors": osc.errors, "wall_sec": wall, "music_sec": res.summary["music_sec"],
            "phrases": res.summary["phrases"], "failures": session.outputs.failures,
            "minutes": minutes}


def burst(n_phrases: int = 2000, beats: int = 16) -> dict:
    """Stress: phrases of ``beats`` beats handed to an accelerated OSC output as fast as
    the CPU allows (each phrase's beats leave at once, as in an accelerated session)."""
    from st_agent.live.common import Playing
    from st_agent.live.osc_out import OscOutput
    from st_agent.types import Knobs, MusicFeatures, Phrase

    recv = UdpCounter()
    out = OscOutput(f"127.0.0.1:{recv.port}", accelerated=True)
    knobs = Knobs(0.5, 0.5, 0.5)
    feats = MusicFeatures(duration_sec=beats * 0.5, bpm=120.0, notes_per_sec=2.0,
                          notes_per_beat=1.0, mode="major", mode_confidence=0.5, key="C major",
                          mean_pitch=67.0, pitch_range=12.0, mean_velocity=80.0, n_notes=32)
    phrase = Phrase(abc="X:1\nM:4/4\nL:1/8\nK:C\nC8|\n", body="C8|", knobs=knobs,
                    meter="4/4", unit="1/8", key="C", bars=4)
    with tempfile.TemporaryDirectory() as tmp:
        out.open(Path(tmp))
        t0 = time.perf_counter()
        for i in range(n_phrases):
            out.phrase(i, Playing(phrase, feats, None, i * beats * 0.5), knobs)
        wall = time.perf_counter() - t0
        out.close("done")
    recv.close()
    sent = sum(out.sent.values())
    return {"sent": sent, "received": sum(recv.counts.values()), "wall_sec": wall,
            "rate": sent / wall}


def beat_timing(seconds: float = 20.0, bpm: float = 120.0) -> dict:
    """Real-time beats: arrival at the receiver minus the beat's time on the session clock
    (the clock thread's lateness on loopback), over ``seconds`` of 8-beat phrases."""
    import numpy as np

    from st_agent.live.common import Playing
    from st_agent.live.osc_out import OscOutput
    from st_agent.types import Knobs, MusicFeatures, Phrase

    recv = UdpCounter()
    out = OscOutput(f"127.0.0.1:{recv.port}")
    knobs = Knobs(0.5, 0.5, 0.5)
    dur = 8 * 60.0 / bpm
    feats = MusicFeatures(duration_sec=dur, bpm=bpm, notes_per_sec=2.0, notes_per_beat=1.0,
                          mode="major", mode_confidence=0.5, key="C major", mean_pitch=67.0,
                          pitch_range=12.0, mean_velocity=80.0, n_notes=32)
    phrase = Phrase(abc="X:1\nM:4/4\nL:1/8\nK:C\nC8|\n", body="C8|", knobs=knobs,
                    meter="4/4", unit="1/8", key="C", bars=4)
    with tempfile.TemporaryDirectory() as tmp:
        out.open(Path(tmp))
        wall0 = time.monotonic()
        for i in range(int(seconds / dur)):  # each phrase handed over when it starts
            while time.monotonic() - wall0 < i * dur:
                time.sleep(0.005)
            out.phrase(i, Playing(phrase, feats, None, i * dur), knobs)
        time.sleep(dur)
        out.close("done")
    recv.close()
    late_ms = np.array([(arr - (wall0 + t)) * 1e3 for t, arr in recv.beats])
    return {"n": late_ms.size, "p50": float(np.percentile(late_ms, 50)),
            "p95": float(np.percentile(late_ms, 95)), "max": float(late_ms.max()),
            "jitter_sd": float(late_ms.std())}


def table(r: dict) -> str:
    """The figures as text."""
    music_min = r["music_sec"] / 60.0
    lines = [f"OSC out over an accelerated virtual session: {r['minutes']:g} min asked, "
             f"{r['music_sec']:.0f} s of music, {r['phrases']} phrases, "
             f"{r['wall_sec']:.1f} s wall",
             f"{'address':<14}{'sent':>8}{'received':>10}{'lost':>6}{'per music min':>15}"]
    total_sent = total_recv = 0
    for addr in sorted(set(r["sent"]) | set(r["received"])):
        s, g = r["sent"][addr], r["received"][addr]
        total_sent, total_recv = total_sent + s, total_recv + g
        lines.append(f"{addr:<14}{s:>8}{g:>10}{s - g:>6}{s / max(music_min, 1e-9):>15.1f}")
    lines.append(f"{'all':<14}{total_sent:>8}{total_recv:>10}{total_sent - total_recv:>6}"
                 f"{total_sent / max(music_min, 1e-9):>15.1f}")
    lost = total_sent - total_recv
    lines.append(f"rate {total_sent / r['wall_sec']:.0f} messages per wall second; loss "
                 f"{lost} ({100.0 * lost / max(total_sent, 1):.3f} %); "
                 f"send errors {r['errors']}; non-OSC datagrams {r['bad']}; "
                 f"output failures {len(r['failures'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policy", default="calm")
    args = ap.parse_args(argv)
    r = run(args.minutes, args.seed, args.policy)
    b = burst()
    bt = beat_timing()
    text = table(r) + (
        f"\nreal-time beats (120 BPM, {bt['n']} beats): lateness on arrival p50 "
        f"{bt['p50']:.2f} ms, p95 {bt['p95']:.2f} ms, max {bt['max']:.2f} ms, sd "
        f"{bt['jitter_sd']:.2f} ms") + (
        f"\nburst (stress): {b['sent']} messages in {b['wall_sec']:.2f} s "
        f"({b['rate']:.0f} per second, phrases of 16 beats at once), received "
        f"{b['received']}, lost {b['sent'] - b['received']}")
    print(text)
    from st_agent.paths import runs_dir

    out = runs_dir() / "bench_osc.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n", encoding="utf-8")
    lost = sum(r["sent"].values()) - sum(r["received"].values())
    return 0 if lost == 0 and not r["failures"] and b["sent"] == b["received"] else 1


if __name__ == "__main__":
    sys.exit(main())
