"""The outputs of a live jam at its end: the tunebook, each performer's report and the group's.

Under the jam folder, streamed while the jam plays by the jam's outputs
(:func:`st_agent.live.jam_loop.jam_outputs`): ``session.wav`` (the stereo mix: each
performer's voice panned by the equal-power law, the accompaniment in the centre) and
with ``--stems`` ``stems/performer_<i>.wav``, ``stems/bass.wav`` and ``stems/chords.wav``
(stereo, one gain for all: they add up to the mix; :mod:`st_agent.live.stems`), and
``session.mid``. Written here at the end: ``score.abc`` (one multi-voice
tune per phrase), ``summary.json`` and ``report.html`` (the group: each
performer's distance to their target and the shared music over time), and in
each ``performer_<i>/`` a session's ``summary.json`` and ``report.html``.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from st_agent.live.common import jsonable, png_base64

if TYPE_CHECKING:
    from st_agent.live.jam import JamConfig
    from st_agent.live.jam_loop import Performer, PlayedTune

__all__ = ["write_jam_outputs"]


def write_jam_outputs(cfg: JamConfig, folder: Path, perf: list[Performer],
                      played: list[PlayedTune], clashes: list[float], latencies: list[float],
                      targets: list[Any], name: str, wall_sec: float
                      ) -> tuple[Path | None, Path | None, dict[str, Any]]:
    """Write the jam's score, summaries and reports (``cfg.report``).

    Parameters
    ----------
    cfg : JamConfig
    folder : Path
        The jam folder.
    perf : list of Performer
        Their recordings are closed.
    played : list of PlayedTune
        The phrases as they played (their times and tunes).
    clashes : list of float
        Clashes per bar of each phrase.
    latencies : list of float
        Decision latency of each decision, ms.
    targets : list of Target
    name : str
        The controller, as the reports name it.
    wall_sec : float
        Wall-clock of the jam, seconds.

    Returns
    -------
    wav_path, report_path, summary
        ``report_path`` is None without ``cfg.report``.
    """
    from st_agent.biometrics.recording import read_events
    from st_agent.live.report import session_metrics, write_report

    wav = folder / "session.wav"  # streamed by the jam's outputs (st_agent.live.stems)
    wav = wav if wav.is_file() else None
    (folder / "score.abc").write_text("\n".join(
        _retitle(p.abc, i) for i, p in enumerate(played)), encoding="utf-8")
    per = []
    for i, p in enumerate(perf):
        m = session_metrics(read_events(p.folder, key=cfg.key_file)[1])
        summary = {"board": p.board, "policy": name, "target": targets[i].name,
                   "target_point": targets[i].at(0.0), "phrases": len(played),
                   "music_sec": (played[-1].end_sec - played[0].start_sec) if played else 0.0,
                   "performer": i, "metrics": m, "wall_sec": wall_sec,
                   "accelerated": cfg.accelerated, "stop_reason": "time up",
                   "decision_latency_ms": {}, "lead_time_sec": {}}
        (p.folder / "summary.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n")
        if cfg.report:
            write_report(p.folder, key_file=cfg.key_file)
        per.append(m)
    dists = [m["distance_last_half"] for m in per if m["distance_last_half"] is not None]
    lat = np.asarray(latencies)
    summary = {
        "performers": len(perf), "boards": [p.board for p in perf], "policy": name,
        "targets": [t.name for t in targets], "phrases": len(played),
        "music_sec": (played[-1].end_sec - played[0].start_sec) if played else 0.0,
        "group_distance_last_half": float(np.mean(dists)) if dists else None,
        "distance_last_half": [m["distance_last_half"] for m in per],
        "clashes_per_bar": float(np.mean(clashes)) if clashes else None,
        "signal_lost_events": [m["signal_lost_events"] for m in per],
        "decision_latency_ms": {"p50": float(np.percentile(lat, 50)) if lat.size else None,
                                "p95": float(np.percentile(lat, 95)) if lat.size else None},
        "wall_sec": wall_sec, "accelerated": cfg.accelerated, "config": asdict(cfg),
    }
    (folder / "summary.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n")
    report = _group_report(folder, summary, perf, cfg.key_file) if cfg.report else None
    return wav, report, summary


def _retitle(abc: str, i: int) -> str:
    lines = [ln for ln in abc.strip().splitlines() if not ln.startswith(("X:", "T:"))]
    return "\n".join([f"X:{i + 1}", f"T:jam phrase {i + 1}", *lines]) + "\n"


def _group_plot(folder: Path, perf: list[Performer], key_file: Path | None) -> str:
    """Each performer's distance to their target, and the shared music, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from st_agent.biometrics.recording import read_events

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 5.5), sharex=True)
    starts: list[dict[str, Any]] = []
    for i, p in enumerate(perf):
        ev = read_events(p.folder, key=key_file)[1]
        dec = [e for e in ev if e["kind"] == "decision"]
        t_music = next((e["onset_sec"] for e in ev if e["kind"] == "phrase_start"), 0.0)
        st = [e for e in ev if e["kind"] == "state" and e["onset_sec"] >= t_music]
        if dec and st:
            tv, ta = dec[0]["payload"]["target"]
            t = [e["onset_sec"] for e in st]
            d = [math.hypot(e["payload"]["valence"] - tv, e["payload"]["arousal"] - ta)
                 for e in st]
            ax1.plot(t, d, lw=1, label=f"performer {i}")
        for e in ev:
            if e["kind"] == "signal_lost":
                ax1.axvline(e["onset_sec"], color=f"C{i}", ls=":", lw=1)
        if i == 0:
            starts = [e for e in ev if e["kind"] == "phrase_start"]
    ax1.set(ylabel="distance to own target", title="Each performer's distance to their "
            "target (dotted: their signal lost)")
    ax1.legend(fontsize=8)
    if starts:
        t = [e["onset_sec"] for e in starts]
        ax2.step(t, [e["payload"]["clashes_per_bar"] for e in starts], where="post",
                 color="tab:red", label="clashes per bar")
        ax2b = ax2.twinx()
        ax2b.step(t, [e["payload"]["tempo"] for e in starts], where="post", color="tab:green",
                  label="negotiated tempo knob")
        ax2b.set(ylabel="tempo knob", ylim=(-0.02, 1.02))
        ax2b.legend(fontsize=8, loc="upper right")
    ax2.set(xlabel="time (s)", ylabel="clashes per bar", title="The shared music")
    ax2.legend(fontsize=8, loc="upper left")
    img = png_base64(fig, folder / "group.png")
    plt.close(fig)
    return img


