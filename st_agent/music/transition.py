"""``st-agent transition``: a "wormhole" from one musical state to another.

The music moves from the ``start`` knobs to the ``end`` knobs in a given time so
that consecutive phrases stay close in what is *heard* -- the audio features of
:mod:`st_agent.music.audio_features` (loudness, spectral centroid and flux,
onset rate), compared in :func:`~st_agent.music.audio_features.feature_coordinates`
-- and the last phrase is the end state.

1. **Calibration** (:func:`calibrate`): ``points`` knob settings on the
   straight line from start to end are composed, rendered and measured,
   ``seeds`` phrases each -- the ends and the middle, then the middle of the
   segment whose audio changes most, and so on; the median coordinates per
   point give a piecewise-linear model of how the audio changes along the line.
2. **Plan** (:func:`plan_path`): positions ``u_0 = 0 < ... < u_{N-1} = 1`` on the
   line at equal steps of predicted audio-feature *arc length*, so that each
   phrase moves by the same predicted amount, ``L / (N - 1)``. ``N`` is the
   number of phrases whose predicted durations (4 bars at each phrase's tempo)
   add up closest to ``minutes``.
3. **Play** (:func:`play_path`): each step composes ``candidates`` phrases
   (different seeds, the previous phrase as context) and plays the one that
   minimises its distance to the planned point plus its distance to the
   previous phrase, both measured on its audio.

The straight jump it is compared with plays the start knobs for the first
half of the phrases and the end knobs from then on, with the same candidate
choice (its planned points are the start's, then the end's) and the same seeds.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.music.audio_features import (
    AUDIO_FEATURE_NAMES,
    describe_change,
    feature_coordinates,
)
from st_agent.music.piece_config import TransitionConfig, out_dir
from st_agent.types import Knobs

__all__ = ["Calibration", "TransitionConfig", "TransitionResult", "calibrate", "largest_step",
           "plan_path", "plan_steps", "play_path", "transition"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    """Measured audio along the straight knob line from start to end.

    Parameters
    ----------
    u : ndarray, shape (M,)
        Positions on the line, 0 (start) to 1 (end).
    coords : ndarray, shape (M, 4)
        Median :func:`feature_coordinates` of the phrases at each position.
    features : ndarray, shape (M, 4)
        Median raw features (:data:`AUDIO_FEATURE_NAMES`).
    """

    u: np.ndarray
    coords: np.ndarray
    features: np.ndarray

    def arc_length(self) -> np.ndarray:
        """Cumulative feature-space distance at each position, shape (M,)."""
        d = np.linalg.norm(np.diff(self.coords, axis=0), axis=1)
        return np.concatenate([[0.0], np.cumsum(d)])

    def at(self, u: np.ndarray) -> np.ndarray:
        """Predicted coordinates at positions ``u`` (piecewise linear), shape (len(u), 4)."""
        u = np.asarray(u, dtype=np.float64)
        return np.column_stack([np.interp(u, self.u, self.coords[:, j])
                                for j in range(self.coords.shape[1])])


def _lerp(start: Knobs, end: Knobs, u: float) -> Knobs:
    a, b = np.asarray(start.as_tuple()), np.asarray(end.as_tuple())
    return Knobs(*np.clip(a + float(u) * (b - a), 0.0, 1.0).tolist())


def calibrate(player: Any, start: Knobs, end: Knobs, points: int = 7, seeds: int = 2,
              seed: int = 0) -> Calibration:
    """Measure the audio of phrases at ``points`` positions on the line start -> end.

    The positions are chosen adaptively: the ends and the middle first, then the
    segment across which the measured audio changes most is split at its middle,
    until ``points`` positions are measured. A sudden change (such as the
    arrangement switching its accompaniment pattern at an energy threshold) is
    so located to within ``2 ** -(points - 2)`` of the line.

    Parameters
    ----------
    player : PhrasePlayer
    start, end : Knobs
    points : int
        Positions to measure (>= 2), ends included.
    seeds : int
        Phrases per position (composed without context); the median is kept.
    seed : int
        First composer seed.

    Returns
    -------
    calibration : Calibration
    """
    if points < 2 or seeds < 1:
        raise ValueError(f"points must be >= 2 and seeds >= 1, got {points}, {seeds}")
    measured: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def measure(u: float) -> None:
        base = seed + len(measured) * seeds
        heard = [player.play(_lerp(start, end, u), seed=base + s).audio for s in range(seeds)]
        measured[u] = (np.median([feature_coordinates(a) for a in heard], axis=0),
                       np.median([a.as_vector() for a in heard], axis=0))

    for u in (0.0, 1.0, 0.5)[:points]:
        measure(u)
    while len(measured) < points:
        us = sorted(measured)
        gaps = [np.linalg.norm(measured[b][0] - measured[a][0])
                for a, b in itertools.pairwise(us)]
        i = int(np.argmax(gaps))
        measure(0.5 * (us[i] + us[i + 1]))
    us = sorted(measured)
    return Calibration(np.array(us), np.array([measured[u][0] for u in us]),
                       np.array([measured[u][1] for u in us]))


def _phrase_sec(knobs: Knobs, quarters: float) -> float:
    return quarters * 60.0 / knobs.bpm


def plan_path(cal: Calibration, start: Knobs, end: Knobs, total_sec: float,
              quarters_per_phrase: float = 16.0, max_phrases: int = 400
              ) -> tuple[np.ndarray, np.ndarray]:
    """Positions on the line at equal predicted audio-feature steps, fitting ``total_sec``.

    Parameters
    ----------
    cal : Calibration
    start, end : Knobs
    total_sec : float
        Length of the transition, seconds of music.
    quarters_per_phrase : float
        Quarter notes per phrase (4 bars of 4/4 = 16).
    max_phrases : int
        Upper limit on the number of phrases.

    Returns
    -------
    u : ndarray, shape (N,)
        Positions, ``u[0] = 0`` and ``u[-1] = 1``; N (>= 2) phrases whose
        durations add up closest to ``total_sec``.
    coords : ndarray, shape (N, 4)
        Predicted coordinates of each phrase.
    """
    if not total_sec > 0:
        raise ValueError(f"total_sec must be > 0, got {total_sec!r}")
    s = cal.arc_length()
    length = float(s[-1])

    def positions(n: int) -> np.ndarray:
        if length <= 1e-12:
            return np.linspace(0.0, 1.0, n)
        # s is non-decreasing; np.interp inverts it (flat parts map to their start)
        return np.interp(np.linspace(0.0, length, n), s, cal.u)

    def length_sec(u: np.ndarray) -> float:
        return sum(_phrase_sec(_lerp(start, end, x), quarters_per_phrase) for x in u)

    best = positions(2)
    for n in range(3, max_phrases + 1):
        u = positions(n)
        sec = length_sec(u)
        if sec > total_sec:
            if sec - total_sec < total_sec - length_sec(best):
                best = u  # one phrase more lands closer to the requested length
            break
        best = u
    return best, cal.at(best)


def plan_steps(cal: Calibration, start: Knobs, end: Knobs, max_step: float,
               max_knob_step: float = 1.0, max_phrases: int = 400
               ) -> tuple[np.ndarray, np.ndarray]:
    """Positions on the line at equal predicted steps, each at most ``max_step``.

    The bounded form of :func:`plan_path` (used inside a session, where the
    length of the transition follows from the bound rather than a duration):
    ``N - 1 = max(ceil(L / max_step), ceil(max |end - start| / max_knob_step), 1)``
    steps, ``L`` the predicted path length, so that every predicted step is
    at most ``max_step`` and no knob moves more than ``max_knob_step`` per phrase.

    Parameters
    ----------
    cal : Calibration
    start, end : Knobs
    max_step : float
        Largest predicted step per phrase, feature-coordinate units (> 0).
    max_knob_step : float
        Largest knob change per phrase (the session's ``max_delta``), in (0, 1].
    max_phrases : int
        Upper limit on N.

    Returns
    -------
    u : ndarray, shape (N,)
        ``u[0] = 0`` (the phrase playing at the change), ``u[-1] = 1``.
    coords : ndarray, shape (N, 4)
        Predicted coordinates of each phrase.
    """
    if not (math.isfinite(max_step) and max_step > 0):
        raise ValueError(f"max_step must be > 0, got {max_step!r}")
    if not 0 < max_knob_step <= 1:
        raise ValueError(f"max_knob_step must be in (0, 1], got {max_knob_step!r}")
    s = cal.arc_length()
    length = float(s[-1])
    knob_span = float(np.max(np.abs(np.subtract(end.as_tuple(), start.as_tuple()))))
    n_steps = max(math.ceil(length / max_step - 1e-9), math.ceil(knob_span / max_knob_step
                                                                 - 1e-9), 1)
    n = min(n_steps + 1, max_phrases)
    u = np.linspace(0.0, 1.0, n) if length <= 1e-12 else \
        np.interp(np.linspace(0.0, length, n), s, cal.u)
    # equal arc length may crowd the knob steps where the audio changes little
    knob_steps = np.abs(np.diff(u)) * knob_span
    if knob_steps.size and knob_steps.max() > max_knob_step + 1e-9:
        u = _spread_knob_steps(u, knob_span, max_knob_step)
    return u, cal.at(u)


def _spread_knob_steps(u: np.ndarray, knob_span: float, max_knob_step: float) -> np.ndarray:
    """Cap each step of ``u`` at ``max_knob_step / knob_span``, adding steps where needed."""
    cap = max_knob_step / knob_span
    out = [0.0]
    for b in u[1:]:
        while b - out[-1] > cap + 1e-12:
            out.append(out[-1] + cap)
        out.append(float(b))
    return np.array(out)


def largest_step(coords: np.ndarray) -> float:
    """Largest distance between consecutive rows of ``coords`` (shape (N, 4))."""
    c = np.asarray(coords, dtype=np.float64)
    return float(np.max(np.linalg.norm(np.diff(c, axis=0), axis=1))) if len(c) > 1 else 0.0


def play_path(player: Any, knobs: Sequence[Knobs], targets: np.ndarray, candidates: int = 3,
              seed: int = 0) -> list[Any]:
    """Play one phrase per step, choosing among candidates by their measured audio.

    Parameters
    ----------
    player : PhrasePlayer
    knobs : sequence of Knobs
        Knobs of each step (N).
    targets : ndarray, shape (N, 4)
        Planned coordinates of each step.
    candidates : int
        Phrases composed per step (seeds ``seed + k * candidates + c``).
    seed : int

    Returns
    -------
    played : list of Rendered
        The chosen phrase of each step; ``info`` holds the planned point's
        distance, the step from the previous phrase and an explanation naming
        the audio features that changed most.
    """
    if len(knobs) != len(targets):
        raise ValueError(f"{len(knobs)} knob settings but {len(targets)} targets")
    played: list[Any] = []
    for k, (kn, target) in enumerate(zip(knobs, targets, strict=True)):
        prev = played[-1] if played else None
        best, best_cost = None, np.inf
        for c in range(candidates):
            cand = player.play(kn, seed=seed + k * candidates + c, context=prev)
            z = feature_coordinates(cand.audio)
            cost = float(np.linalg.norm(z - target))
            if prev is not None:
                cost += float(np.linalg.norm(z - feature_coordinates(prev.audio)))
            if cost < best_cost:
                best, best_cost = cand, cost
        assert best is not None
        z = feature_coordinates(best.audio)
        best.info["plan_distance"] = float(np.linalg.norm(z - target))
        if prev is None:
            best.info["step"] = 0.0
            best.info["explanation"] = "first phrase"
        else:
            best.info["step"] = float(np.linalg.norm(z - feature_coordinates(prev.audio)))
            best.info["explanation"] = describe_change(prev.audio, best.audio)
        played.append(best)
    return played


@dataclass
class TransitionResult:
    """What ``transition`` wrote and measured.

    Parameters
    ----------
    folder : Path
    wav_path : Path or None
    n_phrases : int
    music_sec : float
    max_step_planned : float
        Largest measured step between consecutive phrases of the planned path
        (feature-coordinate units).
    max_step_direct : float or None
        The same for the straight jump (None when not compared).
    max_step_predicted : float
        The plan's predicted largest step.
    summary : dict
    """

    folder: Path
    wav_path: Path | None
    n_phrases: int
    music_sec: float
    max_step_planned: float
    max_step_direct: float | None
    max_step_predicted: float
    summary: dict[str, Any]


def _write_piece(out: Path, name: str, items: list[Any], rate: int, wav: bool, title: str
                 ) -> Path | None:
    from st_agent.music.piece import join_midi, score_abc, write_piece_wav

    comments = [f"phrase {i}: " + ", ".join(f"{k}={v:.2f}" for k, v in zip(
        ("valence", "tempo", "energy"), it.knobs.as_tuple(), strict=True))
        + f"; {it.info.get('explanation', '')}" for i, it in enumerate(items)]
    (out / f"{name}.abc").write_text(score_abc([it.phrase for it in items], title, comments),
                                     encoding="utf-8")
    join_midi(items).write(str(out / f"{name}.mid"))
    return write_piece_wav(out / f"{name}.wav", [it.samples for it in items], rate) if wav \
        else None


def transition(cfg: TransitionConfig, start: Knobs, end: Knobs) -> TransitionResult:
    """Calibrate, plan and play the transition (and the straight jump), write them out.

    Parameters
    ----------
    cfg : TransitionConfig
    start, end : Knobs
        The two states (the command resolves ``--from``/``--to`` presets into knobs).

    Returns
    -------
    result : TransitionResult

    Raises
    ------
    ValueError
        When ``max_step`` is set and the plan's predicted largest step exceeds it
        (the message says how long the transition needs to be).
    """
    from st_agent.music.composer import Composer, ComposerConfig
    from st_agent.music.piece import PhrasePlayer, phrase_rows, write_json
    from st_agent.music.render import AudioRenderer, find_soundfont

    find_soundfont(cfg.soundfont)
    out = out_dir(cfg.out, "transition")
    composer = Composer(ComposerConfig(checkpoint=cfg.checkpoint))
    with AudioRenderer(cfg.soundfont) as synth:
        player = PhrasePlayer(composer, synth)
        cal = calibrate(player, start, end, cfg.calibration_points, cfg.calibration_seeds,
                        seed=cfg.seed + 100_000)
        u, targets = plan_path(cal, start, end, cfg.minutes * 60.0)
        predicted = largest_step(targets)
        length = float(cal.arc_length()[-1])
        if cfg.max_step > 0 and predicted > cfg.max_step:
            need = cfg.minutes * predicted / cfg.max_step
            raise ValueError(f"a {cfg.minutes:g}-minute transition steps by up to "
                             f"{predicted:.2f} per phrase (path length {length:.2f}), above "
                             f"max_step={cfg.max_step:g}; give --minutes {need:.1f} or more, "
                             "or raise --max-step")
        knobs = [_lerp(start, end, x) for x in u]
        planned = play_path(player, knobs, targets, cfg.candidates, cfg.seed)
        direct = None
        if cfg.compare_direct:
            half = len(knobs) // 2
            d_knobs = [start] * half + [end] * (len(knobs) - half)
            d_targets = np.array([cal.coords[0]] * half + [cal.coords[-1]] * (len(knobs) - half))
            direct = play_path(player, d_knobs, d_targets, cfg.candidates, cfg.seed)
        rate = player.sample_rate
    out.mkdir(parents=True, exist_ok=True)
    coords = np.array([feature_coordinates(it.audio) for it in planned])
    step_planned = largest_step(coords)
    step_direct = largest_step(np.array([feature_coordinates(it.audio) for it in direct])) \
        if direct is not None else None
    title = f"transition {start!r} -> {end!r}"
    wav = _write_piece(out, "transition", planned, rate, cfg.wav, title)
    if direct is not None:
        _write_piece(out, "direct", direct, rate, cfg.wav, "straight jump")
    music_sec = float(sum(it.duration_sec for it in planned))
    summary = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "start": list(start.as_tuple()), "end": list(end.as_tuple()),
        "phrases": len(planned), "music_sec": music_sec, "path_length": length,
        "max_step_predicted": predicted, "max_step_planned": step_planned,
        "max_step_direct": step_direct,
        "steps_planned": [it.info["step"] for it in planned],
        "steps_direct": [it.info["step"] for it in direct] if direct is not None else None,
        "end_distance": float(np.linalg.norm(coords[-1] - cal.coords[-1])),
        "calibration": {"u": cal.u, "features": cal.features, "names": AUDIO_FEATURE_NAMES},
        "audio_extract_sec_mean": float(np.mean([it.extract_sec for it in planned])),
    }
    write_json(out / "phrases.json", {"planned": phrase_rows(planned),
                                      "direct": phrase_rows(direct) if direct else None})
    write_json(out / "summary.json", summary)
    if cfg.plot:
        _plot(out / "transition.png", planned, direct, cal, u)
    logger.info("wrote %s: %d phrases; largest step planned %.2f, direct %s", out,
                len(planned), step_planned, step_direct)
    return TransitionResult(out, wav, len(planned), music_sec, step_planned, step_direct,
                            predicted, summary)


def _plot(path: Path, planned: list[Any], direct: list[Any] | None, cal: Calibration,
          u: np.ndarray) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ("loudness (LUFS)", "spectral centroid (Hz)", "spectral flux", "onset rate (1/s)")
    fig, axes = plt.subplots(3, 2, figsize=(10, 8), sharex=True)
    idx = np.arange(len(planned))
    plan_feats = np.column_stack([np.interp(u, cal.u, cal.features[:, j]) for j in range(4)])
    for j, ax in enumerate(axes.flat[:4]):
        ax.plot(idx, [it.audio.as_vector()[j] for it in planned], "o-", label="planned path")
        ax.plot(idx, plan_feats[:, j], ":", color="gray", label="plan (predicted)")
        if direct is not None:
            ax.plot(idx, [it.audio.as_vector()[j] for it in direct], "s--", color="tab:red",
                    label="straight jump")
        ax.set_title(labels[j])
    axes.flat[0].legend(fontsize=7)
    ax = axes.flat[4]
    for i, name in enumerate(("valence", "tempo", "energy")):
        ax.plot(idx, [it.knobs.as_tuple()[i] for it in planned], label=name)
    ax.set(title="knobs of the planned path", ylim=(-0.05, 1.05))
    ax.legend(fontsize=7)
    ax = axes.flat[5]
    ax.plot(idx[1:], [it.info["step"] for it in planned[1:]], "o-", label="planned path")
    if direct is not None:
        ax.plot(idx[1:], [it.info["step"] for it in direct[1:]], "s--", color="tab:red",
                label="straight jump")
    ax.set(title="step from the previous phrase (feature units)")
    ax.legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("phrase")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
