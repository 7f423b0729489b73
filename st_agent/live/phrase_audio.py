"""What each phrase of a session sounded like, measured from its ``session.wav``.

``session.wav`` starts at the first phrase's start (session clock; see
:class:`st_agent.live.audio.SessionWavOutput`); phrase ``k`` is the audio from
its ``phrase_start`` (``t_session``) to the next phrase's start, the last one
to the end of the file (its release and the fade-out included). Each segment is
measured with :func:`st_agent.music.audio_features.measure_audio` (loudness in
LUFS, spectral centroid, flux, onset rate), and each phrase's change from the
previous one is put in words with
:func:`~st_agent.music.audio_features.describe_change` ("louder (+3.1 LU),
brighter (+420.0 Hz centroid)"). The report (:mod:`st_agent.live.report`) shows
them as a table and ``audio.png``; they are also written to
``phrase_audio.json``.
"""

from __future__ import annotations

import logging
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.music.audio_features import (
    AudioFeatures,
    describe_change,
    feature_distance,
    measure_audio,
    quantisation_shift,
)

__all__ = ["ListenerHearing", "PhraseAudio", "SessionAudio", "measure_session_audio",
           "plot_phrase_audio", "target_change_html", "target_change_steps"]

logger = logging.getLogger(__name__)

_MIN_SEC = 0.4  # measure_audio's shortest input


