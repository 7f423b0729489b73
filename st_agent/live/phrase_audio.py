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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.music.audio_features import AudioFeatures, describe_change, measure_audio

__all__ = ["PhraseAudio", "SessionAudio", "measure_session_audio", "plot_phrase_audio"]

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
        The features that changed most from the previous measured phrase.
    """

    index: int
    start_sec: float
    end_sec: float
    knobs: tuple[float, ...]
    reason: str
    features: AudioFeatures | None
    heard: str

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, for JSON."""
        return {"index": self.index, "start_sec": self.start_sec, "end_sec": self.end_sec,
                "knobs": list(self.knobs), "reason": self.reason, "heard": self.heard,
                "features": None if self.features is None else self.features.as_dict()}


@dataclass
class SessionAudio:
    """Every phrase as heard, and what measuring them cost."""

    phrases: list[PhraseAudio] = field(default_factory=list)
    sample_rate: int = 0
    ms_per_phrase: float = float("nan")  # wall time of measure_audio per phrase

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, for JSON (``ms_per_phrase`` None when nothing was measured)."""
        ms = self.ms_per_phrase
        return {"sample_rate": self.sample_rate,
                "ms_per_phrase": None if not np.isfinite(ms) else float(ms),
                "phrases": [p.as_dict() for p in self.phrases]}


def _read_mono(path: Path) -> tuple[np.ndarray, int]:
    """Samples in [-1, 1] (stereo averaged), shape (n_samples,), and the rate in Hz."""
    from scipy.io import wavfile

    rate, x = wavfile.read(path, mmap=True)
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = x.astype(np.float32, copy=False)
    return (x.mean(axis=1) if x.ndim == 2 else x), int(rate)


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
    x, rate = _read_mono(path)
    t = [float(e["payload"].get("t_session", e["onset_sec"])) for e in starts]
    t0 = t[0]
    bounds = [*(ti - t0 for ti in t), x.size / rate]
    out = SessionAudio(sample_rate=rate)
    prev: AudioFeatures | None = None
    spent, n = 0.0, 0
    for k, e in enumerate(starts):
        a, b = (min(x.size, max(0, round(s * rate))) for s in bounds[k:k + 2])
        feats = None
        if b - a >= round(_MIN_SEC * rate):
            tic = time.perf_counter()
            feats = measure_audio(np.asarray(x[a:b], dtype=np.float64), rate)
            spent += time.perf_counter() - tic
            n += 1
        heard = ("first phrase" if prev is None else describe_change(prev, feats)) \
            if feats is not None else "too short to measure"
        out.phrases.append(PhraseAudio(int(e["payload"].get("index", k)), a / rate, b / rate,
                                       tuple(e["payload"].get("knobs", ())),
                                       str(e["payload"].get("reason", "")), feats, heard))
        prev = feats if feats is not None else prev
    out.ms_per_phrase = 1e3 * spent / n if n else float("nan")
    logger.info("audio features of %d phrases: %.1f ms per phrase", n, out.ms_per_phrase)
    return out


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
