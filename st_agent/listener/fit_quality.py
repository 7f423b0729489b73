"""The quality gate of a listener fit (``st-agent fit-listener``).

A fit is **refused**
(exit 3, nothing written) when its held-out R² on 10 s blocks is below ``min_r2``
(0.3) or more than ``max_at_bounds`` (4, a third of the 12 fitted parameters) sit at a
bound of their range, and **written with a warning** when R² is below ``warn_r2`` (0.5)
or any parameter sits at a bound. Why: below 0.3 the model explains less than a third of the
variance of held-out 10 s states, so a policy trained on it learns mostly the noise
model; on simulated listeners (the true model family) 15 minutes of music reached
≥ 0.7 (``benchmarks/bench_fit.py``), so a fit under 0.3 means too little data or a
person the model family does not describe; 0.3-0.5 is usable with care. A parameter at
its bound (within 0.1 % of the range; time constants on a log scale) was pushed there
by the data: its standard error means nothing and the true value may lie outside what
the simulator supports; with more than a third of them there, the fitted listener is
set by the ranges more than by the data. (An 8-minute session of a virtual listener
fitted in estimator coordinates put 3 sensitivities at a bound: warned, not refused.)
``habituation_strength`` at 0 is not counted (no habituation is a finding), nor then
``habituation_tau_sec`` (it has no effect). ``--force`` writes a refused fit anyway,
with the reasons in ``quality.warnings`` and ``quality.forced`` true.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_agent.errors import DataError

if TYPE_CHECKING:
    from st_agent.listener.fitting import FitListenerConfig, FitResult
    from st_agent.listener.model import ListenerParams

__all__ = ["MAX_AT_BOUNDS", "MIN_R2", "WARN_R2", "FitQuality", "FitQualityError",
           "assess_fit", "fit_inputs"]

#: Held-out R² (10 s blocks) under which a fit is refused / written with a warning.
MIN_R2 = 0.3
WARN_R2 = 0.5
#: More fitted parameters than this at a bound of their range: refused (a third of the 12).
MAX_AT_BOUNDS = 4
#: "At a bound": within this fraction of the range of either end (log scale for taus).
AT_BOUND_FRAC = 1e-3


class FitQualityError(DataError, ValueError):
    """A fit refused by the quality gate (:func:`assess_fit`); exit status 3."""


@dataclass(frozen=True)
class FitQuality:
    """The quality gate's verdict on a fit (module docstring, *Quality gate*).

    Parameters
    ----------
    refusals : tuple of str
        Why the fit is refused (empty: accepted).
    warnings : tuple of str
        What to be careful with (includes the refusals).
    at_bounds : tuple of str
        Fitted parameters at a bound of their range.
    thresholds : dict
        ``min_r2``, ``warn_r2``, ``max_at_bounds`` used.
    """

    refusals: tuple[str, ...]
    warnings: tuple[str, ...]
    at_bounds: tuple[str, ...]
    thresholds: dict[str, float]

    def as_json(self, forced: bool = False) -> dict[str, Any]:
        """The ``quality`` block of ``listener.json``."""
        return {"warnings": list(self.warnings), "at_bounds": list(self.at_bounds),
                "forced": bool(forced and self.refusals), "thresholds": self.thresholds}


def _at_bounds(params: ListenerParams) -> list[str]:
    """Fitted parameters within 0.1 % of their range's ends (log scale for taus)."""
    from st_agent.listener.fitting import _LOG, FIT_PARAMS
    from st_agent.listener.model import PARAM_RANGES

    out = []
    no_habituation = params.habituation_strength <= AT_BOUND_FRAC * 0.9
    for name in FIT_PARAMS:
        if no_habituation and name in ("habituation_strength", "habituation_tau_sec"):
            continue  # "no habituation" is a finding; its time constant then does nothing
        lo, hi = PARAM_RANGES[name]
        v = getattr(params, name)
        if name in _LOG:
            lo, hi, v = math.log(lo), math.log(hi), math.log(v)
        if min(v - lo, hi - v) <= AT_BOUND_FRAC * (hi - lo):
            out.append(name)
    return out


def assess_fit(result: FitResult, min_r2: float = MIN_R2, warn_r2: float = WARN_R2,
               max_at_bounds: int = MAX_AT_BOUNDS) -> FitQuality:
    """Check a fit against the quality gate.

    Parameters
    ----------
    result : FitResult
    min_r2 : float
        Held-out R² (10 s blocks) below which the fit is refused.
    warn_r2 : float
        Held-out R² below which it is written with a warning (>= ``min_r2``).
    max_at_bounds : int
        More fitted parameters than this at a bound: refused.

    Returns
    -------
    quality : FitQuality

    Raises
    ------
    ValueError
        When ``warn_r2 < min_r2`` or ``max_at_bounds < 0``.
    """
    if not (math.isfinite(min_r2) and math.isfinite(warn_r2) and warn_r2 >= min_r2):
        raise ValueError(f"--warn-r2 ({warn_r2!r}) must be a number >= --min-r2 ({min_r2!r})")
    if isinstance(max_at_bounds, bool) or not isinstance(max_at_bounds, int) \
            or max_at_bounds < 0:
        raise ValueError(f"--max-at-bounds must be an int >= 0, got {max_at_bounds!r}")
    refusals, warnings = [], []
    r2 = result.heldout_r2
    fix = (f"record more music with this listener (15 minutes or more reached R² >= 0.7 "
           f"on simulated listeners; {result.minutes_used:.1f} min were used)")
    if not math.isfinite(r2):
        refusals.append(f"no held-out R² (holdout fraction 0?): the fit is unchecked; {fix}")
    elif r2 < min_r2:
        refusals.append(f"held-out R² {r2:.3f} on {result.score_block_sec:g} s blocks is below "
                        f"{min_r2:g}: the model predicts little of this listener; {fix}")
    elif r2 < warn_r2:
        warnings.append(f"held-out R² {r2:.3f} is below {warn_r2:g}: usable with care; {fix}")
    bounds = _at_bounds(result.params)
    if len(bounds) > max_at_bounds:
        refusals.append(f"{len(bounds)} parameters sit at a bound of their range "
                        f"({', '.join(bounds)}; more than {max_at_bounds}): the data pushed "
                        "them there, their values are not identified")
    elif bounds:
        warnings.append(f"at a bound of their range: {', '.join(bounds)} (not identified)")
    return FitQuality(tuple(refusals), tuple(refusals + warnings), tuple(bounds),
                      {"min_r2": min_r2, "warn_r2": warn_r2, "max_at_bounds": max_at_bounds})


def fit_inputs(cfg: FitListenerConfig) -> tuple[list[Path], Path]:
    """The session folders to fit (``sessions`` plus ``--subject``'s) and the file to write.

    Raises
    ------
    st_agent.errors.UsageError
        Without sessions, or when the subject has none.
    """
    from st_agent.errors import UsageError

    sessions = list(cfg.sessions)
    out = cfg.out
    if cfg.subject:
        from st_agent.subjects import sessions_for_subject, subject_dir

        found = sessions_for_subject(cfg.subject, cfg.sessions_root)
        if not found:
            raise UsageError(f"--subject {cfg.subject}: no sessions of this subject under "
                             f"{cfg.sessions_root or 'runs/ or the subject registry'}; record "
                             f"some with `st-agent session --subject {cfg.subject}` or give "
                             "--sessions-root")
        sessions += [f for f in found if f not in sessions]
        out = out or subject_dir(cfg.subject, create=True) / "listener.json"
    if not sessions:
        raise UsageError("give at least one session folder, or --subject S")
    return sessions, out or Path("listener.json")
