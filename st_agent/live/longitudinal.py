"""One subject across sessions: ``st-agent report --subject S``.

Every session of the subject (:func:`st_agent.subjects.sessions_for_subject`, oldest
first) is read and summarised in one row:

- **time to target**: seconds from the end of calibration (the first phrase) until
  the estimated state first comes within the report's radius of the target region, and
  the **mean distance** to the region over the last half of the music
  (:func:`st_agent.live.report.session_metrics`, as each session's own report computes
  them);
- **heart rate and breathing rate at rest and at the end**: at rest is the calibration
  period before the music (its last :data:`REST_SEC` seconds at most), the end is the
  last :data:`END_SEC` seconds of the recording (at most the music's length); both
  from the ECG (or PPG) channel with the estimator's beat tracker
  (:class:`~st_agent.biometrics.cardiac.BeatTracker`: heart rate from the mean RR
  interval, breathing from respiratory sinus arrhythmia and beat amplitude), over the
  whole span. A session without such a channel, a span too short for breathing (under
  40 s; the RR series must also cover 60 % of it), or a breathing peak at the floor of
  the search (7.2 breaths/min: the edge, not a peak) gets no value, shown as "–".

It writes ``longitudinal.html`` (the table and the plot, self-contained),
``longitudinal.png`` and ``longitudinal.json`` into ``--out`` (default
``runs/longitudinal_<subject>/``), and prints the table. A session that cannot be read
(encrypted with another key, damaged) is listed with the reason and left out of the
plot.
"""

from __future__ import annotations

import html
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from st_agent.errors import UsageError

__all__ = ["ReportCommandConfig", "SessionRow", "format_rows", "longitudinal_report",
           "run_report_command", "session_row"]

logger = logging.getLogger(__name__)

#: Longest rest span (end of calibration) and end span used for the heart markers, s.
REST_SEC = 60.0
END_SEC = 60.0
MIN_SPAN_SEC = 20.0
#: Breathing needs a longer span: on the virtual listener, spans of 20-30 s gave 7.3 breaths
#: per minute (the floor of the search, 7.2) where 60 s spans of the same sessions gave
#: 12-17; and a rate at that floor is the edge of the search, not a peak.
MIN_BREATH_SPAN_SEC = 40.0
_BREATH_FLOOR = 0.12 * 60.0


@dataclass
class ReportCommandConfig:
    """Rebuild a session's report (``st-agent report FOLDER``), or compare a subject's
    sessions (``st-agent report --subject S``). The fields of
    :class:`st_agent.live.report.ReportConfig`, plus the comparison's."""

    folder: Annotated[Path | None, tyro.conf.Positional] = None
    """Session folder (with session.json); or use --subject."""
    key_file: Path | None = None
    """Key file of an encrypted session (or of the subject's sessions)."""
    subject: str = ""
    """Compare every session of this subject (pseudonym): time to target, distance,
    heart and breathing rate at rest and at the end."""
    sessions_root: Path | None = None
    """With --subject: search this folder of recordings; default runs/ plus the
    sessions the subject registry knows."""
    out: Path | None = None
    """With --subject: where the page goes; default runs/longitudinal_<subject>/."""


@dataclass
class SessionRow:
    """One session of the comparison (units in the names; None: not available)."""

    folder: str
    created_utc: str
    policy: str = ""
    music_min: float | None = None
    time_to_target_sec: float | None = None
    distance_last_half: float | None = None
    hr_rest_bpm: float | None = None
    hr_end_bpm: float | None = None
    resp_rest_bpm: float | None = None
    resp_end_bpm: float | None = None
    error: str = ""


def _heart(raw: Any, t0: float, t1: float) -> tuple[float | None, float | None]:
    """(heart rate, breathing rate) in beats / breaths per minute over ``[t0, t1]`` s."""
    from st_agent.biometrics.cardiac import BeatTracker

    types = raw.get_channel_types()
    names = raw.ch_names
    pick = next((i for i, t in enumerate(types) if t == "ecg"), None)
    kind = "ecg"
    if pick is None:
        pick = next((i for i, n in enumerate(names) if n.upper().startswith("PPG")), None)
        kind = "ppg"
    if pick is None or t1 - t0 < MIN_SPAN_SEC / 2:
        return None, None
    sfreq = raw.info["sfreq"]
    a, b = max(0, round(t0 * sfreq)), min(raw.n_times, round(t1 * sfreq))
    x = raw.get_data(picks=[pick], start=a, stop=b)[0]
    if x.size < sfreq * 5 or not np.isfinite(x).all():
        x = np.nan_to_num(x)
        if x.size < sfreq * 5:
            return None, None
    span = (b - a) / sfreq
    tracker = BeatTracker(kind, sfreq, hr_window_sec=span, hrv_window_sec=span)
    try:
        tracker.update(x, a)
        feats = tracker.features(b)
    except (ValueError, RuntimeError) as e:
        logger.warning("heart markers over %.0f-%.0f s failed: %s", t0, t1, e)
        return None, None
    resp = feats.get("resp/rate_bpm")
    if resp is not None and (span < MIN_BREATH_SPAN_SEC or resp < _BREATH_FLOOR + 0.3):
        resp = None
    return feats.get("hr/bpm"), resp


