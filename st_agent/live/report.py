"""The session report: one self-contained ``report.html`` with plots and a summary.

Everything in it is read back from the recording
(:func:`st_agent.biometrics.recording.read_session`) and the session's
``summary.json``, so a report can be rebuilt from any session folder
(``st-agent report FOLDER``), also after a crash.

Plots (PNG, embedded and saved beside the report):

* ``state.png``: estimated valence and arousal against the target over time,
  and the path in the valence/arousal plane;
* ``knobs.png``: the three knobs over time (one step per phrase);
* ``bands.png``: EEG band powers (theta, alpha, beta; mean over channels, 8 s
  windows every 2 s, µV²);
* ``heart.png``: heart rate from the ECG or PPG channel (same windows);
* ``audio.png`` (when ``session.wav`` is there): what each phrase sounded like,
  measured from the audio (:mod:`st_agent.live.phrase_audio`: loudness in LUFS,
  spectral centroid, flux, onset rate), also as a table whose rows name the
  features that changed most from the previous phrase, and in
  ``phrase_audio.json``.

Summary figures: mean distance to the target over the last half of the music,
time to first enter the target region (radius 0.2), mean knob change per
phrase, time with the signal lost, decision latency and phrase lead time; and
what went wrong but did not stop the music: a controller replaced by its
fallback (``controller_fallback`` events) and outputs that failed and were
dropped (``output_failed`` events). Last, the control actions taken from the live
dashboard (``control`` events: knob overrides, target changes, pause/resume, the
stop, markers), with their session time (:func:`control_table`).
"""

from __future__ import annotations

import html
import itertools
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from st_agent.live.common import png_base64

__all__ = ["ReportConfig", "control_table", "incident_rows", "session_metrics", "write_report"]

logger = logging.getLogger(__name__)

#: Radius of the target region, estimator units (as in st_agent.policies.evaluate).
TARGET_RADIUS = 0.2


@dataclass
class ReportConfig:
    """Rebuild the report of a recorded session (``st-agent report``)."""

    folder: Annotated[Path, tyro.conf.Positional]
    """Session folder (with session.json)."""
    key_file: Path | None = None
    """Key file of an encrypted session."""


def _series(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == kind]


def _region_of(payload: dict[str, Any]) -> tuple[float, float, float, float]:
    """A decision's target region; a recorded point is a region of zero size."""
    region = payload.get("target_region")
    if region is not None and len(region) == 4:
        return tuple(float(x) for x in region)
    v, a = payload["target"][:2]
    return (float(v), float(v), float(a), float(a))


