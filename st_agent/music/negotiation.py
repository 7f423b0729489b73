"""Several performers, one piece: who they are and the settings they share.

Negotiation (:func:`negotiate`)
-------------------------------
* **Tempo** is shared: the weighted mean of the performers' tempo knobs
  (equal weights by default), then clipped into the intersection of every
  performer's tempo bounds, so the piece respects all of them.
* **Mode** is shared and voted: a performer votes *major* when their valence
  knob is >= 0.5 (the composer's own split between the major and the minor
  family), *minor* otherwise; votes carry the same weights as tempo. A tie
  keeps the previous phrase's mode (no flapping); with no previous phrase it
  goes to the side of the weighted mean valence (>= 0.5 major). A mode that a
  performer's valence bounds exclude cannot win; when the bounds leave only
  one mode, it is played.
* **Key**: one tonic for the whole piece; the mode family picks the parallel
  key (``A`` major or ``A`` minor by default, as the composer does), so a mode
  change keeps the tonic.
* Each **voice** keeps its own valence inside the chosen family (clamped to
  [0.5, 1] for major, [0, 0.49] for minor, then into its bounds): it sets the
  voice's register through the composer, plus an octave shift in the renderer
  (:func:`register_offset`). Its energy sets its note density (composer) and
  loudness (renderer, :func:`voice_velocity`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from st_agent.contract import SafetyBounds
from st_agent.types import Knobs

__all__ = [
    "MAX_PERFORMERS",
    "MIN_PERFORMERS",
    "Mode",
    "Negotiation",
    "check_per_performer",
    "check_performers",
    "family_valence",
    "negotiate",
]

MIN_PERFORMERS, MAX_PERFORMERS = 2, 8
_MINOR_TOP = 0.49  # highest valence of the minor family (the composer splits at 0.5)

Mode = Literal["major", "minor"]


def check_performers(performers: int) -> int:
    """Validate a performer count.

    Raises
    ------
    ValueError
        ``performers must be an int in [2, 8], got 9``.
    """
    if isinstance(performers, bool) or not isinstance(performers, int | np.integer) \
            or not MIN_PERFORMERS <= performers <= MAX_PERFORMERS:
        raise ValueError(f"performers must be an int in [{MIN_PERFORMERS}, {MAX_PERFORMERS}], "
                         f"got {performers!r}")
    return int(performers)


def check_per_performer(name: str, values: Sequence, performers: int) -> list:
    """A per-performer list (boards, targets, listeners, bounds) must have one entry each.

    Raises
    ------
    ValueError
        ``boards has 2 entries but performers=3; give one per performer``.
    """
    performers = check_performers(performers)
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list with one entry per performer ({performers}), "
                         f"got {values!r}")
    if len(values) != performers:
        raise ValueError(f"{name} has {len(values)} entries but performers={performers}; "
                         "give one per performer")
    return list(values)


def _family_range(mode: str) -> tuple[float, float]:
    return (0.5, 1.0) if mode == "major" else (0.0, _MINOR_TOP)


def family_valence(valence: float, mode: str, bounds: SafetyBounds | None = None) -> float:
    """A voice's valence inside the negotiated mode family (and its own bounds).

    Parameters
    ----------
    valence : float
        The voice's valence knob in [0, 1].
    mode : {"major", "minor"}
    bounds : SafetyBounds, optional
        The performer's bounds; the result stays in their valence range where
        it meets the family's half ([0.5, 1] major, [0, 0.49] minor).

    Returns
    -------
    valence : float
    """
    if mode not in ("major", "minor"):
        raise ValueError(f"mode must be 'major' or 'minor', got {mode!r}")
    lo, hi = _family_range(mode)
    if bounds is not None:
        blo, bhi = bounds.valence
        if blo <= hi and bhi >= lo:
            lo, hi = max(lo, blo), min(hi, bhi)
    return float(min(max(valence, lo), hi))


@dataclass(frozen=True)
class Negotiation:
    """The shared settings of one phrase (see the module docstring for the rule).

    Parameters
    ----------
    tempo : float
        Shared tempo knob in [0, 1].
    mode : {"major", "minor"}
        Shared mode family.
    key : str
        ABC ``K:`` of the phrase.
    votes_major, votes_minor : float
        Weighted votes (weights sum to 1).
    voice_valence : tuple of float
        Each voice's valence inside the family (N).
    """

    tempo: float
    mode: Mode
    key: str
    votes_major: float
    votes_minor: float
    voice_valence: tuple[float, ...]

    @property
    def bpm(self) -> float:
        """Shared quarter-note BPM."""
        return Knobs(0.5, self.tempo, 0.5).bpm

    def voice_knobs(self, proposals: Sequence[Knobs]) -> list[Knobs]:
        """The knobs each voice is composed under: its family valence, the shared
        tempo and its own energy."""
        return [Knobs(v, self.tempo, k.energy)
                for v, k in zip(self.voice_valence, proposals, strict=True)]


def _as_proposals(proposals: Sequence[Knobs] | np.ndarray) -> np.ndarray:
    if isinstance(proposals, np.ndarray):
        arr = np.asarray(proposals, dtype=np.float64)
    else:
        if not all(isinstance(k, Knobs) for k in proposals):
            raise TypeError("proposals must be Knobs or an array of shape (N, 3)")
        arr = np.array([k.as_tuple() for k in proposals], dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"proposals must have shape (N, 3), got {arr.shape}")
    check_performers(arr.shape[0])
    if not np.all(np.isfinite(arr) & (arr >= 0) & (arr <= 1)):
        raise ValueError(f"proposal knobs must be in [0, 1], got {arr.tolist()}")
    return arr


def negotiate(proposals: Sequence[Knobs] | np.ndarray, weights: Sequence[float] | None = None,
              previous_mode: Mode | None = None,
              bounds: Sequence[SafetyBounds] | None = None,
              major_key: str = "A", minor_key: str = "Am") -> Negotiation:
    """Shared tempo, mode and key from N performers' knob proposals.

    Parameters
    ----------
    proposals : sequence of Knobs or ndarray, shape (N, 3)
        Each performer's (valence, tempo, energy), 2 <= N <= 8.
    weights : sequence of float, optional
        Non-negative weight per performer (e.g. estimator confidence), not
        all zero; default equal.
    previous_mode : {"major", "minor"}, optional
        Mode of the previous phrase: it wins a tie.
    bounds : sequence of SafetyBounds, optional
        Each performer's bounds: the shared tempo is clipped into their
        intersection, a mode some performer's valence range excludes cannot
        win, and each voice's valence stays in its own range.
    major_key, minor_key : str
        ``K:`` of the two families (parallel keys keep the tonic).

    Returns
    -------
    negotiation : Negotiation

    Raises
    ------
    ValueError
        For a proposal count outside [2, 8], bad weights, or bounds that
        leave no common tempo or mode.

    Examples
    --------
    >>> n = negotiate([Knobs(0.8, 0.2, 0.5), Knobs(0.6, 0.6, 0.5), Knobs(0.1, 1.0, 0.1)])
    >>> round(n.tempo, 3), n.mode, n.key
    (0.6, 'major', 'A')
    """
    arr = _as_proposals(proposals)
    n = arr.shape[0]
    w = _normalised_weights(weights, n)
    if previous_mode is not None and previous_mode not in ("major", "minor"):
        raise ValueError(f"previous_mode must be 'major', 'minor' or None, got {previous_mode!r}")
    if bounds is not None:
        bounds = check_per_performer("bounds", bounds, n)
    t_lo, t_hi, allowed = _common_ranges(bounds)
    tempo = float(np.clip(np.dot(w, arr[:, 1]), t_lo, t_hi))
    major = arr[:, 0] >= 0.5
    v_major, v_minor = float(w[major].sum()), float(w[~major].sum())
    if len(allowed) == 1:
        mode = next(iter(allowed))
    elif not math.isclose(v_major, v_minor, abs_tol=1e-12):
        mode = "major" if v_major > v_minor else "minor"
    elif previous_mode is not None:
        mode = previous_mode
    else:
        mode = "major" if float(np.dot(w, arr[:, 0])) >= 0.5 else "minor"
    voice_v = tuple(family_valence(float(arr[i, 0]), mode,
                                   bounds[i] if bounds is not None else None) for i in range(n))
    return Negotiation(tempo=tempo, mode=mode, key=major_key if mode == "major" else minor_key,
                       votes_major=v_major, votes_minor=v_minor, voice_valence=voice_v)


def _normalised_weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    """Performer weights summing to 1, shape (n,); equal when None."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (n,) or not np.all(np.isfinite(w) & (w >= 0)) or w.sum() <= 0:
        raise ValueError(f"weights must be {n} non-negative numbers, not all 0, got "
                         f"{list(weights)!r}")
    return w / w.sum()


def _common_ranges(bounds: list[SafetyBounds] | None) -> tuple[float, float, set[str]]:
    """The tempo range every performer's bounds allow, and the mode families
    none of their valence ranges excludes."""
    t_lo, t_hi, allowed = 0.0, 1.0, {"major", "minor"}
    if bounds is None:
        return t_lo, t_hi, allowed
    t_lo = max(b.tempo[0] for b in bounds)
    t_hi = min(b.tempo[1] for b in bounds)
    if t_lo > t_hi:
        raise ValueError(f"the performers' tempo bounds do not overlap "
                         f"({[b.tempo for b in bounds]}); no shared tempo respects them all")
    for mode in ("major", "minor"):
        lo, hi = _family_range(mode)
        if any(b.valence[0] > hi or b.valence[1] < lo for b in bounds):
            allowed.discard(mode)
    if not allowed:
        raise ValueError(f"the performers' valence bounds ({[b.valence for b in bounds]}) "
                         "leave neither the major nor the minor family to all of them")
    return t_lo, t_hi, allowed
