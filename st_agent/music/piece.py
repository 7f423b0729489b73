"""A piece made phrase by phrase: compose, render, synthesise, measure, write out.

Shared by ``st-agent sonify`` and ``st-agent transition``. Each phrase is
composed with the previous one as context (:class:`~st_agent.music.composer.Composer`),
rendered with :func:`~st_agent.music.render.render_phrase`, measured from its MIDI
(:func:`~st_agent.music.render.measure_features`) and from its audio
(:func:`~st_agent.music.audio_features.measure_audio`, on the synthesised
samples before any normalisation, so phrase loudness is comparable). The
piece is written as one MIDI (phrases end to end), one ABC tune (a line per
phrase, inline tempo and key changes) and one WAV (the phrases' audio end to
end, the loudest sample at -1 dBFS).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.music.audio_features import AudioFeatures, measure_audio
from st_agent.types import Knobs, MusicFeatures, Phrase

__all__ = ["PhrasePlayer", "Rendered", "join_midi", "phrase_rows", "score_abc", "write_json",
           "write_piece_wav"]

logger = logging.getLogger(__name__)


@dataclass
class Rendered:
    """One phrase as composed, rendered, heard and measured.

    Parameters
    ----------
    knobs : Knobs
    phrase : Phrase
    pm : pretty_midi.PrettyMIDI
        The arranged phrase (melody, bass, chords).
    midi : MusicFeatures
        Measured from ``pm``.
    audio : AudioFeatures
        Measured from ``samples``.
    samples : ndarray of float32, shape (n_samples,)
        Mono audio at the renderer's rate, as synthesised (not normalised).
    seed : int
        Composer seed.
    extract_sec : float
        Time spent measuring the audio features, seconds.
    info : dict
        Free annotations (reason, plan, explanation).
    """

    knobs: Knobs
    phrase: Phrase
    pm: Any
    midi: MusicFeatures
    audio: AudioFeatures
    samples: np.ndarray
    seed: int
    extract_sec: float
    info: dict = field(default_factory=dict)

    @property
    def duration_sec(self) -> float:
        """Length of the phrase's audio, seconds."""
        return self.audio.duration_sec


class PhrasePlayer:
    """Compose, render, synthesise and measure phrases, one after another.

    Parameters
    ----------
    composer : Composer
    synth : AudioRenderer
        An open renderer (its sample rate is the audio's).

    Examples
    --------
    >>> with AudioRenderer() as synth:                              # doctest: +SKIP
    ...     player = PhrasePlayer(Composer(), synth)
    ...     first = player.play(Knobs(0.6, 0.1, 0.1), seed=0)
    ...     second = player.play(Knobs(0.6, 0.2, 0.2), seed=1, context=first)
    """

    def __init__(self, composer: Any, synth: Any) -> None:
        self.composer = composer
        self.synth = synth

    @property
    def sample_rate(self) -> int:
        """Hz."""
        return int(self.synth.sample_rate)

    def play(self, knobs: Knobs, seed: int, context: Rendered | None = None) -> Rendered:
        """One phrase under ``knobs`` that continues ``context``.

        Parameters
        ----------
        knobs : Knobs
        seed : int
            Composer seed.
        context : Rendered, optional
            The previous phrase.

        Returns
        -------
        rendered : Rendered
        """
        from st_agent.music.render import measure_features, render_phrase

        phrase = self.composer.compose(knobs, context=context.phrase if context else None,
                                       seed=int(seed))
        pm = render_phrase(phrase.abc, phrase.key, phrase.knobs, meter=phrase.meter)
        samples = self.synth.synthesize(pm)
        t0 = time.perf_counter()
        audio = measure_audio(samples, self.sample_rate)
        extract = time.perf_counter() - t0
        return Rendered(knobs, phrase, pm, measure_features(pm), audio, samples, int(seed),
                        extract)

    def play_all(self, knobs: Sequence[Knobs], seed: int = 0) -> list[Rendered]:
        """Phrases under each of ``knobs`` in turn (phrase ``i`` with seed ``seed + i``)."""
        out: list[Rendered] = []
        for i, k in enumerate(knobs):
            out.append(self.play(k, seed + i, out[-1] if out else None))
            logger.info("phrase %d/%d %r: %.1f s", i + 1, len(knobs), k, out[-1].duration_sec)
        return out


