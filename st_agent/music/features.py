"""What a rendered phrase is, measured from its MIDI alone (never copied from the knobs).

Tempo from the MIDI tempo events, density from the onsets, key and mode by
Krumhansl–Kessler key-finding on the duration-weighted pitch-class profile,
register and loudness from the notes.
"""

from __future__ import annotations

import numpy as np
import pretty_midi

from st_agent.music.meter import musical_span_sec
from st_agent.theory import find_key, key_name
from st_agent.types import MusicFeatures

__all__ = ["measure_features", "pitch_class_profile"]


def pitch_class_profile(instruments: list[pretty_midi.Instrument]) -> np.ndarray:
    """Duration-weighted pitch-class profile of the non-drum instruments.

    Parameters
    ----------
    instruments : list of pretty_midi.Instrument

    Returns
    -------
    profile : ndarray, shape (12,)
        Seconds of sounding notes per pitch class, C first.
    """
    w = np.zeros(12)
    for inst in instruments:
        if inst.is_drum:
            continue
        for n in inst.notes:
            w[n.pitch % 12] += max(n.end - n.start, 0.0)
    return w


def _melody_part(pm: pretty_midi.PrettyMIDI) -> pretty_midi.Instrument:
    """The instrument named ``"melody"``, else the first non-drum one with notes."""
    melody = next((i for i in pm.instruments if i.name == "melody" and i.notes), None)
    if melody is not None:
        return melody
    return next((i for i in pm.instruments if not i.is_drum and i.notes), pm.instruments[0])


def measure_features(pm: pretty_midi.PrettyMIDI) -> MusicFeatures:
    """Measure what a rendered phrase is, from its MIDI alone.

    Parameters
    ----------
    pm : pretty_midi.PrettyMIDI
        E.g. the output of :func:`~st_agent.music.arrangement.arrange`. The
        melody is the instrument named ``"melody"``, else the first non-drum
        instrument with notes.

    Returns
    -------
    features : MusicFeatures
        ``bpm``: time-weighted mean of the MIDI tempo events;
        ``duration_sec``: from the start of the first bar holding a note to the
        end of the last (see :func:`~st_agent.music.meter.musical_span_sec`);
        ``notes_per_sec``: distinct onsets per second, summed over instruments
        (a struck chord is one onset); ``notes_per_beat``: distinct melody
        onsets per quarter note; ``mode``/``key``/``mode_confidence``:
        :func:`~st_agent.theory.find_key` on the duration-weighted pitch-class
        profile of all parts; ``mean_pitch``, ``pitch_range``: of the melody;
        ``mean_velocity``: of all notes; ``n_notes``: notes of all instruments.
        A MIDI without notes gives zeros and key ``"none"``.
    """
    if not isinstance(pm, pretty_midi.PrettyMIDI):
        raise TypeError(f"pm must be a pretty_midi.PrettyMIDI, got {type(pm).__name__}")
    notes = [n for inst in pm.instruments for n in inst.notes]
    start_sec, end_sec = musical_span_sec(pm)
    duration = max(end_sec - start_sec, 0.0)
    bpm = _mean_bpm(pm, start_sec, end_sec)
    if not notes or duration <= 0:
        return MusicFeatures(duration_sec=duration, bpm=bpm, notes_per_sec=0.0,
                             notes_per_beat=0.0, mode="major", mode_confidence=0.0,
                             key="none", mean_pitch=0.0, pitch_range=0.0, mean_velocity=0.0,
                             n_notes=0)
    melody = _melody_part(pm)
    quarters = (pm.time_to_tick(end_sec) - pm.time_to_tick(start_sec)) / pm.resolution
    onsets = {pm.time_to_tick(n.start) for n in melody.notes}
    n_onsets = sum(len({pm.time_to_tick(n.start) for n in inst.notes})
                   for inst in pm.instruments)
    tonic, family, conf = find_key(pitch_class_profile(pm.instruments))
    mel_pitch = np.array([n.pitch for n in melody.notes], dtype=float)
    return MusicFeatures(
        duration_sec=float(duration),
        bpm=bpm,
        notes_per_sec=float(n_onsets / duration),
        notes_per_beat=float(len(onsets) / quarters) if quarters > 0 else 0.0,
        mode=family,
        mode_confidence=conf,
        key=key_name(tonic, family),
        mean_pitch=float(mel_pitch.mean()),
        pitch_range=float(np.ptp(mel_pitch)),
        mean_velocity=float(np.mean([n.velocity for n in notes])),
        n_notes=len(notes),
    )


def _mean_bpm(pm: pretty_midi.PrettyMIDI, start_sec: float, end_sec: float) -> float:
    """Time-weighted mean tempo over ``[start_sec, end_sec]`` (quarter notes/min)."""
    times, tempi = pm.get_tempo_changes()
    if len(tempi) == 0:
        return 120.0  # the MIDI default when a file has no tempo event
    if end_sec <= start_sec or len(tempi) == 1:
        return float(tempi[0])
    edges = np.clip(np.append(times, end_sec), start_sec, end_sec)
    span = np.diff(edges)
    if span.sum() <= 0:
        return float(tempi[0])
    return float(np.sum(span * tempi) / span.sum())
