"""Target changes inside a session: the knobs follow a planned path to the new target.

When the target changes during a session -- a schedule (``st-agent session
--target calm --target-schedule focus@10m``) or a "change target" control --
the controller does not jump: the knobs follow the "wormhole" planner of
:mod:`st_agent.music.transition` from the knobs playing now to the new
target's knobs, so that consecutive phrases stay close in what is *heard*
(:mod:`st_agent.music.audio_features` coordinates), and the controller
resumes at the end of the path.

1. **Calibration** (at the change, in the composer's thread): ``points``
   knob settings on the line from the current knobs to the end knobs are
   composed, rendered and measured (:func:`st_agent.music.transition.calibrate`,
   one seed each). On an accelerated clock the decision waits for it; in real
   time the knobs hold until it is done.
2. **Plan** (:func:`st_agent.music.transition.plan_steps`): positions at equal
   predicted audio-feature steps, as many phrases as needed for every
   predicted step to be at most ``plan_fraction * max_step`` and every knob
   step at most the session's rate limit (``max_delta``). The rest of the
   bound is left for the variation between phrases composed at the same
   knobs (between 4 seeds at each preset's knobs: mean 0.4-1.4 units, largest
   2.5, at calm's: ``benchmarks/bench_voices_v2.py``).
3. **Play**: each step composes ``candidates`` phrases and plays the one whose
   measured audio is closest to the planned point plus closest to the
   previous phrase (as :func:`~st_agent.music.transition.play_path`; the
   first step's previous is the phrase playing at the change, synthesised and
   measured with the calibration); a candidate whose step would exceed
   ``max_step`` is taken only when every candidate does (then the smallest).

The end knobs of a preset target are its fixed-baseline knobs
(:data:`st_agent.policies.baselines.FIXED_KNOBS`); of a custom point, those of
the nearest preset point. Both are clipped to the session's bounds.

Events (in the recording, shown in the report's "why" column): one
``target_change`` when the path is planned (old and new target, start and end
knobs, predicted steps, path length), one ``target_change_step`` per phrase of
the path (knobs, planned and measured coordinates, the step from the previous
one), and ``target_change_done`` when the controller resumes.

API for a control (the dashboard): ``session.target_change.request(target)``
changes the target at the next decision (any ``Target`` or preset name); the
hook in :mod:`st_agent.live.runtime` then calls :meth:`TargetChange.decide`.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from st_agent.contract import TARGET_PRESETS, SafetyBounds, Target, TargetPoint, resolve_target
from st_agent.types import Knobs, Phrase

__all__ = ["PlannedDecision", "TargetChange", "TargetSchedule", "check_transition_flags",
           "end_knobs", "for_session", "parse_target_schedule", "session_target"]

logger = logging.getLogger(__name__)

_ENTRY = re.compile(r"^\s*([A-Za-z_]+)\s*@\s*([0-9]*\.?[0-9]+)\s*(s|m|min)?\s*$")
#: Part of ``max_step`` the plan may use per phrase; the rest is for seed variation.
PLAN_FRACTION = 0.5


def parse_target_schedule(spec: str) -> tuple[tuple[float, str], ...]:
    """``"focus@10m,energize@900"`` -> ``((600.0, "focus"), (900.0, "energize"))``.

    Parameters
    ----------
    spec : str
        Comma-separated ``preset@time``; time in seconds (``600``, ``600s``) or
        minutes (``10m``), counted from the end of the calibration (the music's
        start); times increase and are > 0. Empty: no change.

    Raises
    ------
    ValueError
        Naming the bad entry, for an unknown preset, a malformed time or times
        that do not increase.
    """
    if not isinstance(spec, str):
        raise ValueError(f"--target-schedule must be text like 'focus@10m,energize@15m', "
                         f"got {spec!r}")
    out: list[tuple[float, str]] = []
    for part in (p for p in spec.split(",") if p.strip()):
        m = _ENTRY.match(part)
        if m is None:
            raise ValueError(f"--target-schedule entry {part.strip()!r} is not preset@time; "
                             "write e.g. 'focus@10m' (minutes) or 'focus@600' (seconds)")
        name, value, unit = m.group(1), float(m.group(2)), m.group(3) or "s"
        if name not in TARGET_PRESETS:
            raise ValueError(f"--target-schedule entry {part.strip()!r}: unknown target "
                             f"preset {name!r}; choose one of {sorted(TARGET_PRESETS)}")
        t = value * (60.0 if unit.startswith("m") else 1.0)
        if not t > 0 or (out and t <= out[-1][0]):
            raise ValueError(f"--target-schedule times must be > 0 and increase, got "
                             f"{part.strip()!r} after {out[-1][0] if out else 0:g} s")
        out.append((t, name))
    return tuple(out)


class TargetSchedule:
    """A piecewise-constant schedule of target regions (each its own band).

    Duck-types :class:`~st_agent.contract.Target` where the session uses it
    (``at``, ``region_at``, ``distance``, ``name``).

    Parameters
    ----------
    entries : sequence of (start_sec, Target)
        The first starts at 0; starts increase.
    """

    def __init__(self, entries: Sequence[tuple[float, Target]]) -> None:
        if not entries or entries[0][0] != 0.0:
            raise ValueError("a target schedule starts at 0 s")
        starts = [float(t) for t, _ in entries]
        if any(b <= a for a, b in itertools.pairwise(starts)):
            raise ValueError(f"target schedule starts must increase, got {starts}")
        self.entries = tuple((float(t), tg) for t, tg in entries)
        self.name = " -> ".join(f"{tg.name}@{t:g}s" if t else tg.name for t, tg in self.entries)
        self.relative = all(tg.relative for _, tg in self.entries)

    def segment(self, t_sec: float) -> Target:
        """The target in force at ``t_sec``."""
        cur = self.entries[0][1]
        for t, tg in self.entries:
            if t <= t_sec:
                cur = tg
        return cur

    def at(self, t_sec: float) -> TargetPoint:
        """The nominal point at ``t_sec`` (carrying ``.region``)."""
        return self.segment(t_sec).at(0.0)

    def region_at(self, t_sec: float) -> tuple[float, float, float, float]:
        """The region ``(v_lo, v_hi, a_lo, a_hi)`` at ``t_sec``."""
        return self.segment(t_sec).region_at(0.0)

    def distance(self, state: Sequence[float], t_sec: float = 0.0) -> float:
        """Distance from ``(valence, arousal)`` to the region at ``t_sec``."""
        return self.segment(t_sec).distance(state)


def session_target(target: str, schedule: str = "") -> Target | TargetSchedule:
    """The session's target: ``target`` alone, or followed by ``schedule``."""
    first = resolve_target(target)
    entries = parse_target_schedule(schedule)
    if not entries:
        return first
    return TargetSchedule([(0.0, first), *((t, resolve_target(n)) for t, n in entries)])


