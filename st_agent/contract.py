"""The observation/action contract shared by the simulated env and the live session.

A policy trained in :mod:`st_agent.envs.closed_loop` runs unchanged live because both
sides build their observations with :func:`build_observation` and turn actions
into knobs with :func:`action_to_knobs`, under the same :class:`SafetyBounds`.

Observation layout (``float32``, length :data:`OBS_SIZE` with the default
history of :data:`HISTORY_LEN` phrases)
==========  ===================================================  =====  =====
index       meaning                                              min    max
==========  ===================================================  =====  =====
0           estimated valence                                    -1     1
1           estimated arousal                                    -1     1
2           target valence                                       -1     1
3           target arousal                                       -1     1
4           error valence (region - estimate)                    -2     2
5           error arousal (region - estimate)                    -2     2
6, 7, 8     current knobs valence, tempo, energy                 0      1
9           estimator confidence                                 0      1
10          NaN flag: 1 when the estimate was not finite         0      1
11 + 5k ..  history k = 0 .. H-1 (most recent first): valence,   -1/0   1
            arousal, knob valence, knob tempo, knob energy
==========  ===================================================  =====  =====

Targets are regions (:mod:`st_agent.targets`, re-exported here): indices 2-3
hold the nominal point and 4-5 the vector from the estimate to the nearest
point of the region (0 inside it; for a point target exactly target -
estimate). ``calm`` is one-sided (arousal at or below -0.5 is inside).

A non-finite estimate is replaced by the latest finite one in the history (or
0), the confidence is set to 0 and the NaN flag to 1, so the vector is always
finite.

Action: a vector in [-1, 1]^3, the change of (valence, tempo, energy) knobs as
a fraction of :attr:`SafetyBounds.max_delta` per phrase, clipped to the bounds.

Silence is playable: a phrase with ``energy <= REST_ENERGY`` (0.02) is a rest
of 4 bars at the tempo (:func:`is_rest`, :func:`rest_phrase_sec`); a
therapist who does not want rests sets ``SafetyBounds(energy=(0.05, 1))``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from st_agent.targets import (
    TARGET_PRESETS,
    TARGET_REGIONS,
    Target,
    TargetPoint,
    region_distance,
    region_error,
    resolve_target,
)
from st_agent.types import EmotionState, Knobs

__all__ = [
    "ACTION_SIZE",
    "HISTORY_LEN",
    "JAM_GROUP_SIZE",
    "JAM_MAX_PERFORMERS",
    "KNOB_NAMES",
    "OBS_SIZE",
    "OBS_VERSION",
    "REST_ENERGY",
    "REWARD_WEIGHTS",
    "TARGET_PRESETS",
    "TARGET_REGIONS",
    "HistoryEntry",
    "SafetyBounds",
    "Target",
    "TargetPoint",
    "action_to_knobs",
    "build_jam_observations",
    "build_observation",
    "build_observations",
    "is_rest",
    "observation_bounds",
    "observation_size",
    "region_distance",
    "region_error",
    "resolve_target",
    "rest_phrase_sec",
    "reward_from_observations",
]

#: Knob order of actions and observations.
KNOB_NAMES = ("valence", "tempo", "energy")
ACTION_SIZE = 3
#: Default number of past phrases in the observation.
HISTORY_LEN = 3
_HEAD = 11  # entries before the history
_PER_HIST = 5  # valence, arousal, 3 knobs

#: A phrase whose energy knob is at or below this is a rest: silence (4 bars at the tempo).
REST_ENERGY = 0.02


def is_rest(knobs: Knobs) -> bool:
    """Whether ``knobs`` ask for a rest phrase (silence): ``energy <= REST_ENERGY``."""
    return knobs.energy <= REST_ENERGY


def rest_phrase_sec(knobs: Knobs, bars: int = 4, beats_per_bar: int = 4) -> float:
    """Length of a rest phrase at the knobs' tempo, seconds (``bars * beats * 60 / bpm``)."""
    return bars * beats_per_bar * 60.0 / knobs.bpm