def session_metrics(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Distance, time to target, knob change and signal loss from a session's events.

    Parameters
    ----------
    events : list of dict
        ``Session.events`` (``kind``, ``onset_sec``, ``payload``).

    Returns
    -------
    metrics : dict
        ``distance_last_half`` (to the target region, 0 inside),
        ``time_to_target_sec`` (None if never),
        ``knob_change_per_phrase``, ``signal_lost_sec``, ``decisions``,
        ``music_start_sec``.
    """
    decisions = _series(events, "decision")
    starts = _series(events, "phrase_start")
    calib = [e["onset_sec"] for e in events if e["kind"] == "marker"
             and e["payload"].get("label") == "calibration_done"]
    t_music = calib[0] if calib else (starts[0]["onset_sec"] if starts else 0.0)
    states = [e for e in _series(events, "state") if e["onset_sec"] >= t_music]
    # the target region of each decision (v_lo, v_hi, a_lo, a_hi); older recordings
    # carry only the point, which is a region of zero size
    targets = [(e["onset_sec"], _region_of(e["payload"])) for e in decisions]
    first_target = targets[0][1] if targets else None
    d, t = [], []
    for e in states:
        tgt = first_target
        for ts, tv in targets:
            if ts <= e["onset_sec"]:
                tgt = tv
        if tgt is None:
            continue
        p = e["payload"]
        dv = max(tgt[0] - p["valence"], 0.0, p["valence"] - tgt[1])
        da = max(tgt[2] - p["arousal"], 0.0, p["arousal"] - tgt[3])
        d.append(math.hypot(dv, da))
        t.append(e["onset_sec"])
    d_arr, t_arr = np.asarray(d), np.asarray(t)
    enter = None
    if d_arr.size:
        inside = np.nonzero(d_arr < TARGET_RADIUS)[0]
        enter = float(t_arr[inside[0]] - t_music) if inside.size else None
    knobs = [tuple(e["payload"]["knobs"]) for e in starts]
    changes = [float(np.linalg.norm(np.subtract(b, a))) for a, b in itertools.pairwise(knobs)]
    lost, restored = _series(events, "signal_lost"), _series(events, "signal_restored")
    lost_sec = sum(max(0.0, r["onset_sec"] - lo["onset_sec"]) for lo, r in
                   zip(lost, restored, strict=False))
    return {
        "distance_last_half": float(d_arr[d_arr.size // 2:].mean()) if d_arr.size else None,
        "time_to_target_sec": enter,
        "knob_change_per_phrase": float(np.mean(changes)) if changes else 0.0,
        "signal_lost_sec": lost_sec,
        "signal_lost_events": len(lost),
        "decisions": len(decisions),
        "music_start_sec": t_music,
    }


def _window_features(raw: Any, step_sec: float = 2.0, win_sec: float = 8.0
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Band powers and heart rate in sliding windows of the recording."""
    from st_agent.biometrics.estimator import features_from_window

    data = raw.get_data()
    sfreq = raw.info["sfreq"]
    names = raw.ch_names
    types = [t if t in ("eeg", "ecg", "emg") else ("ppg" if n.upper().startswith("PPG") else t)
             for n, t in zip(names, raw.get_channel_types(), strict=True)]
    n_win, n_step = round(win_sec * sfreq), round(step_sec * sfreq)
    keys = ("eeg/theta_power", "eeg/alpha_power", "eeg/beta_power", "hr/bpm")
    t, out = [], {k: [] for k in keys}
    for end in range(n_win, data.shape[1] + 1, n_step):
        seg = data[:, end - n_win:end]
        try:
            f, _ = features_from_window(seg, sfreq, names, types)
        except ValueError:
            continue
        t.append(end / sfreq)
        for k in keys:
            out[k].append(f.get(k, math.nan))
    return np.asarray(t), {k: np.asarray(v, dtype=float) for k, v in out.items()}


def write_report(folder: str | Path, key_file: str | Path | None = None) -> Path:
    """Write ``report.html`` (and its PNGs) into a session folder; return its path.

    Parameters
    ----------
    folder : str or Path
        A session folder (``session.json``; ``summary.json`` when the session ended).
    key_file : str or Path, optional
        Key file of an encrypted session.

    Raises
    ------
    ValueError
        When ``folder`` is not a session folder.
    """
    import matplotlib

    matplotlib.use("Agg")

    from st_agent.biometrics.recording import read_session

    folder = Path(folder)
    if not (folder / "session.json").exists():
        from st_agent.biometrics.session_meta import SessionNotFoundError

        raise SessionNotFoundError(f"{folder} is not a session folder (no session.json); give "
                                   "the folder that `st-agent session` or `st-agent demo` "
                                   "wrote")
    sess = read_session(folder, key=key_file)  # a malformed session raises its typed error
    events = sess.events
    summary = _read_summary(folder / "summary.json")
    metrics = session_metrics(events)
    imgs = {"state": _plot_state(events, metrics["music_start_sec"], folder / "state.png"),
            "knobs": _plot_knobs(events, folder / "knobs.png")}
    imgs |= _plot_signals(sess.raw, folder)
    audio = _phrase_audio(folder, events, imgs)
    path = folder / "report.html"
    path.write_text(_html(folder.name, summary, metrics, _series(events, "decision"), imgs,
                          sess, audio), encoding="utf-8")
    logger.info("wrote %s", path)
    return path


def _phrase_audio(folder: Path, events: list[dict[str, Any]], imgs: dict[str, str]) -> Any:
    """Each phrase measured from session.wav (:mod:`st_agent.live.phrase_audio`); adds
    ``imgs["audio"]`` and writes ``phrase_audio.json`` when anything was measured."""
    from st_agent.live.phrase_audio import measure_session_audio, plot_phrase_audio

    audio = measure_session_audio(folder / "session.wav", events)
    if any(p.features is not None for p in audio.phrases):
        imgs["audio"] = plot_phrase_audio(audio, folder / "audio.png")
        (folder / "phrase_audio.json").write_text(json.dumps(audio.as_dict(), indent=2) + "\n",
                                                  encoding="utf-8")
    return audio


def _audio_table(audio: Any) -> str:
    """The per-phrase table of what was heard ("" without session.wav)."""
    if not any(p.features is not None for p in audio.phrases):
        return ""
    cells = []
    for p in audio.phrases:
        f = p.features
        vals = ("–",) * 4 if f is None else (
            f"{f.loudness_lufs:.1f}", f"{f.spectral_centroid_hz:.0f}", f"{f.spectral_flux:.4f}",
            f"{f.onset_rate_hz:.2f}")
        knobs = " / ".join(f"{k:.2f}" for k in p.knobs)
        cells.append(f"<tr><td>{p.index}</td><td>{p.start_sec:.1f}</td><td>{knobs}</td>"
                     + f"<td>{html.escape(p.instruments() or '–')}</td>"  # what played
                     + "".join(f"<td>{v}</td>" for v in vals)
                     + f"<td>{html.escape(p.heard)}</td><td>{html.escape(p.reason)}</td></tr>")
    return ("<h2>What each phrase sounded like</h2>\n<p>Measured from session.wav "
            f"({audio.ms_per_phrase:.0f} ms per phrase); <em>heard</em> names the audio "
            "features that changed most from the previous phrase.</p>\n"
            "<table><tr><th>phrase</th><th>start (s)</th><th>knobs v / t / e</th>"
            "<th>instruments</th><th>loudness (LUFS)</th><th>centroid (Hz)</th><th>flux</th>"
            "<th>onsets/s</th>"
            "<th>heard</th><th>why (the decision)</th></tr>\n" + "\n".join(cells)
            + "</table>")


def _read_summary(path: Path) -> dict[str, Any]:
    """``summary.json`` (derived at the session's end), or ``{}`` when it is missing or
    unreadable: the report is rebuilt from the recording, so a damaged summary costs
    only its rows (a warning names the file)."""
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        logger.warning("%s is unreadable (%s); the report goes on without it", path, e)
        return {}
    if not isinstance(summary, dict):
        logger.warning("%s holds a JSON %s, not an object; the report goes on without it",
                       path, type(summary).__name__)
        return {}
    return summary


def _plot_state(events: list[dict[str, Any]], t_music: float, path: Path) -> str:
    """Estimated state against the target over time, and the path in the plane."""
    import matplotlib.pyplot as plt

    states = _series(events, "state")
    decisions = _series(events, "decision")
    ts = np.array([e["onset_sec"] for e in states])
    val = np.array([e["payload"]["valence"] for e in states])
    aro = np.array([e["payload"]["arousal"] for e in states])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8),
                                   gridspec_kw={"width_ratios": [2.2, 1]})
    if ts.size:
        ax1.plot(ts, val, color="tab:orange", lw=1, label="valence (estimated)")
        ax1.plot(ts, aro, color="tab:blue", lw=1, label="arousal (estimated)")
    if decisions:
        td = [e["onset_sec"] for e in decisions]
        tv = [e["payload"]["target"] for e in decisions]
        ax1.step(td, [x[0] for x in tv], where="post", color="tab:orange", ls="--",
                 label="target valence")
        ax1.step(td, [x[1] for x in tv], where="post", color="tab:blue", ls="--",
                 label="target arousal")
        ax2.plot(tv[0][0], tv[0][1], "k*", ms=14, label="target")
        v_lo, v_hi, a_lo, a_hi = _region_of(decisions[0]["payload"])
        if v_hi > v_lo or a_hi > a_lo:  # a region: shade it (one-sided bands reach the edge)
            for lo, hi, color in ((v_lo, v_hi, "tab:orange"), (a_lo, a_hi, "tab:blue")):
                ax1.axhspan(lo, hi, color=color, alpha=0.08, lw=0)
            ax2.add_patch(plt.Rectangle((v_lo, a_lo), v_hi - v_lo, a_hi - a_lo, fill=True,
                                        alpha=0.12, color="k", lw=0, label="target region"))
        else:
            ax2.add_patch(plt.Circle(tuple(tv[0]), TARGET_RADIUS, fill=False, ls="--"))
    for lo in _series(events, "signal_lost"):
        ax1.axvline(lo["onset_sec"], color="red", lw=0.8)
    ax1.axvline(t_music, color="grey", ls=":", label="music starts")
    ax1.set(xlabel="time (s)", ylabel="state (estimator units)", ylim=(-1.05, 1.05),
            title="Estimated state against the target")
    ax1.legend(fontsize=7, loc="lower left", ncol=3)
    sel = ts >= t_music
    if sel.any():
        sc = ax2.scatter(val[sel], aro[sel], c=ts[sel], s=4, cmap="viridis")
        fig.colorbar(sc, ax=ax2, label="time (s)")
    ax2.set(xlim=(-1, 1), ylim=(-1, 1), xlabel="valence", ylabel="arousal",
            title="Valence/arousal path", aspect="equal")
    img = png_base64(fig, path)
    plt.close(fig)
    return img


