"""Channel names and roles: which rows of a stream are EEG, where alpha is, which are eyes.

The estimator works on any montage. :func:`normalize_ch_name` maps a device's
channel names onto 10-20/10-10 labels; :func:`montage` decides, once per
channel layout, which channels play which part:

=====================  ==================================================================
role                   channels (first rule the montage satisfies)
=====================  ==================================================================
scalp EEG              every ``eeg`` channel except reference sites (A1, A2, M1, M2)
alpha sites            1. occipital/parietal: O1, O2, Oz, P1-P8, Pz, PO*, T5, T6 (old
                          names of P7, P8), where the eyes-closed alpha rhythm is largest
                          (Berger 1929; Barry et al. 2007)
                       2. temporo-parietal / centro-parietal: TP*, CP* (e.g. Muse's TP9,
                          TP10): nearer the parieto-occipital alpha generators than
                          frontal sites (assumption, unsourced)
                       3. every scalp channel (frontal headsets such as AF7/AF8-only
                          bands): alpha is then mixed with eye-movement power, and the
                          estimator says so in its marker status
frontal (eye) sites    FP*, AF* (else F1-F10, Fz): blinks and eye movements are largest
                       there (the eyes are a dipole in front of them)
eye reference          central, temporal, parietal and occipital channels (else every
                       non-frontal one), subtracted from the frontal mean so that
                       activity common to the whole scalp (slow drifts) is not taken
                       for a blink
horizontal eye pair    F7/F8, else AF7/AF8, FT7/FT8, F9/F10 (left minus right: saccades)
FAA pair               F4/F3, else AF8/AF7, AF4/AF3, Fp2/Fp1, F8/F7
cardiac                the first ``ecg`` channel, else the first ``ppg`` channel
=====================  ==================================================================
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["FAA_PAIRS", "Montage", "montage", "normalize_ch_name"]

#: Right/left pairs for frontal alpha asymmetry, in order of preference.
FAA_PAIRS = (("F4", "F3"), ("AF8", "AF7"), ("AF4", "AF3"), ("FP2", "FP1"), ("F8", "F7"))

#: Left/right lateral-frontal pairs for the horizontal eye-movement proxy.
LATERAL_PAIRS = (("F7", "F8"), ("AF7", "AF8"), ("FT7", "FT8"), ("F9", "F10"))

_REFERENCE_SITES = ("A1", "A2", "M1", "M2")

_ROWS = ("FP", "AF", "F", "FC", "FT", "C", "T", "TP", "CP", "P", "PO", "O", "I", "N")
_LABELS = frozenset(
    [f"{r}{i}" for r in _ROWS for i in range(1, 11)] + [f"{r}Z" for r in _ROWS]
    + ["T3", "T4", "T5", "T6", "A1", "A2", "M1", "M2", "NZ", "IZ"]
)

_POSTERIOR = re.compile(r"(O[12Z]|P[1-8Z]|PO([1-9]|10|Z)|T5|T6)")
_TEMPORO_PARIETAL = re.compile(r"(TP|CP)([1-9]|10|Z)")
_BACK = re.compile(r"(C|CP|T|TP|P|PO|O|I)([1-9]|10|Z)")  # where blinks are < 10 % of Fp


def normalize_ch_name(name: str) -> str | None:
    """Return the 10-20/10-10 label of a channel name, upper case, or ``None``.

    Prefixes (``EEG``), reference suffixes (``-REF``, ``-A1``, ``-LE``),
    trailing dots and case are ignored: ``"EEG Fp1"``, ``"Fc5."``, ``"FP1"``,
    ``"Fp1-REF"`` give ``"FP1"``, ``"FC5"``, ``"FP1"``, ``"FP1"``.

    Parameters
    ----------
    name : str
        Channel name as the device or file spells it.

    Returns
    -------
    label : str or None
        Upper-case label (``"FP1"``, ``"FC5"``, ``"CZ"``), or ``None`` when the
        name is not a 10-20/10-10 position (``"ECG ECG"``, ``"EEG1"``).

    Examples
    --------
    >>> normalize_ch_name("EEG Fp1"), normalize_ch_name("Fc5."), normalize_ch_name("ECG")
    ('FP1', 'FC5', None)
    """
    s = name.strip().upper()
    s = re.sub(r"^(EEG|EXG)[\s_:\-]*", "", s)
    s = s.strip(" ._-")
    s = re.split(r"[\s\-_/:]", s, maxsplit=1)[0].rstrip(".")
    return s if s in _LABELS else None


@dataclass(frozen=True)
class Montage:
    """Which rows play which part, worked out once per channel layout.

    Positions named "within eeg" index the rows of the EEG block (``eeg``), the
    others index the rows of the whole stream.
    """

    eeg: np.ndarray
    """Rows of the scalp EEG channels in the stream."""
    eeg_names: tuple[str, ...]
    """Their names as the stream spells them."""
    alpha: np.ndarray
    """Alpha sites, positions within ``eeg``."""
    alpha_source: str
    """``"occipital/parietal"``, ``"temporo-parietal"`` or ``"all channels (fallback)"``."""
    frontal: np.ndarray
    """Eye-artifact sites, positions within ``eeg``."""
    eye_reference: np.ndarray
    """Non-frontal positions within ``eeg`` subtracted from the frontal mean."""
    lateral: tuple[int, int] | None
    """(left, right) lateral-frontal positions within ``eeg`` (horizontal eye proxy)."""
    faa: tuple[int, int] | None
    """(right, left) positions within ``eeg`` for frontal alpha asymmetry."""
    faa_names: tuple[str, str] | None
    """Their labels, e.g. ``("F4", "F3")``."""
    cardiac: np.ndarray
    """Row of the heart channel (0 or 1 element)."""
    cardiac_type: str | None
    """``"ecg"``, ``"ppg"`` or ``None``."""
    emg: np.ndarray
    """Rows of EMG channels."""
    eda: np.ndarray
    """Rows of EDA channels."""
    resp: np.ndarray
    """Rows of respiration channels (belts, thermistors)."""

    @property
    def alpha_names(self) -> tuple[str, ...]:
        """Names of the alpha sites."""
        return tuple(self.eeg_names[k] for k in self.alpha)


def _alpha_sites(labels: list[str | None]) -> tuple[list[int], str]:
    post = [k for k, lab in enumerate(labels) if lab and _POSTERIOR.fullmatch(lab)]
    if post:
        return post, "occipital/parietal"
    tp = [k for k, lab in enumerate(labels) if lab and _TEMPORO_PARIETAL.fullmatch(lab)]
    if tp:
        return tp, "temporo-parietal"
    return list(range(len(labels))), "all channels (fallback)"


@functools.lru_cache(maxsize=64)
def montage(ch_names: tuple[str, ...], ch_types: tuple[str, ...]) -> Montage:
    """Channel roles of a stream layout (cached; see the module docstring).

    Parameters
    ----------
    ch_names, ch_types : tuple of str
        One name and one type (``eeg``, ``ecg``, ``ppg``, ``emg``, ``eda``,
        ``resp``, ...) per row of the stream.

    Returns
    -------
    montage : Montage
        The roles; ``eeg`` is empty when the stream has no EEG channel.
    """
    types = np.asarray(ch_types)
    eeg = np.flatnonzero(types == "eeg")
    labels = [normalize_ch_name(ch_names[i]) for i in eeg]
    scalp = [k for k, lab in enumerate(labels) if lab not in _REFERENCE_SITES]
    if len(scalp) >= 2 and len(scalp) < len(eeg):
        eeg = eeg[scalp]
        labels = [labels[k] for k in scalp]
    pos = {lab: k for k, lab in enumerate(labels) if lab is not None}
    frontal = [k for k, lab in enumerate(labels)
               if lab is not None and lab.startswith(("FP", "AF"))]
    if not frontal:
        frontal = [k for k, lab in enumerate(labels)
                   if lab is not None and re.fullmatch(r"F([1-9]|10|Z)", lab)]
    others = [k for k, lab in enumerate(labels)
              if k not in frontal and lab is not None and _BACK.fullmatch(lab)]
    others = others or [k for k in range(len(labels)) if k not in frontal]
    alpha, alpha_source = _alpha_sites(labels)
    faa = faa_names = None
    for right, left in FAA_PAIRS:
        if right in pos and left in pos:
            faa, faa_names = (pos[right], pos[left]), (right, left)
            break
    lateral = next(((pos[a], pos[b]) for a, b in LATERAL_PAIRS if a in pos and b in pos), None)
    ecg, ppg = np.flatnonzero(types == "ecg"), np.flatnonzero(types == "ppg")
    cardiac, cardiac_type = (ecg[:1], "ecg") if ecg.size else (
        (ppg[:1], "ppg") if ppg.size else (ecg, None))
    return Montage(eeg, tuple(ch_names[i] for i in eeg), np.asarray(alpha, dtype=int),
                   alpha_source, np.asarray(frontal, dtype=int), np.asarray(others, dtype=int),
                   lateral, faa, faa_names, cardiac, cardiac_type, np.flatnonzero(types == "emg"),
                   np.flatnonzero(types == "eda"), np.flatnonzero(types == "resp"))
