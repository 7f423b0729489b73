"""The music files of a session: the whole piece as one MIDI, one ABC score, one WAV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from st_agent.live.common import Playing

__all__ = ["join_phrases", "session_score", "write_session_wav", "write_wav"]


def join_phrases(played: list[Playing]) -> Any:
    """One PrettyMIDI of the whole session: each phrase shifted to its start."""
    import pretty_midi

    out = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    by_key: dict[tuple[int, bool, str], pretty_midi.Instrument] = {}
    t0 = played[0].start_sec
    for p in played:
        shift = p.start_sec - t0
        for inst in p.pm.instruments:
            k = (inst.program, inst.is_drum, inst.name)
            if k not in by_key:
                by_key[k] = pretty_midi.Instrument(inst.program, inst.is_drum, inst.name)
                out.instruments.append(by_key[k])
            dst = by_key[k]
            for n in inst.notes:
                dst.notes.append(pretty_midi.Note(n.velocity, n.pitch, n.start + shift,
                                                  n.end + shift))
    return out


def session_score(played: list[Playing], title: str = "st-agent session") -> str:
    """The session as one ABC tune: each phrase a line, with inline tempo and key changes."""
    lines = ["X:1", f"T:{title}"]
    if not played:
        return "\n".join([*lines, "M:4/4", "L:1/8", "K:C", "z8|"]) + "\n"
    first = played[0].phrase
    lines += [f"M:{first.meter}", f"L:{first.unit}",
              f"Q:1/4={round(first.bpm)}", f"K:{first.key}"]
    key, bpm, meter = first.key, round(first.bpm), first.meter
    for i, p in enumerate(played):
        ph = p.phrase
        k = ph.knobs
        lines.append(f"% phrase {i}: t={p.start_sec:.1f}s knobs valence {k.valence:.2f} "
                     f"tempo {k.tempo:.2f} energy {k.energy:.2f}")
        head = ""
        if ph.meter != meter:
            head += f"[M:{ph.meter}]"
            meter = ph.meter
        if round(ph.bpm) != bpm:
            head += f"[Q:1/4={round(ph.bpm)}]"
            bpm = round(ph.bpm)
        if ph.key != key:
            head += f"[K:{ph.key}]"
            key = ph.key
        lines.append(head + ph.body.strip())
    return "\n".join(lines) + "\n"


def write_session_wav(path: Path, played: list[Playing], music_sec: float, fade_sec: float,
                      soundfont: Path | None = None) -> Path:
    """The whole session as one WAV: the phrases at their times, cut at ``music_sec``,
    the last ``fade_sec`` faded out, the loudest sample at -1 dBFS."""
    from st_agent.music.render import AudioRenderer

    with AudioRenderer(soundfont) as synth:
        audio = synth.synthesize(join_phrases(played))
        n = min(audio.size, round(music_sec * synth.sample_rate))
        audio = audio[:n].copy()
        fade = min(n, round(fade_sec * synth.sample_rate))
        if fade:
            audio[n - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        write_wav(path, audio, synth.sample_rate)
    return path


def write_wav(path: Path, audio: np.ndarray, sample_rate: int, peak: float = 0.89) -> None:
    """Mono float audio to 16-bit PCM WAV, the loudest sample at ``peak`` of full scale
    (as :meth:`~st_agent.music.render.AudioRenderer.write_wav`).

    Parameters
    ----------
    path : Path
    audio : ndarray of float, shape (n_samples,)
    sample_rate : int
        Hz.
    peak : float
        Fraction of full scale of the loudest sample.
    """
    from scipy.io import wavfile

    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    if top > 0:
        audio = audio * (peak / top)
    wavfile.write(path, sample_rate, np.round(audio * 32767).astype(np.int16))
