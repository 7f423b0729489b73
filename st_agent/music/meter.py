"""The bar grid of a phrase: ABC meters and the bars a MIDI's notes occupy.

Musical positions are in quarter notes (``*_q``), times in seconds (``*_sec``).
"""

from __future__ import annotations

import re

import pretty_midi

from st_agent.music.abc_safety import MAX_METER_NUMERATOR, METER_DENOMINATORS, AbcError

__all__ = ["musical_span_sec", "parse_meter"]


def parse_meter(meter: str) -> tuple[float, float, int]:
    """Read an ABC ``M:`` value.

    Parameters
    ----------
    meter : str
        ``"N/D"`` such as ``"4/4"``, ``"3/4"``, ``"6/8"``; ``"C"`` (4/4) or ``"C|"`` (2/2).

    Returns
    -------
    bar_q : float
        Bar length in quarter notes.
    beat_q : float
        Beat length in quarter notes (a dotted quarter in 6/8, 9/8, 12/8).
    beats_per_bar : int
        Beats in a bar.

    Raises
    ------
    TypeError
        When ``meter`` is not a str.
    st_agent.music.abc_safety.AbcError
        (a ``ValueError``) for any other meter, naming the allowed values.
    """
    if not isinstance(meter, str):
        raise TypeError(f"meter must be a str such as '4/4', got {type(meter).__name__}")
    text = {"C": "4/4", "C|": "2/2"}.get(meter.strip(), meter.strip())
    m = re.fullmatch(r"(\d{1,7})\s*/\s*(\d{1,7})", text)
    if (m is None or not 1 <= int(m.group(1)) <= MAX_METER_NUMERATOR
            or int(m.group(2)) not in METER_DENOMINATORS):
        raise AbcError(
            f"meter {meter[:40]!r} is not an ABC meter (or out of range); use 'N/D' with 1 <= N <= "
            f"{MAX_METER_NUMERATOR} and D in {', '.join(map(str, METER_DENOMINATORS))} "
            "(e.g. '4/4', '3/4', '6/8'), 'C' or 'C|'"
        )
    num, den = int(m.group(1)), int(m.group(2))
    bar_q = 4.0 * num / den
    if den >= 8 and num % 3 == 0 and num > 3:  # compound: beats are dotted
        return bar_q, 3 * 4.0 / den, num // 3
    return bar_q, 4.0 / den, num


def musical_span_sec(pm: pretty_midi.PrettyMIDI) -> tuple[float, float]:
    """Start of the first bar holding a note and end of the last one.

    Bars follow the MIDI time-signature events (4/4 when there are none) from
    time 0; a note counts as inside a bar unless it reaches past its bar line by
    more than a 64th note.

    Parameters
    ----------
    pm : pretty_midi.PrettyMIDI

    Returns
    -------
    start_sec, end_sec : float
        ``(0.0, 0.0)`` when there are no notes.
    """
    notes = [n for inst in pm.instruments for n in inst.notes]
    if not notes:
        return 0.0, 0.0
    res = pm.resolution
    first_tick = pm.time_to_tick(min(n.start for n in notes))
    last_tick = pm.time_to_tick(max(n.end for n in notes))
    tol = res / 16
    sigs = sorted(  # a 0/x or x/0 signature (a foreign file) counts as 4/4
        ((pm.time_to_tick(ts.time), ts.numerator, ts.denominator)
         if ts.numerator >= 1 and ts.denominator >= 1 else (pm.time_to_tick(ts.time), 4, 4)
         for ts in pm.time_signature_changes),
        key=lambda s: s[0],
    ) or [(0, 4, 4)]
    if sigs[0][0] > 0:
        sigs.insert(0, (0, 4, 4))
    tick, i, start_tick = 0.0, 0, None
    while True:
        while i + 1 < len(sigs) and sigs[i + 1][0] <= tick + tol:
            i += 1
        bar = 4.0 * res * sigs[i][1] / sigs[i][2]
        if start_tick is None and tick + bar > first_tick + tol:
            start_tick = tick
        if tick + tol >= last_tick and start_tick is not None:
            break
        tick += bar
    return pm.tick_to_time(round(start_tick)), pm.tick_to_time(round(tick))
