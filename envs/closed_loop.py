"""The closed loop as a Gymnasium environment: one step is one 4-bar phrase."""

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
    SafetyBounds,
    Target,
    action_to_knobs,
    build_observation,
    observation_bounds,
    resolve_target,
)
from st_agent.envs.phrase_bank import PhraseBank, build_phrase_bank
from st_agent.listener.model import (
    EstimatorNoise,
    FastListeners,
    ListenerParams,
    ListenerState,
    sample_listeners,
)
from st_agent.types import Knobs, SignalChunk

if TYPE_CHECKING:
    from st_agent.music.composer import ComposerConfig

__all__ = ["FIDELITIES", "ClosedLoopEnv", "ListenerSpec", "load_listener_file"]

logger = logging.getLogger(__name__)

FIDELITIES = ("fast", "full")
#: None (population), one listener, several (one drawn per episode) or a listener.json.
ListenerSpec = ListenerParams | Sequence[ListenerParams] | str | Path | None


def load_listener_file(path: str | Path) -> ListenerParams:
    """Read a fitted ``listener.json`` (:func:`st_agent.listener.fitting.load_fit`).

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        When it is not a fitted-listener file.
    """
    from st_agent.listener.fitting import load_fit

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"listener file {path} does not exist; write one with "
                                "`st-agent fit-listener`")
    try:
        return load_fit(path)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"cannot read listener file {path}: {e}") from e