def session_row(folder: Path, key_file: Path | None = None) -> SessionRow:
    """The comparison row of one session folder (module docstring).

    Parameters
    ----------
    folder : Path
        A session folder.
    key_file : Path, optional
        Key file of an encrypted session.

    Returns
    -------
    row : SessionRow
        With ``error`` set (and no figures) when the session cannot be read.
    """
    from st_agent.biometrics.recording import read_session
    from st_agent.errors import STAgentError
    from st_agent.live.report import session_metrics

    try:
        sess = read_session(folder, key=key_file)
    except (STAgentError, OSError, ValueError) as e:
        return SessionRow(str(folder), "", error=f"{type(e).__name__}: {e}")
    events = sess.events
    m = session_metrics(events)
    start = next((e["payload"] for e in events if e["kind"] == "marker"
                  and e["payload"].get("label") == "session_start"), {})
    phrases = [e for e in events if e["kind"] == "phrase_start"]
    music0 = m.get("music_start_sec")
    ttt = m.get("time_to_target_sec")
    raw = sess.raw
    t_end = raw.n_times / raw.info["sfreq"]
    row = SessionRow(str(folder), str(getattr(sess.meta, "created_utc", "")),
                     str(start.get("policy", "")),
                     (t_end - music0) / 60.0 if music0 is not None and phrases else None,
                     None if ttt is None or music0 is None else float(ttt),
                     m.get("distance_last_half"))
    if music0 is not None:
        rest = (max(0.0, music0 - REST_SEC), music0)
        end_len = min(END_SEC, t_end - music0)
        row.hr_rest_bpm, row.resp_rest_bpm = _heart(raw, *rest)
        row.hr_end_bpm, row.resp_end_bpm = _heart(raw, max(music0, t_end - end_len), t_end)
    return row


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None or not math.isfinite(x) else format(x, spec)


_COLUMNS = (("#", 3), ("session", 24), ("controller", 22), ("music min", 9), ("t→target s", 10),
            ("distance", 8), ("HR rest", 7), ("HR end", 7), ("br rest", 7), ("br end", 7))