@dataclass(frozen=True)
class PhraseAudio:
    """One phrase as heard.

    Parameters
    ----------
    index : int
        Phrase index (``phrase_start`` event).
    start_sec, end_sec : float
        Its segment of session.wav, seconds from the file's start.
    knobs : tuple of float
        (valence, tempo, energy) it was composed at.
    reason : str
        Why the knobs were what they were (the decision's words).
    features : AudioFeatures or None
        None when the segment is shorter than 0.4 s.
    heard : str
        The features that changed most from the previous measured phrase, above
        the noise floor.
    noise_floor : tuple of float or None
        This phrase's :func:`~st_agent.music.audio_features.quantisation_shift`
        (coordinate units, per feature); a change between two phrases is
        reported only above the sum of theirs.
    step : float or None
        Distance in audio-feature coordinates from the previous measured phrase.
    programs : dict of str to int or None
        General MIDI program of each part as it played (``phrase_start``'s
        ``programs``; None in recordings made before they were recorded).
    """

    index: int
    start_sec: float
    end_sec: float
    knobs: tuple[float, ...]
    reason: str
    features: AudioFeatures | None
    heard: str
    noise_floor: tuple[float, ...] | None = None
    step: float | None = None
    programs: dict[str, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, for JSON."""
        return {"index": self.index, "start_sec": self.start_sec, "end_sec": self.end_sec,
                "knobs": list(self.knobs), "reason": self.reason, "heard": self.heard,
                "features": None if self.features is None else self.features.as_dict(),
                "noise_floor": None if self.noise_floor is None else list(self.noise_floor),
                "step": self.step, "programs": self.programs}

    def instruments(self) -> str:
        """The parts and their General MIDI instruments in words ("" when unknown), e.g.
        ``"melody: String Ensemble 2, bass: Acoustic Bass (finger), ..."``."""
        import pretty_midi

        if not self.programs:
            return ""
        return ", ".join(f"{part}: " + (pretty_midi.program_to_instrument_name(p)
                                        if 0 <= p <= 127 else f"drums {p - 128}")
                         for part, p in self.programs.items())


@dataclass
class SessionAudio:
    """Every phrase as heard, what measuring them cost, and each target change's steps
    (:func:`target_change_steps`)."""

    phrases: list[PhraseAudio] = field(default_factory=list)
    sample_rate: int = 0
    ms_per_phrase: float = float("nan")  # wall time of measure_audio per phrase
    target_changes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, for JSON (``ms_per_phrase`` None when nothing was measured)."""
        ms = self.ms_per_phrase
        return {"sample_rate": self.sample_rate,
                "ms_per_phrase": None if not np.isfinite(ms) else float(ms),
                "phrases": [p.as_dict() for p in self.phrases],
                "target_changes": self.target_changes}


#: Sample width in bytes -> little-endian dtype of the integer PCM read with :mod:`wave`.
_PCM_DTYPES = {2: "<i2", 4: "<i4"}


class _MonoSegments:
    """A session WAV read one segment at a time: samples in [-1, 1], stereo averaged.

    Integer PCM (what sessions write) is read with :mod:`wave`, one segment's frames
    at a time, so a long session (2 h of stereo is 1.3 GB of 16-bit samples) is
    measured in a phrase's worth of memory; other WAVs (float) are memory-mapped
    with SciPy and only the segment asked for is converted.
    """

    def __init__(self, path: Path) -> None:
        self._wave: wave.Wave_read | None = None
        self._mapped: np.ndarray | None = None
        try:
            w = wave.open(str(path), "rb")
        except (wave.Error, EOFError):  # float or extensible WAV: SciPy reads those
            w = None
        if w is not None and w.getsampwidth() in _PCM_DTYPES:
            self._wave, self.rate = w, int(w.getframerate())
            self.n_frames, self._channels = int(w.getnframes()), int(w.getnchannels())
            self._dtype = np.dtype(_PCM_DTYPES[w.getsampwidth()])
            self._scale = float(np.iinfo(self._dtype).max)
            return
        if w is not None:
            w.close()
        from scipy.io import wavfile

        rate, self._mapped = wavfile.read(path, mmap=True)
        self.rate, self.n_frames = int(rate), int(self._mapped.shape[0])
        dtype = self._mapped.dtype
        self._scale = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0

    def __call__(self, a: int, b: int) -> np.ndarray:
        """Frames ``a:b`` as mono float64, shape (b - a,)."""
        if self._wave is not None:
            self._wave.setpos(a)
            raw = np.frombuffer(self._wave.readframes(b - a), dtype=self._dtype)
            seg = raw.reshape(-1, self._channels)
        else:
            seg = self._mapped[a:b]
        mono = seg.mean(axis=1) if seg.ndim == 2 else seg.astype(np.float64)
        return mono / self._scale if self._scale != 1.0 else mono

    def close(self) -> None:
        """Close the file (it can then be replaced or deleted)."""
        if self._wave is not None:
            self._wave.close()
        self._wave = self._mapped = None


def measure_session_audio(wav: str | Path, events: list[dict[str, Any]]) -> SessionAudio:
    """Measure each phrase's segment of a session's WAV.

    Parameters
    ----------
    wav : str or Path
        The session's ``session.wav`` (16-bit PCM or float, mono or stereo).
    events : list of dict
        The recording's events (``Session.events``); the ``phrase_start`` ones
        give each phrase's start (``payload["t_session"]``, else the onset),
        knobs and reason.

    Returns
    -------
    audio : SessionAudio
        Empty when there is no phrase or the file is missing.

    Raises
    ------
    ValueError
        When ``wav`` is not a WAV file scipy reads.
    """
    path = Path(wav)
    starts = sorted((e for e in events if e["kind"] == "phrase_start"),
                    key=lambda e: e["payload"].get("index", 0))
    if not starts or not path.is_file():
        return SessionAudio()
    segments = _MonoSegments(path)
    try:
        out = _measure_phrases(segments, starts)
    finally:
        segments.close()
    out.target_changes = target_change_steps(out, events)
    logger.info("audio features of %d phrases: %.1f ms per phrase",
                sum(p.features is not None for p in out.phrases), out.ms_per_phrase)
    return out


def _measure_phrases(segments: _MonoSegments, starts: list[dict[str, Any]]) -> SessionAudio:
    """Features, noise floor and change description of each phrase's segment."""
    rate, n_frames = segments.rate, segments.n_frames
    t = [float(e["payload"].get("t_session", e["onset_sec"])) for e in starts]
    t0 = t[0]
    bounds = [*(ti - t0 for ti in t), n_frames / rate]
    out = SessionAudio(sample_rate=rate)
    prev: tuple[AudioFeatures, np.ndarray] | None = None
    spent, n = 0.0, 0
    rng = np.random.default_rng(0)  # the dither of the noise-floor measurement
    for k, e in enumerate(starts):
        a, b = (min(n_frames, max(0, round(s * rate))) for s in bounds[k:k + 2])
        feats, floor, step = None, None, None
        heard = "too short to measure"
        if b - a >= round(_MIN_SEC * rate):
            seg = segments(a, b)
            tic = time.perf_counter()
            feats = measure_audio(seg, rate)
            spent += time.perf_counter() - tic
            n += 1
            floor = quantisation_shift(seg, rate, rng, measured=feats)
            heard = "first phrase"
            if prev is not None:
                heard = describe_change(prev[0], feats, noise_floor=prev[1] + floor)
                step = feature_distance(prev[0], feats)
            prev = (feats, floor)
        out.phrases.append(PhraseAudio(int(e["payload"].get("index", k)), a / rate, b / rate,
                                       tuple(e["payload"].get("knobs", ())),
                                       str(e["payload"].get("reason", "")), feats, heard,
                                       None if floor is None else tuple(floor.tolist()), step,
                                       e["payload"].get("programs")))
    out.ms_per_phrase = 1e3 * spent / n if n else float("nan")
    return out


class ListenerHearing:
    """What a virtual listener that hears the audio is given with each phrase.

    With ``--listener-hears audio`` each phrase's MIDI is synthesised (FluidSynth,
    the session's SoundFont, at the synthesiser's own level as in the fit of
    :data:`st_agent.listener.features.AUDIO_VIEW`) and measured
    (:func:`~st_agent.music.audio_features.measure_audio`) when it starts; the
    listener's loudness and density come from it
    (:func:`st_agent.listener.features.heard_features`).

    With the session sound (``sound="session"``, :mod:`st_agent.live.session_sound`)
    the listener hears the phrase's session instruments with the session's reverb
    and chorus, rendered in stereo and downmixed to mono explicitly (the mean of
    left and right, :func:`~st_agent.live.session_sound.downmix`: the audio
    features are mono), still at the synthesiser's own level: the audio view's
    loudness map was fitted at that level (-39.8 LUFS for the average phrase), and
    the matched loudness of ``session.wav`` (-26 to -18 LUFS, a function of the
    energy knob alone) would put every phrase past the fitted range.

    Parameters
    ----------
    hearing : {"midi", "audio"}
    soundfont : path or None
    sound : {"plain", "session"}
    """

    def __init__(self, hearing: str = "midi", soundfont: Any = None,
                 sound: str = "plain") -> None:
        from st_agent.listener.features import HEARING
        from st_agent.live.session_sound import check_sound

        if hearing not in HEARING:
            raise ValueError(f"--listener-hears must be one of {HEARING}, got {hearing!r}")
        self.hearing, self.soundfont = hearing, soundfont
        self.sound = check_sound(sound, "sound")
        self._synth: Any = None
        self.ms: list[float] = []  # synthesis + measurement time per phrase

    def audio_of(self, source: Any, pm: Any) -> dict[str, AudioFeatures]:
        """``{"audio": features}`` for a listener that hears audio, else ``{}``."""
        inner = getattr(source, "inner", source)
        if self.hearing != "audio" or getattr(inner, "hearing", "midi") != "audio":
            return {}
        from st_agent.live.session_sound import downmix, player_settings
        from st_agent.music.render import AudioRenderer

        if self._synth is None:
            session = self.sound == "session"
            self._synth = AudioRenderer(self.soundfont, stereo=session,
                                        settings=player_settings(self.sound))
        tic = time.perf_counter()
        x = np.asarray(downmix(self._synth.synthesize(pm)), dtype=np.float64)
        if x.size < round(_MIN_SEC * self._synth.sample_rate):
            return {}
        feats = measure_audio(x, self._synth.sample_rate)
        self.ms.append(1e3 * (time.perf_counter() - tic))
        return {"audio": feats}

    def close(self) -> None:
        """Release the synthesiser (safe to call twice)."""
        if self._synth is not None:
            self._synth.close()
            self._synth = None


def target_change_steps(audio: SessionAudio, events: list[dict[str, Any]]
                        ) -> list[dict[str, Any]]:
    """Each target change of the session as heard (:mod:`st_agent.live.target_change`).

    The path's phrases are the ``steps`` phrases that start after the
    ``target_change`` event; the steps measured are those from the phrase
    playing at the change to the path's last phrase (in session.wav).

    Returns
    -------
    changes : list of dict
        ``old``, ``new``, ``t_session``, ``bound`` (``max_step``), ``phrases``
        (indices of the path), ``measured_steps``, ``largest_step`` (None when
        a phrase could not be measured), ``predicted_largest``,
        ``direct_jump_predicted``, ``end_knobs``, ``complete`` (every step of
        the path played before the session ended) and ``arrived`` (the last
        phrase of the path is at the end knobs).
    """
    by_index = {p.index: p for p in audio.phrases}
    starts = sorted(((e["payload"].get("t_session", e["onset_sec"]), e["payload"].get("index"))
                     for e in events if e["kind"] == "phrase_start"), key=lambda r: r[1])
    out = []
    for e in events:
        if e["kind"] != "target_change":
            continue
        p = e["payload"]
        path = [i for t, i in starts if t > p["t_session"]][:int(p["steps"])]
        idx = [path[0] - 1, *path] if path else []
        steps = [by_index[i].step if i in by_index else None for i in idx[1:]]
        last = by_index.get(path[-1]) if path else None
        arrived = bool(last is not None and np.allclose(last.knobs, p["end_knobs"], atol=1e-6))
        out.append({"old": p["old"], "new": p["new"], "t_session": p["t_session"],
                    "bound": p["max_step"], "phrases": path, "measured_steps": steps,
                    "largest_step": None if not steps or None in steps else max(steps),
                    "predicted_largest": p["predicted_largest"],
                    "direct_jump_predicted": p["direct_jump_predicted"],
                    "end_knobs": p["end_knobs"], "complete": len(path) == int(p["steps"]),
                    "arrived": arrived})
    return out


def target_change_html(audio: SessionAudio) -> str:
    """The report's table of target changes ("" when the target never changed)."""
    import html

    if not audio.target_changes:
        return ""
    rows = []
    for c in audio.target_changes:
        steps = ", ".join("–" if s is None else f"{s:.2f}" for s in c["measured_steps"])
        big = "–" if c["largest_step"] is None else f"{c['largest_step']:.2f}"
        rows.append(f"<tr><td>{c['t_session']:.0f}</td><td>{html.escape(c['old'])} → "
                    f"{html.escape(c['new'])}</td><td>{len(c['phrases'])}</td><td>{steps}</td>"
                    f"<td>{big}</td><td>{c['bound']:g}</td>"
                    f"<td>{c['direct_jump_predicted']:.2f}</td>"
                    f"<td>{'yes' if c['arrived'] else 'no'}</td></tr>")
    return ("<h2>Target changes</h2>\n<p>At each change the knobs followed a planned path "
            "(st_agent.live.target_change); steps are distances in audio-feature units "
            "between consecutive phrases of session.wav, from the phrase playing at the "
            "change.</p>\n<table><tr><th>at (s)</th><th>change</th><th>phrases</th>"
            "<th>measured steps</th><th>largest</th><th>bound</th>"
            "<th>straight jump (predicted)</th><th>arrived</th></tr>\n" + "\n".join(rows)
            + "</table>")


def plot_phrase_audio(audio: SessionAudio, path: Path) -> str:
    """Loudness, centroid, flux and onset rate per phrase; saved to ``path``.

    Returns
    -------
    png : str
        The PNG, base64 (as :func:`st_agent.live.common.png_base64`).
    """
    import matplotlib.pyplot as plt

    from st_agent.live.common import png_base64

    done = [p for p in audio.phrases if p.features is not None]
    panels = (("loudness_lufs", "LUFS", "tab:red"), ("spectral_centroid_hz", "centroid (Hz)",
                                                     "tab:orange"),
              ("spectral_flux", "flux", "tab:green"), ("onset_rate_hz", "onsets/s", "tab:blue"))
    fig, axes = plt.subplots(1, 4, figsize=(12, 2.6))
    t = [p.start_sec for p in done]
    for ax, (name, label, color) in zip(axes, panels, strict=True):
        ax.step(t, [getattr(p.features, name) for p in done], where="post", color=color)
        ax.plot(t, [getattr(p.features, name) for p in done], "o", color=color, ms=3)
        ax.set(xlabel="time in session.wav (s)", title=label)
    fig.suptitle("What each phrase sounded like (measured from session.wav)", fontsize=10)
    fig.tight_layout()
    img = png_base64(fig, path)
    plt.close(fig)
    return img
