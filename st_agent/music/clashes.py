"""How much a jam's voices clash: pitch-class masks on a sixteenth-note grid.

Clash measure (:func:`count_clashes`)
-------------------------------------
The music is sliced on a sixteenth-note grid (4 steps per quarter note). A
*simultaneity* is a grid step at which at least one performer voice starts a
note. It is *dissonant* when two notes of **different** performer voices
sounding at that step are a minor second, a tritone or a major seventh apart
as pitch classes (intervals 1, 6, 11 semitones mod 12; octave-equivalent, so
minor ninths count too). **Clashes per bar** is the number of dissonant
simultaneities divided by the number of bars. The shared accompaniment (bass,
chords) is left out: it follows the voices. A step is measured on pitch-class
bit masks (bit ``pc`` set when pitch class ``pc`` sounds), the same way for a
rendered MIDI (:func:`voice_masks`) and for the phrase bank of the fast jam
environment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pretty_midi

__all__ = ["DISSONANT_INTERVALS", "STEPS_PER_QUARTER", "count_clashes", "voice_masks"]

#: Pitch-class intervals (semitones mod 12) counted as clashes: m2, tritone, M7.
DISSONANT_INTERVALS = (1, 6, 11)
#: Grid of the clash measure: sixteenth notes.
STEPS_PER_QUARTER = 4

_PC = np.arange(12)
_ROT = np.array([[sum(1 << ((pc + d) % 12) for pc in _PC if m >> pc & 1) for m in range(4096)]
                 for d in DISSONANT_INTERVALS])
#: ``_DISSONANT_WITH[m]``: the pitch classes dissonant with any pitch class of mask ``m``.
_DISSONANT_WITH = np.bitwise_or.reduce(_ROT, axis=0).astype(np.int64)


def voice_masks(pm: pretty_midi.PrettyMIDI, instruments: Sequence[pretty_midi.Instrument],
                n_steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pitch-class bit masks of each voice on the sixteenth-note grid.

    Parameters
    ----------
    pm : pretty_midi.PrettyMIDI
        The MIDI the instruments belong to (its tempo map sets the grid).
    instruments : sequence of pretty_midi.Instrument
        The voices (V).
    n_steps : int, optional
        Grid length; default: up to the last note end.

    Returns
    -------
    sounding : ndarray of int64, shape (V, n_steps)
        Bit ``pc`` set when a note of pitch class ``pc`` sounds at the step's start.
    onset : ndarray of int64, shape (V, n_steps)
        Bit ``pc`` set when such a note starts on that step.
    """
    res = pm.resolution

    def step_of(t: float) -> float:
        return pm.time_to_tick(t) / res * STEPS_PER_QUARTER

    spans = [[(step_of(n.start), step_of(n.end), n.pitch % 12) for n in inst.notes]
             for inst in instruments]
    if n_steps is None:
        n_steps = max([math.ceil(e - 1e-3) for sp in spans for _, e, _ in sp] or [0])
    sounding = np.zeros((len(instruments), n_steps), dtype=np.int64)
    onset = np.zeros_like(sounding)
    for v, sp in enumerate(spans):
        for s, e, pc in sp:
            first = max(0, round(s))
            last = min(n_steps, math.ceil(e - 0.25))  # a note sounds on the steps it covers
            if first < n_steps:
                onset[v, first] |= 1 << pc
            if last > first:
                sounding[v, first:last] |= 1 << pc
    return sounding, onset


def count_clashes(sounding: np.ndarray, onset: np.ndarray) -> np.ndarray:
    """Dissonant simultaneities (module docstring) of one or many phrases.

    Parameters
    ----------
    sounding, onset : ndarray of int, shape (..., V, n_steps)
        Pitch-class masks per voice and grid step (:func:`voice_masks`).

    Returns
    -------
    count : ndarray of int, shape (...)
        Grid steps where some voice starts a note and two different voices
        sound pitch classes 1, 6 or 11 semitones apart.
    """
    s = np.asarray(sounding, dtype=np.int64)
    o = np.asarray(onset, dtype=np.int64)
    dis = _DISSONANT_WITH[s]  # (..., V, S)
    n_v = s.shape[-2]
    clash = np.zeros(s.shape[:-2] + s.shape[-1:], dtype=bool)
    for j in range(n_v):
        for k in range(j + 1, n_v):
            clash |= (s[..., j, :] & dis[..., k, :]) != 0
    any_onset = np.any(o != 0, axis=-2)
    return np.sum(clash & any_onset, axis=-1)