class ClosedLoopEnv(gym.Env):
    """Steer a simulated listener's (valence, arousal) toward a target with music.

    ## Description

    The agent turns three knobs (valence, tempo, energy) once per 4-bar phrase.
    The phrase that plays is real music from the project's composer and
    renderer; the simulated listener (:mod:`st_agent.listener.model`) responds to the
    features measured from it, and the agent sees the listener's state only as
    a state estimator reports it: noisy, lagged and relative to the listener's
    resting state. Listeners differ (a new one is drawn from the population at
    every reset by default), so the policy must find out how this listener
    reacts.

    Two fidelities share this interface:

    * ``"fast"`` (default): the phrase is drawn from a :class:`PhraseBank` of
      real phrases measured on a knob grid (random among the phrases of the
      grid point nearest to the knobs), and the estimate is the latent state
      plus the estimator noise measured in raw mode (:class:`EstimatorNoise`).
    * ``"full"``: the composer writes the phrase (continuing the previous
      one), it is rendered and measured, a :class:`VirtualListenerSource`
      synthesises raw EEG/ECG/EMG while it plays and the real
      :class:`StateEstimator` (calibrated on a rest period at reset) reports
      the state. About 0.1 s of CPU per step.

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
    | 2, 3         | target valence, arousal                         | -1   | 1   |
    | 4, 5         | error (target - estimate) valence, arousal      | -2   | 2   |
    | 6, 7, 8      | knobs valence, tempo, energy                    | 0    | 1   |
    | 9            | estimator confidence                            | 0    | 1   |
    | 10           | 1 when the estimate was NaN (held), else 0      | 0    | 1   |
    | 11 + 5k ...  | phrase k ago: valence, arousal, 3 knobs         | -1/0 | 1   |

    ## Rewards

    With ``d_t`` the Euclidean distance from the listener's noise-free state
    (latent state in estimator units, ``gain * (latent - rest)``) to the target
    after phrase ``t`` and ``dk`` the knob change::

        r_t = (d_{t-1} - d_t) - distance_weight * d_t
              - jerk_weight * mean((dk / max_delta) ** 2)

    The first term rewards moving toward the target, the second holding it,
    the third penalises abrupt (jerky) knob changes.

    ## Starting State

    A listener (see ``listener``) at rest after ``rest_sec`` of silence;
    knobs uniform within the bounds (or ``start_knobs``); the target at time 0.

    ## Episode End

    No termination; truncation after ``max_steps`` phrases.

    ## Arguments

    * ``target``: preset name (``calm``, ``focus``, ``uplift``, ``energize``),
      ``(valence, arousal)``, a :class:`Target` (schedules), or ``"random"``
      (a preset drawn per episode).
    * ``fidelity``: ``"fast"`` or ``"full"``.
    * ``listener``: ``None`` (population draw per episode), a
      :class:`ListenerParams`, a sequence of them (one drawn per episode) or the
      path of a fitted ``listener.json``.
    * ``phrase_bank``: a :class:`PhraseBank`, its JSON path, or ``None`` (the
      default bank, built on first use into ``runs/phrase_bank/``).
    * ``bounds``: :class:`SafetyBounds`; ``max_steps``; ``history_len``;
      ``distance_weight``; ``jerk_weight``; ``start_knobs``; ``rest_sec``;
      ``nan_prob`` (fast: chance that an estimate is lost, as a bad window);
      ``noise`` (:class:`EstimatorNoise`); ``calibration_sec`` (full);
      ``composer`` (full: a :class:`~st_agent.music.composer.ComposerConfig`; default
      the live session's settings but decoding on two threads, which the live
      session leaves to audio and estimation. Fewer candidates compose faster
      but follow the energy knob less well: 4 candidates with the first 2
      finished gave Spearman 0.73 against 0.86);
      ``render_mode`` (``"ansi"`` or None).

    ## Version History

    * v0: initial version.

    Examples
    --------
    >>> import gymnasium as gym, envs  # doctest: +SKIP
    >>> env = gym.make("SonicTelegram/ClosedLoop-v0", target="calm")  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)  # doctest: +SKIP
    >>> obs.shape  # doctest: +SKIP
    (26,)
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(self, target: str | Target | Sequence[float] = "calm",
                 fidelity: Literal["fast", "full"] = "fast", listener: ListenerSpec = None,
                 phrase_bank: PhraseBank | str | Path | None = None,
                 bounds: SafetyBounds | None = None, max_steps: int = 32,
                 history_len: int = HISTORY_LEN, distance_weight: float = 0.1,
                 jerk_weight: float = 0.05, start_knobs: Knobs | None = None,
                 rest_sec: float = 4.0, nan_prob: float = 0.0,
                 noise: EstimatorNoise | None = None, calibration_sec: float = 20.0,
                 composer: ComposerConfig | None = None,
                 render_mode: str | None = None) -> None:
        if fidelity not in FIDELITIES:
            raise ValueError(f"fidelity must be one of {FIDELITIES}, got {fidelity!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or "
                             f"None, got {render_mode!r}")
        self._random_target = isinstance(target, str) and target == "random"
        self.target = resolve_target("calm" if self._random_target else target)
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
        self._listeners = self._resolve_listeners(listener)
        if isinstance(phrase_bank, PhraseBank):
            self.bank: PhraseBank | None = phrase_bank
        elif phrase_bank is not None:
            self.bank = PhraseBank.load(phrase_bank)
        else:
            self.bank = build_phrase_bank() if fidelity == "fast" else None
        low, high = observation_bounds(history_len)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_SIZE,), dtype=np.float32)
        self._gain = np.array([self.noise.gain_valence, self.noise.gain_arousal])
        self.composer_config = composer
        self._composer = None  # full mode, built on first reset
        self._fl: FastListeners | None = None
        self.params: ListenerParams | None = None

    @staticmethod
    def _resolve_listeners(listener: ListenerSpec) -> list[ListenerParams] | None:
        if listener is None:
            return None
        if isinstance(listener, ListenerParams):
            return [listener]
        if isinstance(listener, str | Path):
            return [load_listener_file(listener)]
        items = list(listener)
        if not items or not all(isinstance(p, ListenerParams) for p in items):
            raise TypeError("listener must be None, a ListenerParams, a non-empty sequence "
                            f"of them or a listener.json path, got {listener!r}")
        return items

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode with a new (or the fixed) listener at rest."""
        super().reset(seed=seed)
        rng = self.np_random
        if self._listeners is None:
            self.params = sample_listeners(1, rng=rng)[0]
        else:
            self.params = self._listeners[int(rng.integers(len(self._listeners)))]
        if self._random_target:
            from st_agent.contract import TARGET_PRESETS
            names = sorted(TARGET_PRESETS)
            self.target = resolve_target(names[int(rng.integers(len(names)))])
        if self.start_knobs is not None:
            self.knobs = self.bounds.clip(self.start_knobs)
        else:
            self.knobs = Knobs(*(float(x) for x in rng.uniform(self.bounds.lo, self.bounds.hi)))
        self._rest = np.tanh([self.params.baseline_valence, self.params.baseline_arousal])
        self.t_sec = 0.0
        self.n_steps = 0
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
        """Play one phrase under the knobs that ``action`` sets."""
        if self.params is None:
            raise RuntimeError("call reset() before step()")
        prev_knobs = self.knobs
        self._history.appendleft((float(self._est[0]), float(self._est[1]), prev_knobs))
        self.knobs = action_to_knobs(action, prev_knobs, self.bounds)
        if self.fidelity == "fast":
            idx = self.bank.pick(self.knobs, self.np_random)
            dur = float(self.bank.duration_sec[idx])
            est = self._fl.step(self.bank.x[idx], dur)[0]
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
        # shaping: progress toward the target, staying close, smooth knobs
        reward = (d_prev - self._dist) - self.distance_weight * self._dist \
            - self.jerk_weight * jerk
        truncated = self.n_steps >= self.max_steps
        info = self._info(nan=not np.all(np.isfinite(self._est))) | extra | {
            "jerk": jerk, "phrase_sec": dur}
        return self._obs(), float(reward), False, truncated, info

    def render(self) -> str | None:
        """A one-line text summary (``render_mode="ansi"``)."""
        if self.render_mode != "ansi" or self.params is None:
            return None
        v, a = self.clean_state
        tv, ta = self.target.at(self.t_sec)
        return (f"t={self.t_sec:6.1f}s state=({v:+.2f},{a:+.2f}) target=({tv:+.2f},{ta:+.2f}) "
                f"{self.knobs!r}")

    def close(self) -> None:
        """Release the full-mode source and estimator."""
        for name in ("_src", "_estimator"):
            obj = self.__dict__.pop(name, None)
            if obj is not None:
                (obj.stop if name == "_src" else obj.close)()

    # ------------------------------------------------------------------ state
    @property
    def latent(self) -> ListenerState:
        """The listener's latent state (privileged: for the oracle and for tests)."""
        if self.fidelity == "fast":
            fl = self._fl
            return ListenerState(float(fl.state[0, 0]), float(fl.state[0, 1]),
                                 fl.familiar[0].copy(), fl.drift[0].copy(), fl.t_sec)
        return self._src.state.copy()

    def to_estimator_units(self, valence: float, arousal: float) -> np.ndarray:
        """Latent ``(valence, arousal)`` as a noise-free estimator would report it."""
        ref = self._rest if self.noise.relative else 0.0
        x = self._gain * (np.array([valence, arousal]) - ref)
        return np.minimum(np.maximum(x, -1.0), 1.0)

    @property
    def clean_state(self) -> np.ndarray:
        """Noise-free state in estimator units, shape (2,): what the reward uses."""
        if self.fidelity == "fast":
            return self.to_estimator_units(*self._fl.state[0])
        s = self._src.state
        return self.to_estimator_units(s.valence, s.arousal)

    def _distance(self) -> float:
        self._clean = self.clean_state
        tv, ta = self.target.at(self.t_sec)
        return math.hypot(self._clean[0] - tv, self._clean[1] - ta)

    def _obs(self) -> np.ndarray:
        return build_observation(tuple(self._est), self.target.at(self.t_sec), self.knobs,
                                 self._conf, list(self._history), self.history_len)

    def _info(self, nan: bool) -> dict[str, Any]:
        return {"nan_state": bool(nan), "distance": self._dist,
                "clean_state": self._clean, "target": self.target.at(self.t_sec),
                "knobs": self.knobs, "t_sec": self.t_sec}

    # ------------------------------------------------------------------ full mode
    def _reset_full(self) -> tuple[np.ndarray, float]:
        from st_agent.biometrics.estimator import EstimatorConfig, StateEstimator
        from st_agent.listener.virtual import SignalModel, VirtualListenerSource
        from st_agent.music.composer import Composer, ComposerConfig

        self.close()
        if self._composer is None:
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
        self._estimator = StateEstimator(EstimatorConfig(calibration_sec=self.calibration_sec,
                                                         reference_model=False))
        rest = max(self.rest_sec, self.calibration_sec + 3.0)
        self._src.hear(None, rest)
        return self._listen(rest)

    def _listen(self, seconds: float) -> tuple[np.ndarray, float]:
        """Read ``seconds`` of signals into the estimator; the last estimate."""
        t_end = self._src._next_sample / self._src.sfreq + seconds
        chunks = []
        while self._src._next_sample / self._src.sfreq < t_end - 1e-9:
            chunks.append(self._src.read())
        # one push: the estimator analyses all of the phrase's windows in one batch
        first = chunks[0]
        out = self._estimator.push(SignalChunk(
            np.concatenate([c.data for c in chunks], axis=1), first.sfreq, first.ch_names,
            first.ch_types, first.first_sample, first.t0_sec))
        est = out[-1] if out else None
        if est is None or est.quality.get("calibrating") or est.state.confidence == 0:
            return np.full(2, np.nan), 0.0
        return np.array([est.state.valence, est.state.arousal]), est.state.confidence

    def _step_full(self) -> tuple[np.ndarray, float, float, dict[str, Any]]:
        from st_agent.music.abc import AbcError
        from st_agent.music.composer import ComposerError
        from st_agent.music.render import measure_features, render_phrase

        seed = int(self.np_random.integers(2**31))
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
