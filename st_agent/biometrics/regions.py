"""EEG channels grouped into scalp regions by their 10-20/10-10 names.

A name is read as a 10-20/10-10 position after dropping prefixes (``EEG``),
reference suffixes (``-REF``, ``-A1``), trailing dots and case: ``"EEG Fp1"``,
``"Fc5."`` and ``"FP1-REF"`` are ``FP1``, ``FC5`` and ``FP1``. The letters give the
lobe and the number the side (odd left, even right, ``z`` midline), following
the 10-20 system (Jasper 1958; the 10-10 extension of Chatrian et al. 1985):

==========  ===================================================
lobe        rows
==========  ===================================================
frontal     Fp, AF, F
central     FC, C, CP
temporal    FT, T, TP (and the old names T3, T4, T5, T6)
parietal    P
occipital   PO, O, I
==========  ===================================================

FC and CP (between rows) go to central, an assumption, unsourced. Reference
and landmark positions (A1, A2, M1, M2, Nz) belong to no region.

This module imports only the standard library, so the command line and
:mod:`st_agent.live.brain_voices` can check a montage before reading any data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LOBES", "Region", "channel_position", "group_channels", "position_name"]

#: Lobes in front-to-back order (the order of the regions returned).
LOBES = ("frontal", "central", "temporal", "parietal", "occipital")
_ROW_LOBE = {"FP": "frontal", "AF": "frontal", "F": "frontal",
             "FC": "central", "C": "central", "CP": "central",
             "FT": "temporal", "T": "temporal", "TP": "temporal",
             "P": "parietal", "PO": "occipital", "O": "occipital", "I": "occipital"}
_OLD_TEMPORAL = {"T3", "T4", "T5", "T6"}
_NO_REGION = {"A1", "A2", "M1", "M2", "NZ"}
_LABEL_RE = re.compile(r"(FP|AF|FC|FT|TP|CP|PO|F|C|T|P|O|I|N|A|M)(Z|[1-9]|10)")


def position_name(name: str) -> str | None:
    """The 10-20/10-10 label of a channel name, upper case, or None.

    Parameters
    ----------
    name : str
        As the file or device spells it.

    Returns
    -------
    label : str or None
        ``"FP1"``, ``"FC5"``, ``"CZ"`` ...; None when the name is not a position.

    Examples
    --------
    >>> position_name("EEG Fp1"), position_name("Fc5."), position_name("ECG ECG")
    ('FP1', 'FC5', None)
    """
    s = name.strip().upper()
    s = re.sub(r"^(EEG|EXG)[\s_:\-]*", "", s).strip(" ._-")
    s = re.split(r"[\s\-_/:]", s, maxsplit=1)[0].rstrip(".")
    return s if _LABEL_RE.fullmatch(s) else None


def channel_position(name: str) -> tuple[str, str] | None:
    """``(lobe, side)`` of a channel, side ``"left"``, ``"right"`` or ``"midline"``.

    Returns None for names that are not positions and for reference or
    landmark positions (A1, A2, M1, M2, Nz).

    Examples
    --------
    >>> channel_position("EEG O1"), channel_position("Cz"), channel_position("T4")
    (('occipital', 'left'), ('central', 'midline'), ('temporal', 'right'))
    """
    label = position_name(name)
    if label is None or label in _NO_REGION:
        return None
    m = _LABEL_RE.fullmatch(label)
    assert m is not None
    row, num = m.group(1), m.group(2)
    lobe = "temporal" if label in _OLD_TEMPORAL else _ROW_LOBE.get(row)
    if lobe is None:
        return None
    side = "midline" if num == "Z" else ("left" if int(num) % 2 else "right")
    return lobe, side


@dataclass(frozen=True)
class Region:
    """A named group of EEG channels.

    Parameters
    ----------
    name : str
        ``"frontal"`` or, split by hemisphere, ``"left frontal"``.
    lobe : str
    channels : tuple of int
        Indices into the recording's channels.
    names : tuple of str
        Their names as the recording spells them.
    """

    name: str
    lobe: str
    channels: tuple[int, ...]
    names: tuple[str, ...]


def group_channels(ch_names: Sequence[str], ch_types: Sequence[str] | None = None,
                   hemispheres: bool = False, where: str = "the recording") -> list[Region]:
    """Group EEG channels into regions by their 10-20 names.

    Parameters
    ----------
    ch_names : sequence of str
        Channel names.
    ch_types : sequence of str, optional
        Channel types; only ``"eeg"`` channels are grouped.
    hemispheres : bool
        Split each lobe into left and right (midline channels are left out).
    where : str
        What the channels belong to, for the error message.

    Returns
    -------
    regions : list of Region
        Non-empty regions, lobes front to back (left before right).

    Raises
    ------
    ValueError
        When no EEG channel has a 10-20/10-10 name (the message lists the
        channels and how to rename them).
    """
    if ch_types is not None and len(ch_types) != len(ch_names):
        raise ValueError(f"{len(ch_names)} channel names but {len(ch_types)} types")
    groups: dict[tuple[str, str], list[int]] = {}
    for i, name in enumerate(ch_names):
        if ch_types is not None and ch_types[i] != "eeg":
            continue
        pos = channel_position(name)
        if pos is None:
            continue
        lobe, side = pos
        key = (lobe, side if hemispheres else "")
        if hemispheres and side == "midline":
            continue
        groups.setdefault(key, []).append(i)
    if not groups:
        shown = ", ".join(list(ch_names)[:20]) + (" ..." if len(ch_names) > 20 else "")
        raise ValueError(
            f"no EEG channel of {where} has a 10-20/10-10 name (channels: {shown}), so none can "
            "be placed in a scalp region; rename the channels to positions such as Fp1, C3, O2 "
            "(MNE: raw.rename_channels({'EEG1': 'Fp1', ...}) then raw.save('renamed_raw.fif'))")
    regions = []
    for lobe in LOBES:
        for side in ("", "left", "right"):
            idx = groups.get((lobe, side))
            if idx:
                regions.append(Region(f"{side} {lobe}".strip(), lobe, tuple(idx),
                                      tuple(ch_names[i] for i in idx)))
    return regions