@dataclass(frozen=True)
class SafetyBounds:
    """Hard limits on the knobs: a range per knob and a rate limit per phrase.

    Parameters
    ----------
    valence, tempo, energy : (float, float)
        Allowed ``(lo, hi)`` of each knob, ``0 <= lo <= hi <= 1``.
    max_delta : float
        Largest change of any knob from one phrase to the next, in (0, 1].

    Raises
    ------
    ValueError
        Naming the knob and the values received.
    """

    valence: tuple[float, float] = (0.0, 1.0)
    tempo: tuple[float, float] = (0.0, 1.0)
    energy: tuple[float, float] = (0.0, 1.0)
    max_delta: float = 0.25

    def __post_init__(self) -> None:
        for name in KNOB_NAMES:
            pair = getattr(self, name)
            try:
                lo, hi = (float(x) for x in pair)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{name} bounds must be a (lo, hi) pair, got {pair!r}") from e
            if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi <= 1.0):
                raise ValueError(f"{name} bounds must satisfy 0 <= lo <= hi <= 1, got "
                                 f"lo={lo!r}, hi={hi!r}")
            object.__setattr__(self, name, (lo, hi))
        md = self.max_delta
        if isinstance(md, bool) or not isinstance(md, int | float) \
                or not (math.isfinite(md) and 0.0 < md <= 1.0):
            raise ValueError(f"max_delta must be in (0, 1] (knob units per phrase), got {md!r}")
        object.__setattr__(self, "max_delta", float(md))

    @property
    def lo(self) -> np.ndarray:
        """Lower bounds, shape (3,), knob order."""
        return np.array([getattr(self, n)[0] for n in KNOB_NAMES])

    @property
    def hi(self) -> np.ndarray:
        """Upper bounds, shape (3,), knob order."""
        return np.array([getattr(self, n)[1] for n in KNOB_NAMES])

    def clip(self, knobs: Knobs) -> Knobs:
        """``knobs`` clipped into the ranges (no rate limit)."""
        return Knobs(*(float(x) for x in np.clip(knobs.as_tuple(), self.lo, self.hi)))