def check_transition_flags(target: str, schedule: str, max_step: float,
                           candidates: int) -> None:
    """Validate ``--target-schedule``, ``--transition-max-step``, ``--transition-candidates``.

    Raises
    ------
    ValueError
        Naming the flag, the bad value and what is allowed.
    """
    session_target(target, schedule)
    TargetChange(SafetyBounds(), max_step, candidates)


def for_session(cfg: Any, bounds: SafetyBounds) -> TargetChange:
    """The :class:`TargetChange` of a :class:`~st_agent.live.session.SessionConfig`."""
    return TargetChange(bounds, getattr(cfg, "transition_max_step", 3.0),
                        getattr(cfg, "transition_candidates", 2), seed=cfg.seed,
                        soundfont=cfg.soundfont, block=bool(cfg.accelerated),
                        initial=cfg.target)


def end_knobs(target: Any, bounds: SafetyBounds) -> Knobs:
    """Knobs a transition to ``target`` ends at (module docstring), clipped to ``bounds``."""
    from st_agent.policies.baselines import FIXED_KNOBS

    name = getattr(target, "name", "")
    if name not in FIXED_KNOBS:
        point = np.asarray(target.at(0.0), dtype=float)
        name = min(TARGET_PRESETS, key=lambda n: float(np.hypot(*(point - TARGET_PRESETS[n]))))
    return bounds.clip(Knobs(*FIXED_KNOBS[name]))


