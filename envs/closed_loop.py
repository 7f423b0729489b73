"""The closed loop as a Gymnasium environment: one step is one 4-bar phrase (or rest)."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from st_agent.contract import (
    ACTION_SIZE,
    HISTORY_LEN,
    TARGET_PRESETS,
    SafetyBounds,
    Target,
    action_to_knobs,
    build_observation,
    is_rest,
    observation_bounds,
    region_distance,
    resolve_target,
    rest_phrase_sec,
)
from st_agent.envs.phrase_bank import PhraseBank, build_phrase_bank
from st_agent.listener.family import (
    AnyListenerParams,
    check_families,
    family_of,
    sample_population,
)
from st_agent.listener.fast import EstimatorNoise, FastListeners
from st_agent.listener.first_order import ListenerState
from st_agent.types import Knobs

if TYPE_CHECKING:
    from st_agent.music.composer import ComposerConfig

__all__ = ["FIDELITIES", "FULL_PHRASES", "ClosedLoopEnv", "ListenerSpec", "load_listener_file",
           "resolve_listeners"]

logger = logging.getLogger(__name__)

FIDELITIES = ("fast", "full")
#: Where full fidelity's phrases come from: the live composer, or the phrase bank.
FULL_PHRASES = ("compose", "bank")
#: The full-fidelity estimator recomputes the beat-to-beat markers (RMSSD, HF power,
#: breathing rate over 32 s) every this many seconds (issue 20: their own rate).
FULL_HRV_UPDATE_SEC = 4.0
#: None (population), one listener, several (one drawn per episode) or a listener.json.
ListenerSpec = AnyListenerParams | Sequence[AnyListenerParams] | str | Path | None


def load_listener_file(path: str | Path) -> AnyListenerParams:
    """Read a fitted ``listener.json`` (:func:`st_agent.listener.fitting.load_fit`).

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        When it is not a fitted-listener file.
    """
    from st_agent.errors import DataError
    from st_agent.listener.fitting import load_fit

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"listener file {path} does not exist; write one with "
                                "`st-agent fit-listener`")
    try:
        return load_fit(path)
    except DataError:
        raise  # already names the file and the field (ListenerFileError)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"cannot read listener file {path}: {e}") from e


def resolve_listeners(listener: ListenerSpec, families: Sequence[str] | None = None
                      ) -> tuple[list[AnyListenerParams] | None, tuple[str, ...]]:
    """Check the ``listener`` and ``families`` arguments of the environments.

    Returns
    -------
    listeners : list or None
        The fixed listeners (one drawn per episode), or None for population draws.
    families : tuple of str
        The families population draws come from (all when ``families`` is None).

    Raises
    ------
    ValueError
        For an unknown family name, or both ``listener`` and ``families`` given.
    TypeError
        For a listener that is not the parameters of a known family.
    """
    fams = check_families(families)
    if listener is None:
        return None, fams
    if families is not None:
        raise ValueError(f"give either listener or families, not both (families={families!r})")
    if isinstance(listener, str | Path):
        return [load_listener_file(listener)], fams
    if hasattr(type(listener), "family"):
        family_of(listener)
        return [listener], fams
    try:
        items = list(listener)
    except TypeError:
        items = []
    if not items:
        raise TypeError("listener must be None, listener parameters of a family, a non-empty "
                        f"sequence of them or a listener.json path, got {listener!r}")
    for p in items:
        family_of(p)  # TypeError naming the families for anything else
    return items, fams


class ClosedLoopEnv(gym.Env):
    """Steer a simulated listener's (valence, arousal) into a target region with music.

    ## Description

    The agent turns three knobs (valence, tempo, energy) once per 4-bar phrase.
    The phrase that plays is real music from the project's composer and
    renderer (or a rest: energy at or below
    :data:`~st_agent.contract.REST_ENERGY` plays 4 bars of silence at the
    tempo); the simulated listener responds to the features measured from it,
    and the agent sees the listener's state only as a state estimator reports
    it: noisy, lagged and relative to the listener's resting state.

    Listeners come from a *family* of structurally different response models
    (:mod:`st_agent.listener.family`: ``first_order``, ``two_timescale``,
    ``adaptation``, ``entrainment``); a new listener is drawn at every reset
    (its family uniform over ``families``, then its parameters), so the policy
    must find out how this listener reacts.

    Two fidelities share this interface:

    * ``"fast"`` (default): the phrase is drawn from a :class:`PhraseBank` of
      real phrases measured on a knob grid (random among the phrases of the
      grid point nearest to the knobs), and the estimate is the latent state
      plus the estimator noise measured in raw mode (:class:`EstimatorNoise`).
    * ``"full"``: the composer writes the phrase (continuing the previous
      one), it is rendered and measured, a :class:`VirtualListenerSource`
      synthesises raw EEG/ECG/EMG from the same family member while it plays
      and the real :class:`StateEstimator` (calibrated on a rest period at
      reset) reports the state. The source synthesises each phrase's signals in
      one block (:meth:`VirtualListenerSource.read_block`) and the estimator
      recomputes the 32 s beat-to-beat markers every
      :data:`FULL_HRV_UPDATE_SEC` s. With ``full_phrases="bank"`` the phrase is
      drawn from the phrase bank as in fast mode (measured features of real
      composed phrases; no ABC in ``info``) and everything after it is the
      same: a cached-phrase path, for when the composer's cost is not what is
      studied (``benchmarks/bench_env.py`` prints both rates).

    ## Action Space

    ``Box(-1, 1, (3,), float32)``: the change of each knob as a fraction of
    ``bounds.max_delta`` (rate limit per phrase), clipped to the bounds
    (:func:`st_agent.contract.action_to_knobs`).

    | index | action                     | min | max |
    |-------|----------------------------|-----|-----|
    | 0     | change of the valence knob | -1  | 1   |
    | 1     | change of the tempo knob   | -1  | 1   |
    | 2     | change of the energy knob  | -1  | 1   |

    ## Observation Space

    ``Box(low, high, (11 + 5 * history_len,), float32)``, built by
    :func:`st_agent.contract.build_observation` (the live session builds it
    the same way).

    | index        | observation                                     | min  | max |
    |--------------|-------------------------------------------------|------|-----|
    | 0, 1         | estimated valence, arousal                      | -1   | 1   |
    | 2, 3         | target's nominal valence, arousal               | -1   | 1   |
    | 4, 5         | error: nearest point of the region - estimate   | -2   | 2   |
    | 6, 7, 8      | knobs valence, tempo, energy                    | 0    | 1   |
    | 9            | estimator confidence                            | 0    | 1   |
    | 10           | 1 when the estimate was NaN (held), else 0      | 0    | 1   |
    | 11 + 5k ...  | phrase k ago: valence, arousal, 3 knobs         | -1/0 | 1   |

    ## Rewards

    The target is a region of the plane (:class:`~st_agent.contract.Target`);
    ``calm`` is one-sided: arousal at or below -0.5 (and valence in [0, 0.4])
    is inside, so being calmer than the target costs nothing and a policy has
    no reason to raise the tempo. With ``d_t`` the Euclidean distance from the
    listener's noise-free state (latent state in estimator units, ``gain *
    (latent - rest)``) to the region after phrase ``t`` (0 inside) and ``dk``
    the knob change::

        r_t = (d_{t-1} - d_t) - distance_weight * d_t
              - jerk_weight * mean((dk / max_delta) ** 2)

    The first term rewards moving toward the region, the second holding it,
    the third penalises abrupt (jerky) knob changes. ``info["distance"]`` is
    ``d_t``.

    ## Starting State

    A listener (see ``listener`` and ``families``) at rest after ``rest_sec``
    of silence; knobs uniform within the bounds (or ``start_knobs``); the
    target at time 0.

    ## Episode End

    No termination; truncation after ``max_steps`` phrases.

    ## Arguments

    * ``target``: preset name (``calm``, ``focus``, ``uplift``, ``energize``:
      regions, :data:`~st_agent.contract.TARGET_REGIONS`), ``(valence,
      arousal)`` (a point), a :class:`Target` (regions, schedules; with
      ``relative=False`` in latent units, mapped per listener), or
      ``"random"`` (a preset drawn per episode).
    * ``fidelity``: ``"fast"`` or ``"full"``.
    * ``listener``: ``None`` (population draw per episode), listener
      parameters of any family, a sequence of them (one drawn per episode) or
      the path of a fitted ``listener.json``.
    * ``families``: the families population draws come from (default ``None``:
      all four, :data:`~st_agent.listener.family.FAMILY_NAMES`); not with
      ``listener``. An unknown name raises ``ValueError``.
    * ``phrase_bank``: a :class:`PhraseBank`, its JSON path, or ``None`` (the
      default bank, built on first use into ``runs/phrase_bank/``).
    * ``bounds``: :class:`SafetyBounds` (``energy=(0.05, 1)`` forbids rests);
      ``max_steps``; ``history_len``; ``distance_weight``; ``jerk_weight``;
      ``start_knobs``; ``rest_sec``; ``nan_prob`` (fast: chance that an
      estimate is lost, as a bad window); ``noise`` (:class:`EstimatorNoise`);
      ``calibration_sec`` (full); ``full_phrases`` (full: ``"compose"``, the
      default, or ``"bank"``, see above); ``composer`` (full: a
      :class:`~st_agent.music.composer.ComposerConfig`; default the live
      session's settings but decoding on two threads, which the live session
      leaves to audio and estimation. Fewer candidates compose faster but
      follow the energy knob less well: 4 candidates with the first 2
      finished gave Spearman 0.73 against 0.86);
      ``render_mode`` (``"ansi"``: a text line; ``"rgb_array"``: a 128 x 176
      image of the plane, the region, the state and the knobs; or None).

    ## Version History

    * v0: initial version; the listener family, target regions, rest phrases
      and ``rgb_array`` were added without a version bump (the spaces are
      unchanged).

    Examples
    --------
    >>> import gymnasium as gym, st_agent.envs  # doctest: +SKIP
    >>> env = gym.make("SonicTelegram/ClosedLoop-v0", target="calm")  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)  # doctest: +SKIP
    >>> obs.shape, info["family"] in ("first_order", "two_timescale", "adaptation",
    ...                               "entrainment")  # doctest: +SKIP
    ((26,), True)
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"],
                                          "render_fps": 1}

    def __init__(self, target: str | Target | Sequence[float] = "calm",
                 fidelity: Literal["fast", "full"] = "fast", listener: ListenerSpec = None,
                 phrase_bank: PhraseBank | str | Path | None = None,
                 bounds: SafetyBounds | None = None, max_steps: int = 32,
                 history_len: int = HISTORY_LEN, distance_weight: float = 0.1,
                 jerk_weight: float = 0.05, start_knobs: Knobs | None = None,
                 rest_sec: float = 4.0, nan_prob: float = 0.0,
                 noise: EstimatorNoise | None = None, calibration_sec: float = 20.0,
                 composer: ComposerConfig | None = None,
                 render_mode: str | None = None,
                 families: Sequence[str] | None = None,
                 full_phrases: Literal["compose", "bank"] = "compose") -> None:
        if fidelity not in FIDELITIES:
            raise ValueError(f"fidelity must be one of {FIDELITIES}, got {fidelity!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or "
                             f"None, got {render_mode!r}")
        if full_phrases not in FULL_PHRASES:
            raise ValueError(f"full_phrases must be one of {FULL_PHRASES}, got {full_phrases!r}")
        self.full_phrases = full_phrases
        self._random_target = isinstance(target, str) and target == "random"
        self._target_spec = resolve_target("calm" if self._random_target else target)
        self.target = self._target_spec
        self.bounds = bounds if bounds is not None else SafetyBounds()
        if not isinstance(self.bounds, SafetyBounds):
            raise TypeError(f"bounds must be a SafetyBounds, got {type(bounds).__name__}")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
        for name, value in (("distance_weight", distance_weight), ("jerk_weight", jerk_weight),
                            ("rest_sec", rest_sec), ("calibration_sec", calibration_sec)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not (isinstance(nan_prob, int | float) and 0.0 <= nan_prob <= 1.0):
            raise ValueError(f"nan_prob must be in [0, 1], got {nan_prob!r}")
        if start_knobs is not None and not isinstance(start_knobs, Knobs):
            raise TypeError(f"start_knobs must be a Knobs or None, got {start_knobs!r}")
        self.fidelity = fidelity
        self.max_steps = max_steps
        self.history_len = history_len
        self.distance_weight = float(distance_weight)
        self.jerk_weight = float(jerk_weight)
        self.start_knobs = start_knobs
        self.rest_sec = float(rest_sec)
        self.nan_prob = float(nan_prob)
        self.calibration_sec = float(calibration_sec)
        self.render_mode = render_mode
        self.noise = noise if noise is not None else EstimatorNoise.load()
        self._listeners, self.families = resolve_listeners(listener, families)
        if isinstance(phrase_bank, PhraseBank):
            self.bank: PhraseBank | None = phrase_bank
        elif phrase_bank is not None:
            self.bank = PhraseBank.load(phrase_bank)
        else:
            self.bank = (build_phrase_bank() if fidelity == "fast" or full_phrases == "bank"
                         else None)
        low, high = observation_bounds(history_len)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_SIZE,), dtype=np.float32)
        self._gain = self.noise.gain
        self.composer_config = composer
        self._composer = None  # full mode, built on first reset
        self._fl: FastListeners | None = None
        self.params: AnyListenerParams | None = None
        self.family: str | None = None
        self._rest_phrase = False

    @staticmethod
    def _resolve_listeners(listener: ListenerSpec) -> list[AnyListenerParams] | None:
        """Kept for callers of the old name: :func:`resolve_listeners` without families."""
        return resolve_listeners(listener)[0]

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode with a new (or the fixed) listener at rest."""
        super().reset(seed=seed)
        rng = self.np_random
        if self._listeners is None:
            self.params = sample_population(1, rng=rng, families=self.families)[0]
        else:
            self.params = self._listeners[int(rng.integers(len(self._listeners)))]
        self.family = family_of(self.params)
        spec = self._target_spec
        if self._random_target:
            names = sorted(TARGET_PRESETS)
            spec = resolve_target(names[int(rng.integers(len(names)))])
        self._rest = np.asarray(self.params.rest_state, dtype=float)
        self.target = spec.in_estimator_units(self._gain, self._rest)
        if self.start_knobs is not None:
            self.knobs = self.bounds.clip(self.start_knobs)
        else:
            self.knobs = Knobs(*(float(x) for x in rng.uniform(self.bounds.lo, self.bounds.hi)))
        self.t_sec = 0.0
        self.n_steps = 0
        self._rest_phrase = False
        self._history: deque = deque(maxlen=max(self.history_len, 1))
        if self.fidelity == "fast":
            self._fl = FastListeners([self.params], rng=rng, noise=self.noise)
            est = self._fl.step(np.zeros(6), self.rest_sec)[0] if self.rest_sec > 0 else \
                np.zeros(2)
            conf = 1.0
        else:
            est, conf = self._reset_full()
        self._est = np.asarray(est, dtype=float)
        self._conf = conf
        self._dist = self._distance()
        return self._obs(), self._info(nan=not np.all(np.isfinite(self._est)))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Play one phrase (or a rest) under the knobs that ``action`` sets."""
        if self.params is None:
            raise RuntimeError("call reset() before step()")
        prev_knobs = self.knobs
        self._history.appendleft((float(self._est[0]), float(self._est[1]), prev_knobs))
        self.knobs = action_to_knobs(action, prev_knobs, self.bounds)
        self._rest_phrase = is_rest(self.knobs)
        if self.fidelity == "fast":
            if self._rest_phrase:  # silence for 4 bars at the tempo
                idx, dur, x = -1, rest_phrase_sec(self.knobs), np.zeros(6)
            else:
                idx = self.bank.pick(self.knobs, self.np_random)
                dur, x = float(self.bank.duration_sec[idx]), self.bank.x[idx]
            est = self._fl.step(x, dur)[0]
            conf = 1.0
            if self.nan_prob > 0 and self.np_random.random() < self.nan_prob:
                est = np.full(2, np.nan)
                conf = 0.0
            extra = {"phrase": idx}
        else:
            est, conf, dur, extra = self._step_full()
        self.t_sec += dur
        self.n_steps += 1
        self._est = np.asarray(est, dtype=float)
        self._conf = conf
        d_prev, self._dist = self._dist, self._distance()
        dk = (np.asarray(self.knobs.as_tuple()) - prev_knobs.as_tuple()) / self.bounds.max_delta
        jerk = float(np.mean(dk ** 2))
        # shaping: progress toward the region, staying in it, smooth knobs
        reward = (d_prev - self._dist) - self.distance_weight * self._dist \
            - self.jerk_weight * jerk
        truncated = self.n_steps >= self.max_steps
        info = self._info(nan=not np.all(np.isfinite(self._est))) | extra | {
            "jerk": jerk, "phrase_sec": dur}
        return self._obs(), float(reward), False, truncated, info

    def render(self) -> str | np.ndarray | None:
        """A one-line text summary (``"ansi"``) or an RGB frame (``"rgb_array"``)."""
        if self.render_mode is None or self.params is None:
            return None
        v, a = self.clean_state
        tgt = self.target.at(self.t_sec)
        if self.render_mode == "rgb_array":
            from st_agent.envs.frames import loop_frame

            return loop_frame((v, a), self._est, tgt.region, tgt, self.knobs.as_tuple(),
                              rest=self._rest_phrase)
        tv, ta = tgt
        return (f"t={self.t_sec:6.1f}s state=({v:+.2f},{a:+.2f}) target=({tv:+.2f},{ta:+.2f}) "
                f"d={self._dist:.2f} {self.family} {self.knobs!r}"
                f"{' rest' if self._rest_phrase else ''}")

    def close(self) -> None:
        """Release the full-mode source and estimator."""
        for name in ("_src", "_estimator"):
            obj = self.__dict__.pop(name, None)
            if obj is not None:
                (obj.stop if name == "_src" else obj.close)()

    # ------------------------------------------------------------------ state
    @property
    def _sim(self) -> FastListeners:
        return self._fl if self.fidelity == "fast" else self._src.sim

    @property
    def latent(self) -> ListenerState:
        """The listener's latent state snapshot (privileged: for the oracle and for tests).

        Valence, arousal, drift, exposure for any family; see
        :meth:`~st_agent.listener.fast.FastListeners.listener_state`.
        """
        return self._sim.listener_state(0)

    @property
    def latent_state(self) -> np.ndarray:
        """Latent ``(valence, arousal)``, shape (2,) (privileged)."""
        return self._sim.state[0].copy()

    def predict_latent(self, x_seq: np.ndarray, dt_seq: np.ndarray | float) -> np.ndarray:
        """Noise-free latent trajectory of this listener from now (privileged).

        Parameters
        ----------
        x_seq : ndarray, shape (H, 6) or (C, H, 6)
            Feature vectors of the next H phrases (zeros: rests); or C candidate
            sequences at once (:meth:`FastListeners.predict_candidates`).
        dt_seq : float or ndarray, shape (H,) or (C, H)
            Their lengths, seconds.

        Returns
        -------
        traj : ndarray, shape (H, 2) or (C, H, 2)
            Latent ``(valence, arousal)`` after each phrase; the env is unchanged.
        """
        x_seq = np.asarray(x_seq, dtype=float)
        if x_seq.ndim == 3:
            return self._sim.predict_candidates(x_seq, dt_seq)
        return self._sim.predict(x_seq, dt_seq)[0]

    def to_estimator_units(self, valence: float, arousal: float) -> np.ndarray:
        """Latent ``(valence, arousal)`` as a noise-free estimator would report it."""
        ref = self._rest if self.noise.relative else 0.0
        x = self._gain * (np.array([valence, arousal]) - ref)
        return np.minimum(np.maximum(x, -1.0), 1.0)

    @property
    def clean_state(self) -> np.ndarray:
        """Noise-free state in estimator units, shape (2,): what the reward uses."""
        return self.to_estimator_units(*self._sim.state[0])

    def region_at_t(self) -> tuple[float, float, float, float]:
        """The target region now, ``(v_lo, v_hi, a_lo, a_hi)``, estimator units."""
        return self.target.region_at(self.t_sec)

    def _distance(self) -> float:
        self._clean = self.clean_state
        region = np.asarray(self.region_at_t())[None, :]
        return float(region_distance(self._clean[None, :], region)[0])

    def _obs(self) -> np.ndarray:
        return build_observation(tuple(self._est), self.target.at(self.t_sec), self.knobs,
                                 self._conf, list(self._history), self.history_len)

    def _info(self, nan: bool) -> dict[str, Any]:
        return {"nan_state": bool(nan), "distance": self._dist,
                "clean_state": self._clean, "target": self.target.at(self.t_sec),
                "region": self.region_at_t(), "knobs": self.knobs, "t_sec": self.t_sec,
                "family": self.family, "rest": self._rest_phrase}

    # ------------------------------------------------------------------ full mode
    def _reset_full(self) -> tuple[np.ndarray, float]:
        from st_agent.biometrics.estimator import EstimatorConfig, StateEstimator
        from st_agent.listener.virtual import SignalModel, VirtualListenerSource
        from st_agent.music.composer import Composer, ComposerConfig

        self.close()
        if self._composer is None and self.full_phrases == "compose":
            # offline, the composer has the CPU to itself: two decoding threads (the
            # live session keeps one so audio and estimation have the other core)
            self._composer = Composer(self.composer_config or ComposerConfig(threads=2))
        self._context = None
        self._last_features = None
        # 1 s chunks: the latent update is exact for any step, and fewer, longer
        # syntheses cost less than many short ones
        self._src = VirtualListenerSource(self.params, model=SignalModel(chunk_sec=1.0),
                                          rng=self.np_random)
        self._src.start()
        self._estimator = StateEstimator(EstimatorConfig(
            calibration_sec=self.calibration_sec, reference_model=False,
            hrv_update_sec=FULL_HRV_UPDATE_SEC))
        rest = max(self.rest_sec, self.calibration_sec + 3.0)
        self._src.hear(None, rest)
        return self._listen(rest)

    def _listen(self, seconds: float) -> tuple[np.ndarray, float]:
        """Read ``seconds`` of signals into the estimator; the last estimate."""
        # one block of whole chunks (the chunks read one by one, synthesised at once) and
        # one push: the estimator analyses all of the phrase's windows in one batch
        out = self._estimator.push(self._src.read_block(seconds))
        est = out[-1] if out else None
        if est is None or est.quality.get("calibrating") or est.state.confidence == 0:
            return np.full(2, np.nan), 0.0
        return np.array([est.state.valence, est.state.arousal]), est.state.confidence

    def _step_full(self) -> tuple[np.ndarray, float, float, dict[str, Any]]:
        from st_agent.music.abc import AbcError
        from st_agent.music.composer import ComposerError
        from st_agent.music.render import measure_features, render_phrase

        seed = int(self.np_random.integers(2**31))
        if self._rest_phrase:  # silence for 4 bars at the tempo; the music resumes after it
            dur = rest_phrase_sec(self.knobs)
            self._src.hear(None, dur)
            est, conf = self._listen(dur)
            return est, conf, dur, {"abc": None, "features": None, "composer_failed": False}
        if self.full_phrases == "bank":  # cached phrases: measured features of the bank's
            idx = self.bank.pick(self.knobs, self.np_random)
            feats = self.bank.features[idx]
            self._src.hear(feats)
            est, conf = self._listen(feats.duration_sec)
            return est, conf, feats.duration_sec, {"abc": None, "features": feats,
                                                   "composer_failed": False, "phrase": idx}
        failed = False
        try:
            phrase = self._composer.compose(self.knobs, context=self._context, seed=seed)
            pm = render_phrase(phrase.abc, phrase.key, self.knobs, meter=phrase.meter)
            feats = measure_features(pm)
        except (ComposerError, AbcError) as e:
            if self._context is None:
                raise
            # as in a live session: the music goes on with the last phrase again
            logger.warning("composer failed (%s); the last phrase plays again", e)
            phrase, feats, failed = self._context, self._last_features, True
        self._context, self._last_features = phrase, feats
        self._src.hear(feats)
        est, conf = self._listen(feats.duration_sec)
        return est, conf, feats.duration_sec, {"abc": phrase.abc, "features": feats,
                                               "composer_failed": failed}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_composer"] = None  # rebuilt on the next reset (holds a torch model)
        return state
