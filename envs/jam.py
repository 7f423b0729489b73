"""Collaborative jams as a PettingZoo ``ParallelEnv``: one agent per performer.

``st_agent.envs.jam.parallel_env(performers=3, targets=["calm", "energize", "focus"])``.
PettingZoo environments are not registered with Gymnasium; this factory is the
entry point (``st_agent.envs.jam.env`` is the same function, as PettingZoo modules do).
The phrases of the fast fidelity come from :mod:`st_agent.envs.jam_bank`
(:class:`JamBank`, :func:`build_jam_bank`; also importable from here).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from st_agent.contract import (
    ACTION_SIZE,
    HISTORY_LEN,
    JAM_GROUP_SIZE,
    JAM_MAX_PERFORMERS,
    TARGET_PRESETS,
    SafetyBounds,
    Target,
    build_jam_observations,
    build_observations,
    observation_bounds,
    resolve_target,
)
from st_agent.envs.jam_args import (
    check_weights,
    resolve_bounds,
    resolve_listeners,
    resolve_start_knobs,
    resolve_targets,
)
from st_agent.envs.jam_bank import JAM_BANK_FORMAT, JamBank, build_jam_bank, default_jam_bank_path
from st_agent.listener.model import EstimatorNoise, FastListeners, ListenerParams, sample_listeners
from st_agent.music.ensemble import (
    check_per_performer,
    check_performers,
    count_clashes,
    negotiate,
    register_offset,
)
from st_agent.types import Knobs

__all__ = ["GROUP_OBS_SIZE", "JAM_BANK_FORMAT", "JamBank", "JamEnv", "build_jam_bank",
           "default_jam_bank_path", "env", "jam_history_len", "jam_observation_size",
           "parallel_env"]

logger = logging.getLogger(__name__)

FIDELITIES = ("fast", "full")
#: Entries of the group block at the end of each observation.
GROUP_OBS_SIZE = JAM_GROUP_SIZE

#: Per performer: a target spec, or "random" (a preset drawn per episode).
TargetSpec = str | Target | Sequence[float]


def jam_observation_size(history_len: int = HISTORY_LEN) -> int:
    """Length of a jam observation: contract + performer one-hot (8) + group block (8)."""
    return observation_bounds(history_len)[0].size + JAM_MAX_PERFORMERS + GROUP_OBS_SIZE


def jam_history_len(obs_size: int) -> int:
    """The ``history_len`` whose jam observation has ``obs_size`` entries.

    Raises
    ------
    ValueError
        When no history length gives that size (not a jam observation).
    """
    h, rem = divmod(int(obs_size) - jam_observation_size(0), jam_observation_size(1)
                    - jam_observation_size(0))
    if h < 0 or rem:
        raise ValueError(f"{obs_size} observations is not a jam observation; sizes are "
                         f"{jam_observation_size(0)} + 5 * history_len (e.g. "
                         f"{jam_observation_size()} for the default history of {HISTORY_LEN})")
    return h


# --------------------------------------------------------------------------- env


class JamEnv(ParallelEnv):
    """Steer several performers, and the group, toward targets with one shared piece.

    ## Description

    N performers (2 to 8) each wear sensors and each has a target in the
    (valence, arousal) plane. Every phrase (4 bars), each agent turns its own
    three knobs; those knobs shape **its own voice** (register, density,
    dynamics), while tempo and mode are **shared** and negotiated from all
    proposals (:func:`st_agent.music.ensemble.negotiate`: weighted mean tempo clipped
    into every performer's tempo bounds, weighted vote for the mode, ties keep
    the previous mode; one key per piece). Each performer's listener
    responds to the whole mix and more strongly to their own voice: the
    feature vector it hears is ``own_weight * x_own + (1 - own_weight) *
    mean_j x_j`` (:func:`st_agent.listener.model.feature_vector` of each voice).

    Two fidelities share this interface:

    * ``"fast"`` (default): each voice is a real phrase from a :class:`JamBank`
      (random among the phrases of the grid point nearest to the voice's
      family valence, the shared tempo and its energy), its register shifted
      by :func:`st_agent.music.ensemble.register_offset`; clashes are counted on the
      stored pitch-class masks of the chosen phrases, the same measure as in
      full mode. Voice features come with the accompaniment of their own
      energy (the bank's), an approximation of the shared accompaniment.
    * ``"full"``: :class:`st_agent.music.ensemble.Ensemble` composes every voice with
      the real composer (continuing its previous phrase), renders the
      multi-voice tune (one General MIDI program per voice, shared bass and
      chords) and measures each voice's features and the clashes from the MIDI.

    In both, the listeners are :class:`st_agent.listener.model.FastListeners` (latent
    dynamics plus the measured estimator noise); raw signals are not
    synthesised for N listeners.

    ## Action Space

    Per agent ``Box(-1, 1, (3,), float32)``: the change of the performer's knobs
    as a fraction of their ``max_delta``, clipped to their bounds.

    | index | action                                                  | min | max |
    |-------|---------------------------------------------------------|-----|-----|
    | 0     | valence knob: mode vote (>= 0.5 major) and own register | -1  | 1   |
    | 1     | tempo knob: the performer's tempo proposal              | -1  | 1   |
    | 2     | energy knob: own note density and loudness              | -1  | 1   |

    ## Observation Space

    Per agent ``Box(low, high, (27 + 5 * history_len,), float32)``, identical for
    every agent and every N (parameter sharing):

    | index           | observation                                           | min  | max |
    |-----------------|-------------------------------------------------------|------|-----|
    | 0 .. 10+5H      | the single-listener contract observation of this      |      |     |
    |                 | performer (:func:`st_agent.contract.build_observation`)| -2  | 2   |
    | c .. c+7        | one-hot performer index (c = 11 + 5H; 8 slots)        | 0    | 1   |
    | c+8             | negotiated (shared) tempo knob of the last phrase     | 0    | 1   |
    | c+9             | 1 when the last phrase was major, else 0              | 0    | 1   |
    | c+10            | clashes per bar of the last phrase / 16               | 0    | 1   |
    | c+11 .. c+13    | mean valence, tempo, energy knobs of the others       | 0    | 1   |
    | c+14            | number of performers / 8                              | 0    | 1   |
    | c+15            | 1 while this performer's stream is lost, else 0       | 0    | 1   |

    ## Rewards

    With ``d_i`` the distance of performer i's noise-free state (estimator
    units) to their target, ``D`` the group distance (mean over performers of
    the distance to the group target; each one's own target when
    ``group_target`` is None), ``c`` the clashes per bar and ``jerk_i`` the
    mean squared knob change in units of ``max_delta``::

        r_i = (d_i' - d_i) - distance_weight * d_i
              + group_weight * ((D' - D) - distance_weight * D)
              - clash_weight * c - jerk_weight * jerk_i

    (primes: before the phrase). The first line is the single-listener
    reward; the group term is shared by all agents.

    ## Starting State

    Every listener at rest after ``rest_sec`` of silence; each performer's
    knobs uniform within their bounds (or ``start_knobs``); targets drawn
    when ``"random"``.

    ## Episode End

    No termination; every agent is truncated after ``max_steps`` phrases
    (``agents`` is then empty until the next reset).

    ## Bad input and stream loss

    A performer count outside [2, 8] or a per-performer list of the wrong
    length raises ``ValueError`` naming the value and the allowed range. When a
    performer's stream drops out (``dropout_prob`` per phrase for
    ``dropout_steps`` phrases, or :meth:`drop_stream`), the others go on: the
    lost performer's estimate is missing (NaN flag set, confidence 0), their
    voice holds its last knobs (their actions are ignored), and the gap is
    recorded in :attr:`gaps` and ``info[agent]["stream_lost"]``.

    ## Arguments

    * ``performers``: int in [2, 8].
    * ``targets``: ``"random"`` (a preset per performer per episode), one spec
      for all (preset name, ``(valence, arousal)``, :class:`Target`) or a list
      of N specs (each may be ``"random"``).
    * ``group_target``: None (own targets) or one spec.
    * ``fidelity``: ``"fast"`` or ``"full"``.
    * ``listeners``: None (population draw per episode) or a list of N entries,
      each a :class:`ListenerParams`, a fitted ``listener.json`` path, or None.
    * ``jam_bank``: :class:`JamBank`, its JSON path, or None (default bank,
      built on first use into ``runs/phrase_bank/``; fast only).
    * ``bounds``: one :class:`SafetyBounds` or a list of N.
    * ``tempo_weights``: weights of the negotiation (default equal).
    * ``own_weight`` (0.6), ``group_weight`` (0.5), ``distance_weight`` (0.1),
      ``jerk_weight`` (0.05), ``clash_weight`` (0.02), ``max_steps`` (32),
      ``history_len``, ``rest_sec``, ``start_knobs``, ``dropout_prob``,
      ``dropout_steps``, ``noise`` (:class:`EstimatorNoise`), ``render_mode``
      (``"ansi"`` or None).

    ## Version History

    * v0: initial version.

    Examples
    --------
    >>> from st_agent.envs.jam import parallel_env                       # doctest: +SKIP
    >>> env = parallel_env(performers=3, targets=["calm", "energize", "focus"])  # doctest: +SKIP
    >>> obs, infos = env.reset(seed=0)                          # doctest: +SKIP
    >>> obs["performer_0"].shape                                # doctest: +SKIP
    (42,)
    """

    metadata: ClassVar[dict[str, Any]] = {"name": "sonic_telegram_jam_v0",
                                          "render_modes": ["ansi"], "render_fps": 1,
                                          "is_parallelizable": True}

    def __init__(self, performers: int = 3, targets: TargetSpec | Sequence[TargetSpec] = "random",
                 group_target: TargetSpec | None = None,
                 fidelity: Literal["fast", "full"] = "fast",
                 listeners: Sequence[ListenerParams | str | Path | None] | None = None,
                 jam_bank: JamBank | str | Path | None = None,
                 bounds: SafetyBounds | Sequence[SafetyBounds] | None = None,
                 tempo_weights: Sequence[float] | None = None, own_weight: float = 0.6,
                 group_weight: float = 0.5, distance_weight: float = 0.1,
                 jerk_weight: float = 0.05, clash_weight: float = 0.02, max_steps: int = 32,
                 history_len: int = HISTORY_LEN, rest_sec: float = 4.0,
                 start_knobs: Knobs | Sequence[Knobs] | None = None, dropout_prob: float = 0.0,
                 dropout_steps: int = 4, noise: EstimatorNoise | None = None,
                 render_mode: str | None = None) -> None:
        n = check_performers(performers)
        if fidelity not in FIDELITIES:
            raise ValueError(f"fidelity must be one of {FIDELITIES}, got {fidelity!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or "
                             f"None, got {render_mode!r}")
        self.n = n
        self.possible_agents = [f"performer_{i}" for i in range(n)]
        self.agents: list[str] = []
        self._target_specs = resolve_targets(targets, n)
        self.group_target = None if group_target is None else resolve_target(group_target)
        self.bounds = resolve_bounds(bounds, n)
        self.tempo_weights = None if tempo_weights is None else \
            check_per_performer("tempo_weights", tempo_weights, n)
        # validates weights and that the bounds leave a shared tempo and mode
        negotiate(np.full((n, 3), 0.5), self.tempo_weights, None, self.bounds)
        check_weights({"own_weight": own_weight, "dropout_prob": dropout_prob},
                      {"group_weight": group_weight, "distance_weight": distance_weight,
                       "jerk_weight": jerk_weight, "clash_weight": clash_weight,
                       "rest_sec": rest_sec},
                      {"max_steps": max_steps, "dropout_steps": dropout_steps})
        self.start_knobs = resolve_start_knobs(start_knobs, n)
        self._listener_specs = resolve_listeners(listeners, n)
        self.fidelity = fidelity
        self.own_weight = float(own_weight)
        self.group_weight = float(group_weight)
        self.distance_weight = float(distance_weight)
        self.jerk_weight = float(jerk_weight)
        self.clash_weight = float(clash_weight)
        self.max_steps = max_steps
        self.history_len = history_len
        self.rest_sec = float(rest_sec)
        self.dropout_prob = float(dropout_prob)
        self.dropout_steps = dropout_steps
        self.render_mode = render_mode
        self.noise = noise if noise is not None else EstimatorNoise.load()
        if isinstance(jam_bank, JamBank):
            self.jam_bank: JamBank | None = jam_bank
        elif jam_bank is not None:
            self.jam_bank = JamBank.load(jam_bank)
        else:
            self.jam_bank = build_jam_bank() if fidelity == "fast" else None
        self._build_spaces(history_len)
        self._lo = np.stack([b.lo for b in self.bounds])  # (N, 3)
        self._hi = np.stack([b.hi for b in self.bounds])
        self._md = np.array([b.max_delta for b in self.bounds])[:, None]  # (N, 1)
        self._gain = np.array([self.noise.gain_valence, self.noise.gain_arousal])
        self._ensemble = None  # full mode, built on first reset
        self._np_random: np.random.Generator | None = None
        self._fl: FastListeners | None = None
        self.gaps: list[dict[str, Any]] = []

    def _build_spaces(self, history_len: int) -> None:
        low, high = observation_bounds(history_len)
        extra = JAM_MAX_PERFORMERS + GROUP_OBS_SIZE
        self._obs_space = spaces.Box(np.concatenate([low, np.zeros(extra, np.float32)]),
                                     np.concatenate([high, np.ones(extra, np.float32)]),
                                     dtype=np.float32)
        self._act_space = spaces.Box(-1.0, 1.0, (ACTION_SIZE,), dtype=np.float32)
        self.observation_spaces = dict.fromkeys(self.possible_agents, self._obs_space)
        self.action_spaces = dict.fromkeys(self.possible_agents, self._act_space)

    # ------------------------------------------------------------------ spaces
    def observation_space(self, agent: str) -> spaces.Box:
        """The (shared, cached) observation space of ``agent``."""
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Box:
        """The (shared, cached) action space of ``agent``."""
        return self.action_spaces[agent]

    @property
    def np_random(self) -> np.random.Generator:
        """The env's generator (seeded by ``reset(seed=...)``)."""
        if self._np_random is None:
            self._np_random = np.random.default_rng()
        return self._np_random

    # ------------------------------------------------------------------ API
    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Start a jam: new (or the fixed) listeners at rest, knobs, targets."""
        if seed is not None:
            self._np_random = np.random.default_rng(seed)
        rng = self.np_random
        n = self.n
        drawn = sample_listeners(n, rng=rng)
        self.params = [p if p is not None else d
                       for p, d in zip(self._listener_specs, drawn, strict=True)]
        presets = sorted(TARGET_PRESETS)
        self.targets = [t if t is not None else
                        resolve_target(presets[int(rng.integers(len(presets)))])
                        for t in self._target_specs]
        if self.start_knobs is not None:
            self.knobs = np.stack([np.asarray(b.clip(k).as_tuple())
                                   for b, k in zip(self.bounds, self.start_knobs, strict=True)])
        else:
            self.knobs = rng.uniform(self._lo, self._hi)
        self._fl = FastListeners(self.params, rng=rng, noise=self.noise)
        self.est = self._fl.step(np.zeros(6), self.rest_sec) if self.rest_sec > 0 \
            else np.zeros((n, 2))
        self.conf = np.ones(n)
        self.t_sec = 0.0
        self.n_steps = 0
        m = max(self.history_len, 1)
        self.hist_est = np.zeros((n, m, 2))
        self.hist_knobs = np.zeros((n, m, 3))
        self.hist_count = np.zeros(n, dtype=int)
        self.lost = np.zeros(n, dtype=bool)
        self._lost_left = np.zeros(n, dtype=int)
        self._gap_start: list[tuple[int, float] | None] = [None] * n
        self.gaps = []
        neg = negotiate(self.knobs, self.tempo_weights, None, self.bounds)
        self.negotiation = neg
        self.mode = neg.mode
        self.clashes_per_bar = 0.0
        self._context = None
        if self.fidelity == "full":
            self._reset_full()
        self.dist, self.group_dist = self._distances()
        self.agents = list(self.possible_agents)
        obs = self._observations()
        infos = self._infos(np.zeros(n), {})
        return obs, infos

    def step(self, actions: dict[str, np.ndarray]
             ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, bool],
                        dict[str, bool], dict[str, dict[str, Any]]]:
        """Play one phrase under the knobs the agents set (missing agents: no change)."""
        if not self.agents:
            raise RuntimeError("the jam is over (or was never started): call reset()")
        n, rng = self.n, self.np_random
        a = np.zeros((n, ACTION_SIZE))
        for i, agent in enumerate(self.possible_agents):
            if agent in actions and actions[agent] is not None:
                ai = np.asarray(actions[agent], dtype=np.float64).reshape(-1)
                if ai.shape != (ACTION_SIZE,):
                    raise ValueError(f"action of {agent} must have shape ({ACTION_SIZE},), "
                                     f"got {np.shape(actions[agent])}")
                a[i] = ai
        a = np.clip(np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
        self._update_streams(rng)
        a[self.lost] = 0.0  # a lost performer's voice holds its last knobs
        prev = self.knobs
        self.hist_est[:, 1:] = self.hist_est[:, :-1]
        self.hist_knobs[:, 1:] = self.hist_knobs[:, :-1]
        self.hist_est[:, 0] = self.est
        self.hist_knobs[:, 0] = prev
        self.hist_count = np.minimum(self.hist_count + 1, self.hist_est.shape[1])
        self.knobs = np.clip(prev + a * self._md, self._lo, self._hi)
        neg = negotiate(self.knobs, self.tempo_weights, self.mode, self.bounds)
        self.negotiation, self.mode = neg, neg.mode
        if self.fidelity == "fast":
            x, dur, clashes, extra = self._play_fast(neg, rng)
        else:
            x, dur, clashes, extra = self._play_full(neg)
        heard = self.own_weight * x + (1.0 - self.own_weight) * x.mean(axis=0)  # (N, 6)
        est = self._fl.step(heard, dur)
        conf = np.ones(n)
        est[self.lost] = np.nan
        conf[self.lost] = 0.0
        self.est, self.conf = est, conf
        self.t_sec += dur
        self.n_steps += 1
        self.clashes_per_bar = float(clashes)
        (d_prev, g_prev), (self.dist, self.group_dist) = (self.dist, self.group_dist), \
            self._distances()
        jerk = np.mean(((self.knobs - prev) / self._md) ** 2, axis=1)  # (N,)
        dw = self.distance_weight
        group = (g_prev - self.group_dist) - dw * self.group_dist
        # shaping: own progress and holding, the group's, no clashes, smooth knobs
        reward = (d_prev - self.dist) - dw * self.dist + self.group_weight * group \
            - self.clash_weight * self.clashes_per_bar - self.jerk_weight * jerk
        truncated = self.n_steps >= self.max_steps
        obs = self._observations()
        infos = self._infos(jerk, extra | {"phrase_sec": dur})
        self._count_down()
        rewards = {ag: float(reward[i]) for i, ag in enumerate(self.possible_agents)}
        terms = dict.fromkeys(self.possible_agents, False)
        truncs = dict.fromkeys(self.possible_agents, truncated)
        if truncated:
            for i in range(n):
                self._close_gap(i)
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def render(self) -> str | None:
        """One line per performer (``render_mode="ansi"``)."""
        if self.render_mode != "ansi" or self._fl is None:
            return None
        neg = self.negotiation
        lines = [f"t={self.t_sec:6.1f}s tempo={neg.tempo:.2f} ({neg.bpm:.0f} BPM) {neg.mode} "
                 f"clashes/bar={self.clashes_per_bar:.2f} group distance={self.group_dist:.2f}"]
        clean = self.clean_state
        for i, ag in enumerate(self.possible_agents):
            tv, ta = self.targets[i].at(self.t_sec)
            lines.append(f"  {ag}: state=({clean[i, 0]:+.2f},{clean[i, 1]:+.2f}) "
                         f"target=({tv:+.2f},{ta:+.2f}) knobs={np.round(self.knobs[i], 2)}"
                         + (" LOST" if self.lost[i] else ""))
        return "\n".join(lines)

    def close(self) -> None:
        """Nothing to release (the fast listeners hold no devices)."""

    def fork(self, rng: np.random.Generator) -> JamEnv:
        """A copy of the jam as it is now (listeners, latent states, knobs, history) whose
        future noise is drawn afresh from ``rng``: for planners that try actions ahead
        without seeing the noise to come."""
        sim = copy.deepcopy(self)
        sim._np_random = np.random.default_rng(int(rng.integers(2**62)))
        if sim._fl is not None:
            sim._fl.rng = np.random.default_rng(int(rng.integers(2**62)))
        return sim

    def state(self) -> np.ndarray:
        """Global state for centralised critics: every agent's observation, stacked."""
        return np.concatenate([self._observations()[a] for a in self.possible_agents])

    # ------------------------------------------------------------------ streams
    def drop_stream(self, agent: str, steps: int | None = None) -> None:
        """Mark ``agent``'s stream as lost for the next ``steps`` phrases (None: until
        :meth:`restore_stream`); the gap is recorded when it comes back."""
        i = self._index(agent)
        self.lost[i] = True
        self._lost_left[i] = -1 if steps is None else int(steps)
        if self._gap_start[i] is None:
            self._gap_start[i] = (self.n_steps, self.t_sec)

    def restore_stream(self, agent: str) -> None:
        """``agent``'s stream is back: the gap is recorded in :attr:`gaps`."""
        self._close_gap(self._index(agent))

    def _index(self, agent: str) -> int:
        if agent not in self.possible_agents:
            raise ValueError(f"unknown agent {agent!r}; agents are {self.possible_agents}")
        return self.possible_agents.index(agent)

    def _close_gap(self, i: int) -> None:
        if self._gap_start[i] is not None:
            step0, t0 = self._gap_start[i]
            self.gaps.append({"agent": self.possible_agents[i], "start_step": step0,
                              "end_step": self.n_steps, "start_sec": t0, "end_sec": self.t_sec})
            self._gap_start[i] = None
        self.lost[i] = False
        self._lost_left[i] = 0

    def _count_down(self) -> None:
        """After a phrase: streams lost for a set number of phrases come back."""
        for i in np.flatnonzero(self.lost & (self._lost_left > 0)):
            self._lost_left[i] -= 1
            if self._lost_left[i] == 0:
                self._close_gap(int(i))

    def _update_streams(self, rng: np.random.Generator) -> None:
        """Before a phrase: draw new dropouts (``dropout_prob``)."""
        if self.dropout_prob > 0:
            new = (rng.random(self.n) < self.dropout_prob) & ~self.lost
            for i in np.flatnonzero(new):
                self.drop_stream(self.possible_agents[i], self.dropout_steps)

    # ------------------------------------------------------------------ state
    @property
    def clean_state(self) -> np.ndarray:
        """Noise-free states in estimator units, shape (N, 2): what the reward uses."""
        ref = self._fl.rest if self.noise.relative else 0.0
        return np.clip(self._gain * (self._fl.state - ref), -1.0, 1.0)

    def _target_array(self) -> np.ndarray:
        return np.array([t.at(self.t_sec) for t in self.targets])  # (N, 2)

    def _distances(self) -> tuple[np.ndarray, float]:
        clean = self.clean_state
        d = np.hypot(*(clean - self._target_array()).T)
        if self.group_target is None:
            return d, float(d.mean())
        g = np.hypot(*(clean - np.asarray(self.group_target.at(self.t_sec))).T)
        return d, float(g.mean())

    def _observations(self) -> dict[str, np.ndarray]:
        base = build_observations(self.est, self._target_array(), self.knobs, self.conf,
                                  self.hist_est, self.hist_knobs, self.hist_count,
                                  self.history_len)  # (N, n_contract)
        # the live jam builds its observations with the same function
        obs = build_jam_observations(base, self.knobs, self.negotiation.tempo,
                                     self.negotiation.mode == "major", self.clashes_per_bar,
                                     self.lost)  # (N, n_contract + 16)
        return {ag: obs[i] for i, ag in enumerate(self.possible_agents)}

    def _infos(self, jerk: np.ndarray, extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
        neg, clean = self.negotiation, self.clean_state
        tgt = self._target_array()
        out = {}
        for i, ag in enumerate(self.possible_agents):
            out[ag] = {"distance": float(self.dist[i]), "group_distance": self.group_dist,
                       "clean_state": clean[i].copy(), "target": (float(tgt[i, 0]),
                                                                  float(tgt[i, 1])),
                       "knobs": Knobs(*(float(x) for x in self.knobs[i])),
                       "voice_valence": neg.voice_valence[i], "tempo": neg.tempo,
                       "mode": neg.mode, "clashes_per_bar": self.clashes_per_bar,
                       "stream_lost": bool(self.lost[i]), "jerk": float(jerk[i]),
                       "t_sec": self.t_sec, **extra}
        return out

    # ------------------------------------------------------------------ fidelities
    def _play_fast(self, neg: Any, rng: np.random.Generator
                   ) -> tuple[np.ndarray, float, float, dict[str, Any]]:
        """Voices from the jam bank: features (N, 6), phrase seconds, clashes per bar."""
        bank = self.jam_bank
        vk = np.column_stack([neg.voice_valence, np.full(self.n, neg.tempo), self.knobs[:, 2]])
        idx = bank.pick(vk, np.full(self.n, neg.mode == "major"), rng)
        x = bank.bank.x[idx].copy()
        shift = np.array([register_offset(v) for v in neg.voice_valence])
        x[:, 4] = np.clip((bank.mean_pitch[idx] + shift - 72.0) / 8.0, -1.5, 1.5)
        dur = float(bank.bank.duration_sec[idx].mean())
        clashes = float(count_clashes(bank.sounding[idx], bank.onset[idx])) / bank.bars
        return x, dur, clashes, {"phrases": idx.tolist()}

    def _reset_full(self) -> None:
        if self._ensemble is None:
            from st_agent.music.ensemble import Ensemble

            self._ensemble = Ensemble()
        if self.n > len(self._ensemble.programs):
            raise ValueError(f"{self.n} performers but {len(self._ensemble.programs)} programs")

    def _play_full(self, neg: Any) -> tuple[np.ndarray, float, float, dict[str, Any]]:
        """Compose, render and measure the jam phrase (real composer and renderer)."""
        from st_agent.listener.model import feature_vector

        ens = self._ensemble
        proposals = [Knobs(*(float(v) for v in k)) for k in self.knobs]
        seed = int(self.np_random.integers(2**31))
        phrase = ens.compose(proposals, context=self._context, seed=seed, negotiation=neg)
        self._context = phrase
        pm = ens.render(phrase)
        m = ens.measure(pm, phrase.n_voices, phrase.bars, phrase.meter)
        x = np.stack([feature_vector(f) for f in m.voices])
        return x, float(m.mix.duration_sec), m.clashes_per_bar, {"abc": phrase.abc,
                                                                 "features": m.voices}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ensemble"] = None  # rebuilt on the next reset (holds a torch model)
        return state


def parallel_env(performers: int = 3, **kwargs: Any) -> JamEnv:
    """A :class:`JamEnv` with ``performers`` agents (PettingZoo's factory convention)."""
    return JamEnv(performers=performers, **kwargs)


#: PettingZoo modules expose their factory as ``env`` too.
env = parallel_env
