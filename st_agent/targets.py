"""Targets: regions of the (valence, arousal) plane, constant or scheduled.

Part of the observation/action contract (:mod:`st_agent.contract` re-exports
every name here). A target is a *region*: a box ``[v_lo, v_hi] x [a_lo, a_hi]``
around a nominal point, which may be a single point (zero-width bands). A
band that reaches the edge of the plane is *one-sided*: for ``calm`` the
arousal band is ``[-1, -0.5]``, so being calmer than -0.5 costs nothing and
being above it costs the distance, and a controller has no reason to push
the tempo up to meet the target from below.

Coordinates: by default (``relative=True``) a target is in the estimator's
units, the change from this listener's calibrated rest (what the estimator
reports, about [-1, 1]). ``relative=False`` puts it in the simulator's
latent plane; the environment maps it per listener into estimator units
(:meth:`Target.in_estimator_units`); only a simulation knows the latent rest.

The distance to a target is the Euclidean distance to the region (0 inside),
:func:`region_distance`; the observation's error entries are the vector from
the estimate to the nearest point of the region, :func:`region_error`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TARGET_PRESETS", "TARGET_REGIONS", "Target", "TargetPoint", "region_distance",
           "region_error", "resolve_target"]

#: Named target regions, ``name -> ((v_lo, v_hi), (a_lo, a_hi))`` in estimator units.
TARGET_REGIONS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "calm": ((0.0, 0.4), (-1.0, -0.5)),  # one-sided: calmer than -0.5 is inside
    "focus": ((0.0, 0.2), (0.1, 0.3)),
    "uplift": ((0.5, 1.0), (0.1, 0.3)),  # one-sided: more positive than 0.5 is inside
    "energize": ((0.2, 0.4), (0.6, 1.0)),  # one-sided: more aroused than 0.6 is inside
}
#: Nominal point of each named target, ``name -> (valence, arousal)`` (estimator units).
TARGET_PRESETS: dict[str, tuple[float, float]] = {
    "calm": (0.2, -0.5),
    "focus": (0.1, 0.2),
    "uplift": (0.5, 0.2),
    "energize": (0.3, 0.6),
}


def _check_number(name: str, x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float | np.floating) \
            or not (math.isfinite(x) and -1.0 <= x <= 1.0):
        raise ValueError(f"{name} must be a number in [-1, 1] (the valence-arousal plane), "
                         f"got {x!r}")
    return float(x)


def _check_point(name: str, v: float, a: float) -> tuple[float, float]:
    return _check_number(f"{name} valence", v), _check_number(f"{name} arousal", a)


def _band(axis: str, spec: Any) -> tuple[float, float, float]:
    """``(nominal, below, above)`` of one axis: a number (a point) or a ``(lo, hi)`` band."""
    if isinstance(spec, int | float | np.floating) and not isinstance(spec, bool):
        x = _check_number(f"target {axis}", spec)
        return x, 0.0, 0.0
    try:
        lo, hi = spec
    except (TypeError, ValueError) as e:
        raise ValueError(f"target {axis} must be a number or a (lo, hi) band in [-1, 1], got "
                         f"{spec!r}") from e
    lo = _check_number(f"target {axis} band lo", lo)
    hi = _check_number(f"target {axis} band hi", hi)
    if lo > hi:
        raise ValueError(f"target {axis} band is inverted: lo={lo!r} > hi={hi!r}; give "
                         f"(lo, hi) with -1 <= lo < hi <= 1")
    if lo == hi:
        raise ValueError(f"target {axis} band is empty: lo == hi == {lo!r}; give lo < hi, "
                         f"or a single number for a point")
    if lo == -1.0 and hi < 1.0:
        nominal = hi  # one-sided from above: anything lower is inside
    elif hi == 1.0 and lo > -1.0:
        nominal = lo  # one-sided from below
    else:
        nominal = 0.5 * (lo + hi)
    return nominal, nominal - lo, hi - nominal


class TargetPoint(tuple):
    """A target's nominal ``(valence, arousal)``, carrying its region.

    A plain 2-tuple for every caller that unpacks or compares it, with
    ``region = (v_lo, v_hi, a_lo, a_hi)``, so that
    :func:`st_agent.contract.build_observation` computes the region error
    from ``target.at(t)`` alone.
    """

    region: tuple[float, float, float, float]

    def __new__(cls, valence: float, arousal: float,
                region: tuple[float, float, float, float] | None = None) -> TargetPoint:
        obj = super().__new__(cls, (float(valence), float(arousal)))
        obj.region = tuple(float(r) for r in region) if region is not None else (
            float(valence), float(valence), float(arousal), float(arousal))
        return obj

    def __getnewargs__(self) -> tuple[Any, ...]:  # pickling
        return (self[0], self[1], self.region)


@dataclass(frozen=True)
class Target:
    """A target region, or a schedule of regions, in the (valence, arousal) plane.

    Parameters
    ----------
    schedule : tuple of (start_sec, valence, arousal)
        Piecewise-constant schedule of the nominal point: from ``start_sec``
        on it is ``(valence, arousal)``. The first start must be 0; starts increase.
    name : str
        Label for logs.
    band : (v_below, v_above, a_below, a_above)
        How far the region reaches below and above the nominal point on each
        axis (>= 0; clipped to the plane). All 0: a point target.
    relative : bool
        True: estimator units (change from the listener's rest). False: the
        simulator's latent plane (mapped per listener by the environment).

    Examples
    --------
    >>> Target.point(0.2, -0.5).at(100.0)
    (0.2, -0.5)
    >>> Target(((0.0, 0.0, 0.5), (60.0, 0.2, -0.5))).at(90.0)
    (0.2, -0.5)
    >>> calm = Target.region(valence=(0.0, 0.4), arousal=(-1.0, -0.5))
    >>> calm.at(0.0), calm.distance((0.2, -0.9)), round(calm.distance((0.2, -0.3)), 3)
    ((0.2, -0.5), 0.0, 0.2)
    """

    schedule: tuple[tuple[float, float, float], ...]
    name: str = "custom"
    band: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    relative: bool = True

    def __post_init__(self) -> None:
        try:
            sched = tuple(tuple(float(x) for x in row) for row in self.schedule)
        except (TypeError, ValueError) as e:
            raise ValueError(f"schedule must be a sequence of (start_sec, valence, arousal), "
                             f"got {self.schedule!r}") from e
        if not sched or any(len(row) != 3 for row in sched):
            raise ValueError(f"schedule must be a non-empty sequence of (start_sec, valence, "
                             f"arousal), got {self.schedule!r}")
        if sched[0][0] != 0.0:
            raise ValueError(f"the first schedule entry must start at 0 s, got {sched[0][0]!r}")
        starts = [row[0] for row in sched]
        if any(b <= a for a, b in itertools.pairwise(starts)):
            raise ValueError(f"schedule start times must increase, got {starts}")
        for row in sched:
            _check_point("target", row[1], row[2])
        band = tuple(float(b) for b in self.band)
        if len(band) != 4 or not all(math.isfinite(b) and 0.0 <= b <= 2.0 for b in band):
            raise ValueError(f"band must be 4 reaches (v_below, v_above, a_below, a_above) "
                             f"in [0, 2]; a negative reach is an inverted band, got {self.band!r}")
        object.__setattr__(self, "schedule", sched)
        object.__setattr__(self, "band", band)
        object.__setattr__(self, "relative", bool(self.relative))

    @classmethod
    def point(cls, valence: float, arousal: float, name: str = "custom",
              relative: bool = True) -> Target:
        """A constant point target."""
        return cls(((0.0, valence, arousal),), name=name, relative=relative)

    @classmethod
    def region(cls, valence: float | Sequence[float], arousal: float | Sequence[float],
               name: str = "custom", relative: bool = True) -> Target:
        """A constant region: each axis a number (a point) or a ``(lo, hi)`` band.

        A band reaching -1 (or +1) is one-sided and its nominal point is its
        inner edge; a two-sided band's nominal point is its centre.

        Raises
        ------
        ValueError
            For a value outside [-1, 1], an inverted band (lo > hi) or an empty
            one (lo == hi), naming the axis, the values and what is allowed.
        """
        v, vb, va = _band("valence", valence)
        a, ab, aa = _band("arousal", arousal)
        return cls(((0.0, v, a),), name=name, band=(vb, va, ab, aa), relative=relative)

    def _row(self, t_sec: float) -> tuple[float, float, float]:
        cur = self.schedule[0]
        for row in self.schedule:
            if row[0] <= t_sec:
                cur = row
        return cur

    def region_at(self, t_sec: float) -> tuple[float, float, float, float]:
        """The region ``(v_lo, v_hi, a_lo, a_hi)`` at ``t_sec``, clipped to the plane."""
        _, v, a = self._row(t_sec)
        vb, va, ab, aa = self.band
        return (max(v - vb, -1.0), min(v + va, 1.0), max(a - ab, -1.0), min(a + aa, 1.0))

    def at(self, t_sec: float) -> TargetPoint:
        """The nominal ``(valence, arousal)`` at ``t_sec`` (carrying ``.region``)."""
        _, v, a = self._row(t_sec)
        return TargetPoint(v, a, self.region_at(t_sec))

    def distance(self, state: Sequence[float], t_sec: float = 0.0) -> float:
        """Euclidean distance from ``(valence, arousal)`` to the region (0 inside)."""
        return float(region_distance(np.asarray(state, dtype=float)[None, :],
                                     np.asarray(self.region_at(t_sec))[None, :])[0])

    def regions(self) -> np.ndarray:
        """Schedule as an array ``(start_sec, v_lo, v_hi, a_lo, a_hi)``, shape (S, 5)."""
        return np.array([(row[0], *self.region_at(row[0])) for row in self.schedule])

    def in_estimator_units(self, gain: Sequence[float], rest: Sequence[float]) -> Target:
        """This target in estimator units for a listener with ``rest`` (latent) and ``gain``.

        A relative target is returned unchanged. Points map as ``gain * (p -
        rest)`` (clipped to the plane), reaches as ``gain * reach``.
        """
        if self.relative:
            return self
        gv, ga = (float(g) for g in gain)
        rv, ra = (float(r) for r in rest)
        sched = tuple((t, min(max(gv * (v - rv), -1.0), 1.0), min(max(ga * (a - ra), -1.0), 1.0))
                      for t, v, a in self.schedule)
        vb, va, ab, aa = self.band
        band = tuple(min(b, 2.0) for b in (gv * vb, gv * va, ga * ab, ga * aa))
        return Target(sched, name=self.name, band=band, relative=True)


def region_error(states: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Vector from each state to the nearest point of its region, shape (N, 2).

    Parameters
    ----------
    states : ndarray, shape (N, 2)
        ``(valence, arousal)``.
    regions : ndarray, shape (N, 4)
        ``(v_lo, v_hi, a_lo, a_hi)``.
    """
    states = np.asarray(states, dtype=float)
    lo, hi = regions[:, 0::2], regions[:, 1::2]
    return np.minimum(np.maximum(states, lo), hi) - states


def region_distance(states: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Euclidean distance of each state to its region (0 inside), shape (N,)."""
    e = region_error(states, regions)
    return np.hypot(e[:, 0], e[:, 1])


def resolve_target(spec: str | Target | Sequence[float]) -> Target:
    """Turn a preset name, a ``(valence, arousal)`` pair or a Target into a Target.

    Presets are regions (:data:`TARGET_REGIONS`); a pair is a point target.

    Raises
    ------
    ValueError
        For an unknown preset name (the message lists the presets) or a point
        outside [-1, 1]^2.
    """
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, str):
        if spec not in TARGET_REGIONS:
            raise ValueError(f"unknown target preset {spec!r}; choose one of "
                             f"{sorted(TARGET_REGIONS)} or give (valence, arousal)")
        (vlo, vhi), (alo, ahi) = TARGET_REGIONS[spec]
        pv, pa = TARGET_PRESETS[spec]
        return Target(((0.0, pv, pa),), name=spec,
                      band=(max(pv - vlo, 0.0), max(vhi - pv, 0.0), max(pa - alo, 0.0),
                            max(ahi - pa, 0.0)))
    try:
        v, a = spec
    except (TypeError, ValueError) as e:
        raise ValueError(f"target must be a preset name {sorted(TARGET_REGIONS)}, a "
                         f"(valence, arousal) pair or a Target, got {spec!r}") from e
    return Target.point(*_check_point("target", v, a))