def action_to_knobs(action: np.ndarray | Sequence[float], knobs: Knobs,
                    bounds: SafetyBounds | None = None) -> Knobs:
    """The next knobs: ``knobs + clip(action, -1, 1) * max_delta``, kept in bounds.

    Parameters
    ----------
    action : array-like, shape (3,)
        Knob change in [-1, 1] per knob (valence, tempo, energy); values
        outside are clipped and non-finite entries mean "no change".
    knobs : Knobs
        The current knobs.
    bounds : SafetyBounds, optional
        Ranges and rate limit (default: full range, 0.25 per phrase).

    Returns
    -------
    knobs : Knobs
    """
    bounds = bounds or SafetyBounds()
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (ACTION_SIZE,):
        raise ValueError(f"action must have shape ({ACTION_SIZE},), got {np.shape(action)}")
    if not isinstance(knobs, Knobs):
        raise TypeError(f"knobs must be a Knobs, got {type(knobs).__name__}")
    a = np.clip(np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    new = np.clip(np.asarray(knobs.as_tuple()) + a * bounds.max_delta, bounds.lo, bounds.hi)
    return Knobs(*(float(x) for x in new))


#: One past phrase: ``(valence, arousal, knobs)``.
HistoryEntry = tuple[float, float, Knobs]


def observation_size(history_len: int = HISTORY_LEN) -> int:
    """Length of the observation vector for ``history_len`` past phrases."""
    if isinstance(history_len, bool) or not isinstance(history_len, int) or history_len < 0:
        raise ValueError(f"history_len must be an int >= 0, got {history_len!r}")
    return _HEAD + _PER_HIST * history_len


OBS_SIZE = observation_size()
#: Version of the observation layout above; logged transitions carry it
#: (:mod:`st_agent.policies.transitions`), and a change of the layout must bump it.
OBS_VERSION = 1
#: The closed-loop env's default reward weights (``distance_weight``, ``jerk_weight``).
REWARD_WEIGHTS = (0.1, 0.05)


def reward_from_observations(obs: np.ndarray, next_obs: np.ndarray, max_delta: float,
                             distance_weight: float = REWARD_WEIGHTS[0],
                             jerk_weight: float = REWARD_WEIGHTS[1]) -> dict[str, np.ndarray]:
    """The env's reward of the transitions ``obs -> next_obs``, from the observations alone.

    The same formula as :class:`~st_agent.envs.closed_loop.ClosedLoopEnv`'s reward
    (``progress - distance_weight * d - jerk_weight * jerk``), with the distance
    ``d`` the norm of the error entries (4, 5) of the observation and the knobs
    from entries 6-8. The env measures ``d`` on the noise-free state; a live
    session has only the estimate, so this is the reward as the session sees it
    (the same function; the estimate's noise is in it).

    Parameters
    ----------
    obs, next_obs : ndarray, shape (..., n_obs)
        Observations before and after the phrase.
    max_delta : float
        The rate limit of the bounds, knob units per phrase.
    distance_weight, jerk_weight : float
        Reward weights (the env's defaults).

    Returns
    -------
    terms : dict of str to ndarray, shape (...)
        ``progress`` (``d_prev - d``), ``distance`` (``d``), ``jerk`` (mean of
        ``(dk / max_delta) ** 2``) and ``reward``.
    """
    obs, next_obs = np.asarray(obs, dtype=np.float64), np.asarray(next_obs, dtype=np.float64)
    d_prev = np.linalg.norm(obs[..., 4:6], axis=-1)
    d = np.linalg.norm(next_obs[..., 4:6], axis=-1)
    jerk = np.mean(((next_obs[..., 6:9] - obs[..., 6:9]) / max_delta) ** 2, axis=-1)
    return {"progress": d_prev - d, "distance": d, "jerk": jerk,
            "reward": (d_prev - d) - distance_weight * d - jerk_weight * jerk}


def observation_bounds(history_len: int = HISTORY_LEN) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` float32 arrays of the observation (module table)."""
    low, high = _bounds(history_len)
    return low.copy(), high.copy()


@functools.lru_cache(maxsize=8)
def _bounds(history_len: int) -> tuple[np.ndarray, np.ndarray]:
    low = np.array([-1, -1, -1, -1, -2, -2, 0, 0, 0, 0, 0], dtype=np.float32)
    high = np.array([1, 1, 1, 1, 2, 2, 1, 1, 1, 1, 1], dtype=np.float32)
    hl = np.tile(np.array([-1, -1, 0, 0, 0], dtype=np.float32), history_len)
    hh = np.ones(_PER_HIST * history_len, dtype=np.float32)
    low, high = np.concatenate([low, hl]), np.concatenate([high, hh])
    low.flags.writeable = high.flags.writeable = False  # shared by every call
    return low, high


def _finite_or(x: float, fallback: float) -> tuple[float, bool]:
    x = float(x)
    return (x, False) if math.isfinite(x) else (fallback, True)


def build_observation(state: EmotionState | Sequence[float] | None,
                      target: tuple[float, float], knobs: Knobs, confidence: float = 1.0,
                      history: Sequence[HistoryEntry] = (),
                      history_len: int = HISTORY_LEN) -> np.ndarray:
    """Assemble the observation vector (layout in the module docstring).

    Parameters
    ----------
    state : EmotionState or (valence, arousal) or None
        The latest estimate; ``None`` or NaN entries are treated as missing.
    target : (float, float) or TargetPoint
        Target ``(valence, arousal)``; a :class:`TargetPoint` (what
        :meth:`Target.at` returns) also carries its region, and the error
        entries then point to the region's nearest point.
    knobs : Knobs
        The knobs now playing.
    confidence : float
        Estimator confidence in [0, 1] (ignored for an EmotionState, which
        carries its own); NaN counts as 0.
    history : sequence of (valence, arousal, Knobs)
        Past phrases, most recent first; missing entries repeat the oldest
        given one (or the current values when empty). NaN values are replaced
        by the current ones.
    history_len : int
        Number of past phrases to include.

    Returns
    -------
    obs : ndarray, shape (observation_size(history_len),), float32
        Finite and within :func:`observation_bounds`; index 10 is 1 when the
        estimate was missing or not finite.
    """
    n = observation_size(history_len)
    if isinstance(state, EmotionState):
        raw = (state.valence, state.arousal)
        confidence = state.confidence
    elif state is None:
        raw = (math.nan, math.nan)
    else:
        raw = tuple(state)
        if len(raw) != 2:
            raise ValueError(f"state must be (valence, arousal), got {state!r}")
    fb_v, fb_a = 0.0, 0.0
    for hv, ha, _ in history:  # latest finite past estimate is the fallback
        if math.isfinite(hv) and math.isfinite(ha):
            fb_v, fb_a = float(hv), float(ha)
            break
    v, bad_v = _finite_or(raw[0], fb_v)
    a, bad_a = _finite_or(raw[1], fb_a)
    nan = bad_v or bad_a
    conf, bad_c = _finite_or(confidence, 0.0)
    if nan or bad_c:
        conf = 0.0
    tv, ta = target
    v_lo, v_hi, a_lo, a_hi = getattr(target, "region", (tv, tv, ta, ta))
    obs = np.empty(n, dtype=np.float64)
    obs[0:2] = v, a
    obs[2:4] = tv, ta
    obs[4:6] = min(max(v, v_lo), v_hi) - v, min(max(a, a_lo), a_hi) - a
    obs[6:9] = knobs.as_tuple()
    obs[9] = conf
    obs[10] = float(nan)
    for k in range(history_len):
        if history:
            hv, ha, hk = history[min(k, len(history) - 1)]
        else:
            hv, ha, hk = v, a, knobs
        hv = hv if math.isfinite(hv) else v
        ha = ha if math.isfinite(ha) else a
        i = _HEAD + _PER_HIST * k
        obs[i:i + 2] = hv, ha
        obs[i + 2:i + 5] = hk.as_tuple()
    low, high = _bounds(history_len)
    return np.clip(obs, low, high).astype(np.float32)


def build_observations(est: np.ndarray, target: np.ndarray, knobs: np.ndarray,
                       confidence: np.ndarray, hist_est: np.ndarray, hist_knobs: np.ndarray,
                       hist_count: np.ndarray, history_len: int = HISTORY_LEN,
                       regions: np.ndarray | None = None) -> np.ndarray:
    """:func:`build_observation` for N sessions at once (same rules, NumPy arrays).

    Parameters
    ----------
    est : ndarray, shape (N, 2)
        Latest estimates (NaN: missing).
    target : ndarray, shape (N, 2)
    knobs : ndarray, shape (N, 3)
    confidence : ndarray, shape (N,)
    hist_est : ndarray, shape (N, M, 2)
        Past estimates, most recent first (``M >= history_len``).
    hist_knobs : ndarray, shape (N, M, 3)
        Past knobs, most recent first.
    hist_count : ndarray of int, shape (N,)
        Number of valid history entries per row (<= M).
    history_len : int
    regions : ndarray, shape (N, 4), optional
        Target regions ``(v_lo, v_hi, a_lo, a_hi)``; default the points ``target``.

    Returns
    -------
    obs : ndarray, shape (N, observation_size(history_len)), float32
    """
    n_obs = observation_size(history_len)
    est = np.asarray(est, dtype=np.float64)
    n, m = est.shape[0], hist_est.shape[1]
    count = np.minimum(np.asarray(hist_count, dtype=int), m)
    rows = np.arange(n)
    conf = np.asarray(confidence, dtype=np.float64)
    if np.isfinite(est).all():  # the usual case: nothing to hold
        cur, nan = est, np.zeros(n, dtype=bool)
        if not np.isfinite(conf).all():
            conf = np.where(np.isfinite(conf), conf, 0.0)
    else:
        valid = np.arange(m)[None, :] < count[:, None]  # (N, M)
        fin = valid & np.all(np.isfinite(hist_est), axis=-1)
        has = fin.any(axis=1)
        first = np.argmax(fin, axis=1)
        fb = np.where(has[:, None], hist_est[rows, first], 0.0)  # latest finite past estimate
        bad = ~np.isfinite(est)
        cur = np.where(bad, fb, est)
        nan = bad.any(axis=1)
        conf = np.where(nan | ~np.isfinite(conf), 0.0, conf)
    target = np.asarray(target, dtype=np.float64)
    obs = np.empty((n, n_obs), dtype=np.float64)
    obs[:, 0:2] = cur
    obs[:, 2:4] = target
    obs[:, 4:6] = target - cur if regions is None else region_error(cur, np.asarray(regions))
    obs[:, 6:9] = knobs
    obs[:, 9] = conf
    obs[:, 10] = nan
    if history_len:
        if m >= history_len and count.min() >= history_len:  # every history is full
            he, hk = hist_est[:, :history_len], hist_knobs[:, :history_len]
            if not np.isfinite(he).all():
                he = np.where(np.isfinite(he), he, cur[:, None, :])
        else:
            k = np.arange(history_len)[None, :]
            j = np.minimum(k, np.maximum(count, 1)[:, None] - 1)  # (N, H)
            empty = (count == 0)[:, None]
            he = hist_est[rows[:, None], j]  # (N, H, 2)
            hk = hist_knobs[rows[:, None], j]
            he = np.where(empty[..., None] | ~np.isfinite(he), cur[:, None, :], he)
            hk = np.where(empty[..., None], np.asarray(knobs, dtype=np.float64)[:, None, :], hk)
        obs[:, _HEAD:] = np.concatenate([he, hk], axis=-1).reshape(n, -1)
    low, high = _bounds(history_len)
    np.maximum(obs, low, out=obs)
    np.minimum(obs, high, out=obs)
    return obs.astype(np.float32)


#: Performers a jam observation can describe (the one-hot block's size).
JAM_MAX_PERFORMERS = 8
#: Entries of the group block at the end of a jam observation.
JAM_GROUP_SIZE = 8
_CLASH_SCALE = 16.0  # clashes per bar are at most 16 (one per sixteenth) in 4/4


def build_jam_observations(base: np.ndarray, knobs: np.ndarray, tempo: float, major: bool,
                           clashes_per_bar: float, lost: np.ndarray) -> np.ndarray:
    """Jam observations: each performer's contract observation, who they are, the group.

    Shared by :class:`st_agent.envs.jam.JamEnv` and the live jam (:mod:`st_agent.live.jam`),
    so a jam policy trained offline runs unchanged live.

    Parameters
    ----------
    base : ndarray, shape (N, n_obs)
        :func:`build_observations` of the N performers.
    knobs : ndarray, shape (N, 3)
        Each performer's knobs.
    tempo : float
        The negotiated tempo knob of the phrase playing, in [0, 1].
    major : bool
        Whether the negotiated mode is major.
    clashes_per_bar : float
        Dissonant simultaneities per bar of the phrase playing.
    lost : ndarray of bool, shape (N,)
        Performers whose stream is lost.

    Returns
    -------
    obs : ndarray, shape (N, n_obs + 8 + 8), float32
        ``base``, then a one-hot of the performer index (8 entries, so every
        group size has the same spaces), then the group block: tempo, major,
        clashes per bar / 16 (clipped to 1), the mean knobs of the *other*
        performers (3), N / 8 and the performer's lost flag.
    """
    n = base.shape[0]
    if not 2 <= n <= JAM_MAX_PERFORMERS:
        raise ValueError(f"a jam has 2 to {JAM_MAX_PERFORMERS} performers, got {n}")
    knobs = np.asarray(knobs, dtype=np.float64)
    others = (knobs.sum(axis=0, keepdims=True) - knobs) / (n - 1)
    group = np.empty((n, JAM_GROUP_SIZE), dtype=np.float64)
    group[:, 0] = tempo
    group[:, 1] = float(major)
    group[:, 2] = min(clashes_per_bar / _CLASH_SCALE, 1.0)
    group[:, 3:6] = others
    group[:, 6] = n / JAM_MAX_PERFORMERS
    group[:, 7] = np.asarray(lost, dtype=np.float64)
    onehot = np.eye(JAM_MAX_PERFORMERS)[:n]
    return np.concatenate([base, onehot, group], axis=1).astype(np.float32)