def format_rows(rows: list[SessionRow]) -> str:
    """The comparison as a plain-text table (one line per session)."""
    head = " ".join(f"{name:>{w}}" if i else f"{name:<{w}}"
                    for i, (name, w) in enumerate(_COLUMNS))
    lines = [head, "-" * len(head)]
    for i, r in enumerate(rows, 1):
        name = Path(r.folder).name[:24]
        if r.error:
            lines.append(f"{i:<3} {name:>24} unreadable: {r.error[:80]}")
            continue
        vals = (_fmt(r.music_min, ".1f"), _fmt(r.time_to_target_sec, ".0f"),
                _fmt(r.distance_last_half, ".3f"), _fmt(r.hr_rest_bpm, ".1f"),
                _fmt(r.hr_end_bpm, ".1f"), _fmt(r.resp_rest_bpm, ".1f"),
                _fmt(r.resp_end_bpm, ".1f"))
        lines.append(f"{i:<3} {name:>24} {r.policy[:22]:>22} " + " ".join(
            f"{v:>{w}}" for v, (_, w) in zip(vals, _COLUMNS[3:], strict=True)))
    return "\n".join(lines)


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _plot(rows: list[SessionRow], subject: str, path: Path) -> str:
    """The four panels (PNG at ``path``); its base64 for the page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from st_agent.live.common import png_base64

    ok = [r for r in rows if not r.error]
    x = np.arange(1, len(ok) + 1)
    fig, ax = plt.subplots(2, 2, figsize=(9, 6), sharex=True)
    ax[0, 0].plot(x, [_nan(r.time_to_target_sec) for r in ok], "o-")
    ax[0, 0].set_ylabel("time to target (s)")
    ax[0, 1].plot(x, [_nan(r.distance_last_half) for r in ok], "o-", color="tab:purple")
    ax[0, 1].set_ylabel("distance to target, last half")
    for a, (rest, end, label) in zip(ax[1], (("hr_rest_bpm", "hr_end_bpm", "heart rate (bpm)"),
                                             ("resp_rest_bpm", "resp_end_bpm",
                                              "breathing (breaths/min)")), strict=True):
        a.plot(x, [_nan(getattr(r, rest)) for r in ok], "o-", label="rest (calibration)")
        a.plot(x, [_nan(getattr(r, end)) for r in ok], "s--", label="end of session")
        a.set_ylabel(label)
        a.set_xlabel("session")
        a.legend(fontsize=8)
    for a in ax.ravel():
        a.set_xticks(x)
        a.grid(alpha=0.3)
    fig.suptitle(f"subject {subject}: {len(ok)} sessions, oldest first")
    fig.tight_layout()
    b64 = png_base64(fig, path)
    plt.close(fig)
    return b64


def _html(subject: str, rows: list[SessionRow], png: str, table: str) -> str:
    body = "".join(
        f"<tr><td>{i}</td><td>{html.escape(Path(r.folder).name)}</td>"
        f"<td>{html.escape(r.created_utc)}</td><td>{html.escape(r.policy)}</td>"
        + ("".join(f"<td>{_fmt(v, s)}</td>" for v, s in (
            (r.music_min, ".1f"), (r.time_to_target_sec, ".0f"), (r.distance_last_half, ".3f"),
            (r.hr_rest_bpm, ".1f"), (r.hr_end_bpm, ".1f"), (r.resp_rest_bpm, ".1f"),
            (r.resp_end_bpm, ".1f")))
           if not r.error else f"<td colspan=7>unreadable: {html.escape(r.error)}</td>")
        + "</tr>" for i, r in enumerate(rows, 1))
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>subject {html.escape(subject)}: sessions compared</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:2px 8px;border-bottom:1px solid
#ddd;text-align:right}} table{{border-collapse:collapse}}</style></head><body>
<h1>Subject {html.escape(subject)} (pseudonym): {len(rows)} sessions</h1>
<p>Time to target: from the first phrase until the estimated state first enters the target
region. Distance: mean distance to the region over the last half of the music. Heart and
breathing rate at rest: the calibration before the music; at the end: the last minute of
the session (st_agent/live/longitudinal.py).</p>
<img src="data:image/png;base64,{png}" alt="sessions compared">
<table><tr><th>#</th><th>session</th><th>created (UTC)</th><th>controller</th>
<th>music min</th><th>time to target s</th><th>distance</th><th>HR rest</th><th>HR end</th>
<th>breathing rest</th><th>breathing end</th></tr>{body}</table>
<pre>{html.escape(table)}</pre></body></html>
"""


def longitudinal_report(subject: str, root: Path | None = None,
                        key_file: Path | None = None, out: Path | None = None
                        ) -> tuple[Path, list[SessionRow], str]:
    """Compare every session of ``subject``; write the page, plot and JSON.

    Parameters
    ----------
    subject : str
        A pseudonym.
    root : Path, optional
        Folder of recordings to search (:func:`st_agent.subjects.sessions_for_subject`).
    key_file : Path, optional
        Key file of encrypted sessions.
    out : Path, optional
        Output folder; default ``runs/longitudinal_<subject>/``.

    Returns
    -------
    page, rows, table : Path, list of SessionRow, str

    Raises
    ------
    UsageError
        When the subject has no sessions.
    """
    from st_agent.subjects import sessions_for_subject

    folders = sessions_for_subject(subject, root)
    if not folders:
        raise UsageError(f"--subject {subject}: no sessions of this subject under "
                         f"{root or 'runs/ or the subject registry'}; record some with "
                         f"`st-agent session --subject {subject}` or give --sessions-root")
    rows = [session_row(f, key_file) for f in folders]
    if out is None:
        from st_agent.paths import runs_dir

        out = runs_dir() / f"longitudinal_{subject}"
    out.mkdir(parents=True, exist_ok=True)
    table = format_rows(rows)
    png = _plot(rows, subject, out / "longitudinal.png")
    page = out / "longitudinal.html"
    page.write_text(_html(subject, rows, png, table), encoding="utf-8")
    (out / "longitudinal.json").write_text(json.dumps(
        {"subject": subject, "sessions": [asdict(r) for r in rows]}, indent=1) + "\n",
        encoding="utf-8")
    return page, rows, table


def run_report_command(cfg: ReportCommandConfig) -> None:
    """``st-agent report``: one session's report, or ``--subject``'s comparison."""
    import sys

    if bool(cfg.subject) == (cfg.folder is not None):
        raise UsageError("give a session folder (st-agent report FOLDER) or --subject S, "
                         "not both" if cfg.subject else
                         "give a session folder (st-agent report FOLDER) or --subject S")
    if cfg.folder is not None:
        from st_agent.commands import run_report
        from st_agent.live.report import ReportConfig

        run_report(ReportConfig(cfg.folder, cfg.key_file))
        return
    page, _, table = longitudinal_report(cfg.subject, cfg.sessions_root, cfg.key_file, cfg.out)
    sys.stdout.write(f"{table}\nwrote {page} (and {page.with_suffix('.png').name})\n")