@dataclass
class PlannedDecision:
    """What a decision inside a transition plays.

    Parameters
    ----------
    knobs : Knobs
    words : list of str
        Why (the decision's reasons).
    submit : callable or None
        ``submit(maker, context) -> Future`` composing the step's phrase (the
        best of the candidates); None: compose as usual (``maker.submit``).
    """

    knobs: Knobs
    words: list[str]
    submit: Callable[[Any, Phrase | None], Future] | None = None


@dataclass
class _Plan:
    old: str
    new: str
    knobs: list[Knobs]  # steps 1..N-1 of the path (step 0 is what played at the change)
    coords: np.ndarray  # (N, 4) predicted coordinates, row 0 the start
    next: int = 1
    prev_coords: np.ndarray | None = None


class TargetChange:
    """Plans and follows the knob path after a target change (module docstring).

    Parameters
    ----------
    bounds : SafetyBounds
        The session's; every step respects its ranges and ``max_delta``.
    max_step : float
        Bound on the audio-feature step between consecutive phrases (feature
        units of :func:`~st_agent.music.audio_features.feature_coordinates`).
    candidates : int
        Phrases composed per step (the best by audio is played).
    points : int
        Calibration points on the knob line (>= 2).
    seed : int
        Base seed of the calibration and candidate phrases.
    soundfont : path or None
        For rendering the calibration and candidates.
    block : bool
        Wait for the calibration at the decision (accelerated sessions);
        False: hold the knobs until it is ready.
    initial : Target, TargetSchedule or str, optional
        The target the music starts with (its region at 0 s); a change is any
        later region. Default: the target of the first decision.
    """

    def __init__(self, bounds: SafetyBounds, max_step: float = 3.0, candidates: int = 2,
                 points: int = 5, seed: int = 0, soundfont: Any = None,
                 block: bool = False, initial: Any = None) -> None:
        if not (isinstance(max_step, int | float) and math.isfinite(max_step) and max_step > 0):
            raise ValueError(f"--transition-max-step must be a number > 0 (audio-feature "
                             f"units), got {max_step!r}")
        for name, v, lo in (("--transition-candidates", candidates, 1),
                            ("--transition-points", points, 2)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
        self.bounds, self.max_step, self.candidates = bounds, float(max_step), candidates
        self.points, self.seed, self.soundfont, self.block = points, seed, soundfont, block
        self._region: tuple[float, ...] | None = None
        self._name = ""
        if initial is not None:
            first = resolve_target(initial) if isinstance(initial, str) else initial
            self._region = tuple(first.region_at(0.0))
            self._name = _name_of(first, 0.0)
        self._requested: Any = None
        self._calibrating: tuple[Future, str, str, Knobs, Knobs] | None = None
        self._plan: _Plan | None = None
        self._events: list[tuple[str, dict[str, Any]]] = []
        self._synth: Any = None
        self._n = 0  # phrases composed for transitions (seeds)
        self._changes = 0

    @property
    def active(self) -> bool:
        """Whether a transition is being planned or followed (the controller waits)."""
        return self._calibrating is not None or self._plan is not None

    def request(self, target: Any) -> None:
        """Change the target at the next decision (one assignment, safe from another
        thread); from then on the request overrides the schedule's later entries.

        Parameters
        ----------
        target : Target or str
            A preset name, a ``(valence, arousal)`` pair or a Target.
        """
        self._requested = resolve_target(target)

    def current_target(self, scheduled: Any) -> Any:
        """The target in force: the last request, else the schedule's."""
        return self._requested if self._requested is not None else scheduled

    def pop_events(self) -> list[tuple[str, dict[str, Any]]]:
        """``(kind, payload)`` of the events since the last call (the runtime records them)."""
        out, self._events = self._events, []
        return out

    def knobs_at(self, step: int) -> Knobs | None:
        """Knobs of step ``step`` (1..N-1) of the current path; None without a plan."""
        if self._plan is None or not 1 <= step <= len(self._plan.knobs):
            return None
        return self._plan.knobs[step - 1]

    # ------------------------------------------------------------------ decisions
    def decide(self, now: float, t_target: float, target: Any, knobs: Knobs, maker: Any,
               names: tuple[str, str] | None = None) -> PlannedDecision | None:
        """The hook at each decision: None lets the controller decide.

        Parameters
        ----------
        now : float
            Session time, seconds (for the events).
        t_target : float
            Time on the target's clock (seconds since the music started).
        target : Target or TargetSchedule
            The target in force (:meth:`current_target`); a change of its region
            at ``t_target`` starts a transition; its name (or its segment's)
            names the new target.
        knobs : Knobs
            The knobs playing now.
        maker : PhraseMaker
            The session's composer thread (``maker.run``, ``maker.composer``).
        names : (old, new), optional
            Names for the events (default: from the targets).
        """
        point = target.at(t_target)
        region = tuple(getattr(point, "region", tuple(point)))
        if self._region is None:
            self._region = region
            self._name = _name_of(target, t_target)
            return None
        if region != self._region:
            old, new = names or (self._name, _name_of(target, t_target))
            self._region, self._name = region, new
            self._start(now, old, new, knobs,
                        end_knobs(_segment(target, t_target), self.bounds), maker)
        if self._calibrating is not None:
            fut, old, new, start, end = self._calibrating
            if not (self.block or fut.done()):
                return PlannedDecision(knobs, [f"target changed {old} -> {new}: knobs hold "
                                               "while the path is planned"])
            self._calibrating = None
            cal, prev = fut.result()
            self._make_plan(now, cal, old, new, start, end)
            self._plan.prev_coords = prev
        if self._plan is None:
            return None
        return self._step(now)

    def _start(self, now: float, old: str, new: str, start: Knobs, end: Knobs,
               maker: Any) -> None:
        from st_agent.music.transition import calibrate

        self._plan = None
        logger.info("t=%.1fs target %s -> %s: calibrating the path %r -> %r", now, old, new,
                    start, end)
        player = self._player(maker)
        self._changes += 1
        fut = maker.run(self._calibrate, calibrate, maker, player, start, end,
                        self.seed + 700_000 + 1000 * self._changes)
        self._calibrating = (fut, old, new, start, end)

    def _calibrate(self, calibrate: Callable, maker: Any, player: Any, start: Knobs,
                   end: Knobs, seed: int) -> tuple[Any, np.ndarray | None]:
        """In the composer thread: the calibration, and the coordinates of the phrase
        playing at the change (the last one composed) as the first step's previous."""
        from st_agent.music.audio_features import feature_coordinates, measure_audio

        cal = calibrate(player, start, end, self.points, 1, seed)
        prev = None
        if maker.last is not None and self._synth is not None:
            x = np.asarray(self._synth.synthesize(maker.last[2]), dtype=np.float64)
            if x.size >= 0.4 * self._synth.sample_rate:
                prev = feature_coordinates(measure_audio(x, self._synth.sample_rate))
        return cal, prev

    def _make_plan(self, now: float, cal: Any, old: str, new: str, start: Knobs,
                   end: Knobs) -> None:
        from st_agent.music.transition import _lerp, largest_step, plan_steps

        u, coords = plan_steps(cal, start, end, PLAN_FRACTION * self.max_step,
                               self.bounds.max_delta)
        self._plan = _Plan(old, new, [self.bounds.clip(_lerp(start, end, x)) for x in u[1:]],
                           coords)
        steps = np.linalg.norm(np.diff(coords, axis=0), axis=1)
        self._events.append(("target_change", {
            "t_session": now, "old": old, "new": new, "start_knobs": start.as_tuple(),
            "end_knobs": end.as_tuple(), "steps": len(u) - 1, "u": u.tolist(),
            "path_length": float(cal.arc_length()[-1]), "max_step": self.max_step,
            "predicted_steps": steps.tolist(), "predicted_largest": largest_step(coords),
            "direct_jump_predicted": float(np.linalg.norm(coords[-1] - coords[0]))}))
        logger.info("t=%.1fs target %s -> %s: %d phrases, predicted steps <= %.2f", now, old,
                    new, len(u) - 1, largest_step(coords))

    def _step(self, now: float) -> PlannedDecision:
        plan = self._plan
        assert plan is not None
        k = plan.next
        kn = plan.knobs[k - 1]
        words = [f"target changed {plan.old} -> {plan.new}: planned step {k}/{len(plan.knobs)} "
                 f"of the path (audio-feature steps <= {self.max_step:g})"]
        plan.next += 1
        last = plan.next > len(plan.knobs)
        if last:
            self._plan = None
            words.append("end of the path: the controller resumes")
        target = plan.coords[k]

        def submit(maker: Any, context: Phrase | None) -> Future:
            return maker.run(self._compose_step, maker, kn, context, target, plan, k, now,
                             last)

        return PlannedDecision(kn, words, submit)

    # ------------------------------------------------------------------ composing
    def _player(self, maker: Any) -> Any:
        from st_agent.music.piece import PhrasePlayer
        from st_agent.music.render import AudioRenderer

        if self._synth is None:
            self._synth = AudioRenderer(self.soundfont)
        return PhrasePlayer(maker.composer, self._synth)

    def _compose_step(self, maker: Any, knobs: Knobs, context: Phrase | None,
                      target: np.ndarray, plan: _Plan, k: int, now: float, last: bool
                      ) -> tuple[Phrase, Any, Any, float]:
        """In the composer thread: the best of ``candidates`` phrases for one step."""
        from st_agent.music.abc import AbcError
        from st_agent.music.audio_features import feature_coordinates
        from st_agent.music.composer import ComposerError

        player = self._player(maker)
        ctx = _Context(context) if context is not None else None
        best, best_cost, best_z = None, math.inf, None
        for _ in range(self.candidates):
            self._n += 1
            try:
                cand = player.play(knobs, seed=self.seed + 800_000 + self._n, context=ctx)
            except (ComposerError, AbcError) as e:
                logger.warning("transition candidate failed: %s", e)
                continue
            z = feature_coordinates(cand.audio)
            cost = float(np.linalg.norm(z - target))
            if plan.prev_coords is not None:
                step = float(np.linalg.norm(z - plan.prev_coords))
                cost += step + (1e3 * (step - self.max_step) if step > self.max_step else 0.0)
            if cost < best_cost:
                best, best_cost, best_z = cand, cost, z
        if best is None:  # the music must not stop: as PhraseMaker, repeat the last phrase
            if maker.last is None:
                raise RuntimeError("no transition phrase could be composed")
            maker.errors.append("transition step: every candidate failed")
            return (*maker.last, time.monotonic())
        step = None if plan.prev_coords is None else float(np.linalg.norm(best_z
                                                                          - plan.prev_coords))
        plan.prev_coords = best_z
        self._events.append(("target_change_step", {
            "t_session": now, "step": k, "of": len(plan.knobs), "knobs": knobs.as_tuple(),
            "planned": target.tolist(), "measured": best_z.tolist(),
            "audio": best.audio.as_dict(), "step_from_previous": step,
            "plan_distance": float(np.linalg.norm(best_z - target)),
            "old": plan.old, "new": plan.new}))
        if last:
            self._events.append(("target_change_done", {"t_session": now, "new": plan.new,
                                                        "knobs": knobs.as_tuple()}))
        voiced = getattr(maker, "voiced", None)  # the session's sound (PhraseMaker.voiced)
        pm = voiced(best.pm, knobs) if voiced is not None else best.pm
        maker.last = (best.phrase, best.midi, pm)
        return best.phrase, best.midi, pm, time.monotonic()

    def close(self) -> None:
        """Release the renderer (safe to call twice)."""
        if self._synth is not None:
            self._synth.close()
            self._synth = None


@dataclass
class _Context:
    """What PhrasePlayer reads of a context phrase (``.phrase``)."""

    phrase: Phrase


def _segment(target: Any, t_sec: float) -> Any:
    seg = getattr(target, "segment", None)
    return seg(t_sec) if callable(seg) else target


def _name_of(target: Any, t_sec: float) -> str:
    return str(getattr(_segment(target, t_sec), "name", "custom"))