def _plot_knobs(events: list[dict[str, Any]], path: Path) -> str:
    """The three knobs over time (one step per phrase)."""
    import matplotlib.pyplot as plt

    starts = _series(events, "phrase_start")
    fig, ax = plt.subplots(figsize=(12, 2.8))
    if starts:
        tk = [e["onset_sec"] for e in starts]
        kn = np.array([e["payload"]["knobs"] for e in starts])
        # distinct widths and dashes: knobs often sit on the same value
        for i, (name, c, ls, lw) in enumerate((("valence", "tab:orange", "-", 1.5),
                                               ("tempo", "tab:green", "-", 3.0),
                                               ("energy", "tab:red", "--", 1.5))):
            ax.step(tk, kn[:, i], where="post", color=c, ls=ls, lw=lw, label=name)
    ax.set(xlabel="time (s)", ylabel="knob", ylim=(-0.02, 1.02), title="Knobs (one step per "
           "phrase)")
    ax.legend(fontsize=8)
    img = png_base64(fig, path)
    plt.close(fig)
    return img


def _plot_signals(raw: Any, folder: Path) -> dict[str, str]:
    """Band powers and heart rate from the raw signals: ``{"bands": .., "heart": ..}``."""
    import matplotlib.pyplot as plt

    tw, wf = _window_features(raw) if raw is not None else (np.zeros(0), {})
    imgs = {}
    fig, ax = plt.subplots(figsize=(12, 2.8))
    for band, c in (("theta", "tab:purple"), ("alpha", "tab:blue"), ("beta", "tab:red")):
        y = wf.get(f"eeg/{band}_power", np.zeros(0))
        if y.size and np.isfinite(y).any():
            ax.semilogy(tw, y, color=c, label=band)
    ax.set(xlabel="time (s)", ylabel="power (µV²)", title="EEG band powers (mean over channels)")
    ax.legend(fontsize=8)
    imgs["bands"] = png_base64(fig, folder / "bands.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(12, 2.4))
    hr = wf.get("hr/bpm", np.zeros(0))
    if hr.size and np.isfinite(hr).any():
        ax.plot(tw, hr, color="tab:red")
    else:
        ax.text(0.5, 0.5, "no ECG/PPG channel, or no detectable beats", ha="center",
                transform=ax.transAxes)
    ax.set(xlabel="time (s)", ylabel="bpm", title="Heart rate")
    imgs["heart"] = png_base64(fig, folder / "heart.png")
    plt.close(fig)
    return imgs


def _fmt(x: Any, unit: str = "", nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}{unit}"
    return f"{x}{unit}"


def incident_rows(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Report rows for a controller fallback and failed outputs (recorded events).

    Parameters
    ----------
    events : list of dict
        ``Session.events``.

    Returns
    -------
    rows : list of (str, str)
        ``("controller", ...)`` and ``("outputs that failed", ...)``.
    """
    falls = _series(events, "controller_fallback")
    ctrl = "its own throughout" if not falls else "; ".join(
        f"at {e['payload'].get('t_session', e['onset_sec']):.1f} s "
        f"{e['payload'].get('failed', '?')} failed ({e['payload'].get('error', '?')}); "
        f"then {e['payload'].get('now', '?')}" for e in falls)
    outs = _series(events, "output_failed")
    failed = "none" if not outs else "; ".join(
        f"{e['payload'].get('output', '?')} during {e['payload'].get('during', '?')}: "
        f"{e['payload'].get('error', '?')} (dropped)" for e in outs)
    return [("controller", ctrl), ("outputs that failed", failed)]


def control_table(events: list[dict[str, Any]]) -> str:
    """The control actions of the session (``control`` events) as an HTML section.

    Parameters
    ----------
    events : list of dict
        ``Session.events``.

    Returns
    -------
    html : str
        A heading and a table (time, action, value, source, what it did), or a line
        saying there were none.
    """
    rows = []
    for e in _series(events, "control"):
        p = e["payload"]
        value = p.get("value")
        shown = "" if value is None else (value if isinstance(value, str)
                                          else json.dumps(value, sort_keys=True))
        did = "; ".join(f"{k} {p[k]}" for k in ("previous", "transition") if k in p)
        t = p.get("t_session", e["onset_sec"])
        rows.append(f"<tr><td>{_fmt(float(t), nd=1)}</td>"
                    + "".join(f"<td>{html.escape(str(x))}</td>" for x in (
                        p.get("action", "?"), shown, p.get("source", "?"), did))
                    + "</tr>")
    if not rows:
        return ("<h2>Control actions</h2>\n<p>None: no one changed the session from the "
                "dashboard.</p>")
    return ("<h2>Control actions</h2>\n<p>What was changed during the session from the "
            "dashboard (recorded as <code>control</code> events): knob overrides, target "
            "changes, pause and resume, the stop, markers.</p>\n<table><tr><th>time (s)</th>"
            "<th>action</th><th>value</th><th>from</th><th>what it did</th></tr>\n"
            + "\n".join(rows) + "</table>")


def _html(name: str, summary: dict[str, Any], m: dict[str, Any], decisions: list[dict],
          imgs: dict[str, str], sess: Any, audio: Any = None) -> str:
    lat = summary.get("decision_latency_ms", {})
    lead = summary.get("lead_time_sec", {})
    gaps = sum(1 for e in sess.events if e["kind"] == "gap")
    rows = [
        ("policy", summary.get("policy", "–")),
        ("board", summary.get("board", "–")),
        ("target", f"{summary.get('target', '–')} {summary.get('target_point', '')}"),
        ("phrases played", summary.get("phrases", "–")),
        ("music", _fmt(summary.get("music_sec"), " s", 1)),
        ("mean distance to target, last half", _fmt(m["distance_last_half"])),
        ("time to enter the target region (r = 0.2)",
         _fmt(m["time_to_target_sec"], " s", 1) if m["time_to_target_sec"] is not None
         else "never"),
        ("mean knob change per phrase", _fmt(m["knob_change_per_phrase"], nd=3)),
        ("signal lost", f"{m['signal_lost_events']} times, {m['signal_lost_sec']:.1f} s; "
                        f"{gaps} gaps in the recording"),
        ("decision latency p50 / p95", f"{_fmt(lat.get('p50'), ' ms', 1)} / "
                                       f"{_fmt(lat.get('p95'), ' ms', 1)}"),
        ("phrase lead time min / p5", f"{_fmt(lead.get('min'), ' s')} / "
                                      f"{_fmt(lead.get('p5'), ' s')}"
         + (" (accelerated clock: not measured)" if summary.get("accelerated") else "")),
        ("stopped by", summary.get("stop_reason", "–")),
        *incident_rows(sess.events),
        ("wall-clock", _fmt(summary.get("wall_sec"), " s", 1)),
    ]
    table = "\n".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                      for k, v in rows)
    dec_rows = "\n".join(
        f"<tr><td>{e['onset_sec']:.1f}</td><td>{html.escape(e['payload'].get('signal', ''))}"
        f"</td><td>{html.escape('; '.join(e['payload'].get('reasons', [])))}</td></tr>"
        for e in decisions)
    figs = "\n".join(f'<h2>{title}</h2>\n<img alt="{key}" src="data:image/png;base64,{imgs[key]}">'
                     for key, title in (("state", "State and target"), ("knobs", "Knobs"),
                                        ("bands", "Band powers"), ("heart", "Heart rate"),
                                        ("audio", "Audio features per phrase"))
                     if key in imgs)
    figs += "\n" + (_audio_table(audio) if audio is not None else "")
    if audio is not None:  # target changes as heard
        from st_agent.live.phrase_audio import target_change_html

        figs += "\n" + target_change_html(audio)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Session {html.escape(name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>Session {html.escape(name)}</h1>
<p>Subject {html.escape(sess.meta.subject_id)} (pseudonym), session {html.escape(
        sess.meta.session_id)}, recorded {html.escape(sess.meta.created_utc)}.</p>
<h2>Summary</h2><table>{table}</table>
{figs}
<h2>Decisions and their reasons</h2>
<table><tr><th>time (s)</th><th>signal</th><th>why the knobs moved</th></tr>
{dec_rows}</table>
{control_table(sess.events)}
</body></html>
"""