def _group_report(folder: Path, summary: dict[str, Any], perf: list[Performer],
                  key_file: Path | None = None) -> Path:
    img = _group_plot(folder, perf, key_file)
    rows = []
    for i, p in enumerate(perf):
        d = summary["distance_last_half"][i]
        rows.append(f"<tr><td><a href=\"performer_{i}/report.html\">performer {i}</a></td>"
                    f"<td>{html.escape(p.board)}</td>"
                    f"<td>{html.escape(summary['targets'][i])}</td>"
                    f"<td>{'–' if d is None else f'{d:.3f}'}</td>"
                    f"<td>{summary['signal_lost_events'][i]}</td></tr>")
    g = summary["group_distance_last_half"]
    c = summary["clashes_per_bar"]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Jam {html.escape(folder.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:4px 8px}}</style>
</head><body><h1>Jam {html.escape(folder.name)}</h1>
<p>{summary['performers']} performers, {summary['phrases']} phrases,
{summary['music_sec']:.0f} s of music, controller {html.escape(summary['policy'])}.</p>
<table><tr><th>group mean distance to targets, last half</th>
<td>{'–' if g is None else f'{g:.3f}'}</td></tr>
<tr><th>clashes per bar (mean)</th><td>{'–' if c is None else f'{c:.2f}'}</td></tr></table>
<h2>Performers</h2>
<table><tr><th>performer</th><th>board</th><th>target</th>
<th>distance, last half</th><th>signal lost</th></tr>
{''.join(rows)}</table>
<h2>Over time</h2>
<img alt="group" style="max-width:100%" src="data:image/png;base64,{img}">
</body></html>
"""
    path = folder / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