def join_midi(items: Sequence[Rendered]) -> Any:
    """One PrettyMIDI of the piece: each phrase after the previous one's audio ends."""
    import pretty_midi

    out = pretty_midi.PrettyMIDI(initial_tempo=items[0].phrase.bpm if items else 120.0)
    by_key: dict[tuple[int, bool, str], pretty_midi.Instrument] = {}
    shift = 0.0
    for it in items:
        for inst in it.pm.instruments:
            k = (inst.program, inst.is_drum, inst.name)
            if k not in by_key:
                by_key[k] = pretty_midi.Instrument(inst.program, inst.is_drum, inst.name)
                out.instruments.append(by_key[k])
            by_key[k].notes.extend(pretty_midi.Note(n.velocity, n.pitch, n.start + shift,
                                                    n.end + shift) for n in inst.notes)
        shift += it.duration_sec
    return out


def score_abc(phrases: Sequence[Phrase], title: str, comments: Sequence[str] = ()) -> str:
    """The phrases as one ABC tune: a line per phrase, inline ``Q:``/``K:``/``M:`` changes.

    Parameters
    ----------
    phrases : sequence of Phrase
    title : str
        ``T:`` field.
    comments : sequence of str, optional
        One ``%`` comment line before each phrase (e.g. its knobs and reason).

    Returns
    -------
    abc : str
    """
    if not phrases:
        raise ValueError("phrases is empty: nothing to write")
    first = phrases[0]
    lines = ["X:1", f"T:{title}", f"M:{first.meter}", f"L:{first.unit}",
             f"Q:1/4={round(first.bpm)}", f"K:{first.key}"]
    key, bpm, meter = first.key, round(first.bpm), first.meter
    for i, ph in enumerate(phrases):
        if i < len(comments) and comments[i]:
            lines.append(f"% {comments[i]}")
        head = ""
        if ph.meter != meter:
            head, meter = head + f"[M:{ph.meter}]", ph.meter
        if round(ph.bpm) != bpm:
            head, bpm = head + f"[Q:1/4={round(ph.bpm)}]", round(ph.bpm)
        if ph.key != key:
            head, key = head + f"[K:{ph.key}]", ph.key
        lines.append(head + ph.body.strip())
    return "\n".join(lines) + "\n"


def write_piece_wav(path: Path, chunks: Sequence[np.ndarray], sample_rate: int,
                    peak: float = 0.89) -> Path:
    """Audio chunks end to end as a 16-bit mono WAV, the loudest sample at ``peak``.

    Parameters
    ----------
    path : Path
    chunks : sequence of ndarray, each shape (n_i,)
        Float samples in [-1, 1].
    sample_rate : int
        Hz.
    peak : float
        Fraction of full scale of the loudest sample, in (0, 1].

    Returns
    -------
    path : Path
    """
    from scipy.io import wavfile

    if not 0.0 < peak <= 1.0:
        raise ValueError(f"peak must be in (0, 1], got {peak!r}")
    audio = np.concatenate([np.asarray(c, dtype=np.float32) for c in chunks]) if chunks \
        else np.zeros(0, dtype=np.float32)
    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    if top > 0:
        audio = audio * (peak / top)
    wavfile.write(path, int(sample_rate), np.round(audio * 32767).astype(np.int16))
    return path


def phrase_rows(items: Sequence[Rendered]) -> list[dict[str, Any]]:
    """One JSON-ready row per phrase: start, knobs, MIDI and audio features, annotations."""
    rows, start = [], 0.0
    for i, it in enumerate(items):
        rows.append({"index": i, "start_sec": round(start, 3), "seed": it.seed,
                     "knobs": dict(zip(("valence", "tempo", "energy"), it.knobs.as_tuple(),
                                       strict=True)),
                     "key": it.phrase.key, "midi": it.midi.as_dict(),
                     "audio": it.audio.as_dict(), "audio_extract_sec": it.extract_sec,
                     **it.info})
        start += it.duration_sec
    return rows


def write_json(path: Path, obj: Any) -> Path:
    """``obj`` as indented JSON (numpy scalars and arrays converted)."""
    def conv(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"cannot write {type(o).__name__} as JSON")

    path.write_text(json.dumps(obj, indent=2, default=conv) + "\n", encoding="utf-8")
    return path
