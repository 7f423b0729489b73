"""Turn an ABC phrase into an arranged MIDI, its measured features, and sound.

The chain is ``ABC --abc2midi--> melody MIDI --arrange--> melody + bass + chords
--FluidSynth--> audio``; each step lives in its own module and is re-exported
here, so ``from st_agent.music.render import ...`` reaches all of them:

- :func:`render_phrase` converts a tune with ``abc2midi`` (:mod:`st_agent.music.abc`)
  and arranges it with :func:`~st_agent.music.arrangement.arrange`
  (:mod:`st_agent.music.arrangement`: bass, chords, :class:`ArrangementConfig`).
- :func:`~st_agent.music.features.measure_features` measures what the result
  really is (:mod:`st_agent.music.features`); :func:`parse_meter` and
  :func:`musical_span_sec` give the bar grid (:mod:`st_agent.music.meter`).
- :class:`AudioRenderer` synthesises audio offline and :class:`LivePlayer` plays
  in real time (:mod:`st_agent.music.synthesis`, FluidSynth).

Times are in seconds (``*_sec``), musical positions in quarter notes (``*_q``),
pitches in MIDI note numbers, velocities in MIDI units 0-127.
"""

from __future__ import annotations

import pretty_midi

from st_agent.music.abc import AbcError, abc_to_midi
from st_agent.music.arrangement import ArrangementConfig, arrange
from st_agent.music.features import measure_features
from st_agent.music.meter import musical_span_sec, parse_meter
from st_agent.music.synthesis import (
    FLUIDSYNTH_INSTALL_HINT,
    AudioDeviceError,
    AudioRenderer,
    LivePlayer,
    find_soundfont,
)
from st_agent.types import Knobs

__all__ = [
    "FLUIDSYNTH_INSTALL_HINT",
    "ArrangementConfig",
    "AudioDeviceError",
    "AudioRenderer",
    "LivePlayer",
    "arrange",
    "find_soundfont",
    "measure_features",
    "musical_span_sec",
    "parse_meter",
    "render_phrase",
]


def render_phrase(
    abc: str,
    key: str,
    knobs: Knobs,
    meter: str = "4/4",
    config: ArrangementConfig | None = None,
) -> pretty_midi.PrettyMIDI:
    """Convert an ABC tune with ``abc2midi`` and arrange it.

    Parameters
    ----------
    abc : str
        A complete tune (``X:``, ``M:``, ``L:``, ``Q:``, ``K:`` and body).
    key, knobs, meter, config
        As for :func:`~st_agent.music.arrangement.arrange`.

    Returns
    -------
    arranged : pretty_midi.PrettyMIDI
        Instruments ``"melody"``, ``"bass"``, ``"chords"``.

    Raises
    ------
    st_agent.music.abc.AbcError
        When the tune is refused or ``abc2midi`` rejects it, when it has no notes,
        or for a ``meter`` outside the bounds of :func:`parse_meter`.
    """
    parse_meter(meter)
    melody = abc_to_midi(abc)
    if not any(inst.notes for inst in melody.instruments):
        raise AbcError("the tune has no notes to arrange (only rests?); give at least one "
                       "note in the body")
    return arrange(melody, key, knobs, meter=meter, config=config)
