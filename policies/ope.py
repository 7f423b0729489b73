"""Off-policy evaluation: a policy's value on logged sessions, before anyone hears it.

``st-agent ope --sessions runs/sessions --policy P`` reads the logged transitions
(:mod:`st_agent.policies.transitions`) and estimates the expected return (sum of
the env's reward over a session, ``gamma = 1`` by default) that ``P`` would get
on the same listeners, with five estimators:

* ``is``: trajectory importance sampling, ``mean_e rho_e G_e``;
* ``pdis``: per-decision IS, ``mean_e sum_t rho_{e,0:t} r_{e,t}``;
* ``wis``: per-decision *weighted* IS (each step's weights normalised over the
  sessions; biased, consistent, far lower variance);
* ``dr``: per-decision doubly robust (Jiang & Li 2016, eq. 8):
  ``mean_e sum_t [rho_{0:t} (r_t - Q(s_t, a_t)) + rho_{0:t-1} V(s_t)]`` with the
  FQE model below;
* ``fqe``: fitted-Q evaluation (Le, Voloshin & Yue 2019): ridge regression of
  ``Q(s, a, t)`` on quadratic features of the state (estimate, error, knobs,
  distance, time in the session) and the action, iterated ``T + 1`` times on
  ``r + gamma * E_{a' ~ pi} Q(s', a')``. The expectation over the target's
  truncated normal is exact (its first two moments enter the quadratic features).

**Target densities.** The behaviour's actions are continuous, so a deterministic
target has density zero almost everywhere. The target evaluated is therefore the
*smoothed* policy: a normal of mean ``clip(P(s), -1, 1)`` and std ``h`` truncated
to [-1, 1], the behaviour's own family. The default bandwidth ``h`` is the
behaviour's exploration std: the weights' variance is finite only for
``h > std / sqrt(2)`` (the ratio of two normals), and ``h = std`` gives weight
exactly 1 for target = behaviour. The value estimated is that of P with this
noise, not of deterministic P; ``benchmarks/bench_ope.py`` measures how far the two
are apart. A stateful target (PID's integral) runs along each logged session,
so its internal state is that of the logged history.

**Uncertainty.** Percentile bootstrap 95 % CIs, resampling sessions (``n_boot``;
the FQE model is refitted on every resample). **Overlap.** The effective sample
size of the final trajectory weights, ``ESS = (sum rho)^2 / sum rho^2``; the
estimate is marked *cannot be trusted* when ``ESS < 10 %`` of the sessions
(:data:`MIN_ESS_FRACTION`), when one session carries more than 20 % of the total
weight (:data:`MAX_WEIGHT_SHARE`), or with fewer than 10 sessions (thresholds:
assumption, unsourced; the benchmark shows the coverage they give). FQE has no
weights but extrapolates where the target goes where the behaviour never went,
so the same verdict applies to it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ESTIMATORS", "MAX_WEIGHT_SHARE", "MIN_EPISODES", "MIN_ESS_FRACTION", "OPEConfig",
           "OPEResult", "fit_fqe", "format_result", "off_policy_evaluate", "run_ope",
           "target_actions"]

logger = logging.getLogger(__name__)

ESTIMATORS = ("is", "pdis", "wis", "dr", "fqe")
#: Below this fraction of the sessions as effective sample size: cannot be trusted.
MIN_ESS_FRACTION = 0.10
#: Above this share of the total weight in one session: cannot be trusted.
MAX_WEIGHT_SHARE = 0.20
#: Fewer sessions than this: cannot be trusted.
MIN_EPISODES = 10
_STATE_COLS = (0, 1, 4, 5, 6, 7, 8)  # estimate, error, knobs


# --------------------------------------------------------------------------- target


def target_actions(make_policy: Callable[[], Any], tr: Any) -> np.ndarray:
    """The target's (clipped) actions along every logged session, shape (N, 3).

    The sessions are stepped together (one batched ``predict`` per decision index,
    finished sessions padded with their last observation) when the policy takes
    a batch; else one fresh policy runs along each session.

    Parameters
    ----------
    make_policy : callable
        ``() -> controller`` (a fresh one; ``reset()`` is called when it has one).
    tr : Transitions
    """
    e_n, t_n = tr.n_episodes, int(tr.step.max()) + 1
    pad = np.zeros((e_n, t_n, tr.obs.shape[1]), dtype=np.float32)
    pad[tr.episode, tr.step] = tr.obs
    last = np.bincount(tr.episode, minlength=e_n) - 1
    for e in range(e_n):  # pad finished sessions with their last observation
        pad[e, last[e] + 1:] = pad[e, last[e]]
    out = np.zeros((e_n, t_n, 3))
    pol = make_policy()
    if hasattr(pol, "reset"):
        pol.reset()
    try:
        first = np.asarray(pol.predict(pad[:, 0], deterministic=True)[0], dtype=np.float64)
        batched = first.shape == (e_n, 3)
    except (ValueError, TypeError, IndexError):
        batched = False
    if batched:
        out[:, 0] = first
        for t in range(1, t_n):
            out[:, t] = np.asarray(pol.predict(pad[:, t], deterministic=True)[0]).reshape(e_n, 3)
    else:
        for e in range(e_n):
            pol = make_policy()
            if hasattr(pol, "reset"):
                pol.reset()
            for t in range(last[e] + 1):
                out[e, t] = np.asarray(pol.predict(pad[e, t], deterministic=True)[0]).reshape(3)
    a = np.clip(np.nan_to_num(out[tr.episode, tr.step], nan=0.0), -1.0, 1.0)
    return np.where(tr.held[:, None], 0.0, a)


def _log_ratios(tr: Any, mean: np.ndarray, h: float) -> np.ndarray:
    """Per-transition log importance ratio target / behaviour, shape (N,)."""
    from st_agent.policies.transitions import truncnorm_logpdf

    lw = np.zeros(tr.n)
    act = ~tr.held
    stoch = act & (tr.std > 0)
    if stoch.any():
        lw[stoch] = truncnorm_logpdf(tr.actions[stoch], mean[stoch], h) - tr.logp[stoch]
    det = act & (tr.std <= 0)  # deterministic behaviour: the target must act the same
    if det.any():
        same = np.all(np.abs(mean[det] - tr.action_mean[det]) < 1e-6, axis=1)
        lw[det] = np.where(same, 0.0, -np.inf)
    return lw


# --------------------------------------------------------------------------- FQE


def _state_vars(tr: Any) -> np.ndarray:
    """Raw state variables of FQE, shape (N, 9): estimate, error, knobs, distance, t / T."""
    obs = tr.obs.astype(np.float64)
    t_max = max(int(tr.step.max()) + 1, 1)
    d = np.linalg.norm(obs[:, 4:6], axis=1, keepdims=True)
    return np.hstack([obs[:, _STATE_COLS], d, (tr.step / t_max)[:, None]])


def _features(x: np.ndarray, m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """Quadratic features of state ``x`` (N, p) and action moments ``m1``, ``m2`` (N, 3).

    With ``m1 = a`` and ``m2 = a**2`` these are the features of action ``a``; with the
    moments of a distribution, their expectation (the action entries are independent).
    """
    n, p = x.shape
    iu = np.triu_indices(p)
    quad = (x[:, :, None] * x[:, None, :])[:, iu[0], iu[1]]
    cross = (x[:, :, None] * m1[:, None, :]).reshape(n, -1)
    aa = np.stack([m1[:, 0] * m1[:, 1], m1[:, 0] * m1[:, 2], m1[:, 1] * m1[:, 2]], axis=1)
    return np.hstack([np.ones((n, 1)), x, m1, quad, cross, aa, m2])


@dataclass
class FQEFit:
    """FQE fits for several row weightings (row 0: the data as logged)."""

    q: np.ndarray
    """Q of the logged (s, a), shape (B, N)."""
    v: np.ndarray
    """E_pi Q(s, .) at every logged state, shape (B, N)."""


def fit_fqe(tr: Any, mean: np.ndarray, h: float, counts: np.ndarray, gamma: float = 1.0,
            ridge: float = 1e-3) -> FQEFit:
    """Fitted-Q evaluation of the smoothed target, for each row of ``counts`` at once.

    Parameters
    ----------
    tr : Transitions
    mean : ndarray, shape (N, 3)
        Target actions (:func:`target_actions`).
    h : float
        Target bandwidth (0: deterministic target).
    counts : ndarray, shape (B, E)
        Weight of each session in each fit (bootstrap multiplicities; ones: the data).
    gamma : float
        Discount.
    ridge : float
        Ridge penalty per transition (on standardised features).

    Returns
    -------
    fit : FQEFit
    """
    from st_agent.policies.transitions import truncnorm_moments

    x = _state_vars(tr)
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    x = (x - mu) / sd
    a = tr.actions.astype(np.float64)
    phi = _features(x, a, a ** 2)
    m1, m2 = truncnorm_moments(mean, h) if h > 0 else (mean, mean ** 2)
    m1, m2 = np.where(tr.held[:, None], 0.0, m1), np.where(tr.held[:, None], 0.0, m2)
    phi_pi = _features(x, m1, m2)
    n, p = phi.shape
    e_n = tr.n_episodes
    grams = np.stack([phi[tr.episode == e].T @ phi[tr.episode == e] for e in range(e_n)])
    lam = ridge * n * np.eye(p)
    lam[0, 0] = 0.0
    inv = np.linalg.inv((counts @ grams.reshape(e_n, -1)).reshape(-1, p, p) + lam)
    row_w = counts[:, tr.episode]  # (B, N)
    nxt = np.flatnonzero(~tr.terminal)  # rows whose next state is the next row
    r = tr.rewards.astype(np.float64)
    w = np.zeros((counts.shape[0], p))
    for _ in range(int(tr.step.max()) + 2):
        v = w @ phi_pi.T  # (B, N)
        y = np.broadcast_to(r, v.shape).copy()
        y[:, nxt] += gamma * v[:, nxt + 1]
        w = np.einsum("bij,bj->bi", inv, (row_w * y) @ phi)
    return FQEFit(q=w @ phi.T, v=w @ phi_pi.T)


# --------------------------------------------------------------------------- estimates


@dataclass
class OPEResult:
    """Estimates of one target policy on logged sessions."""

    estimates: dict[str, dict[str, Any]]
    """``{estimator: {"value", "ci"}}`` (NaN where the estimator does not apply)."""
    behaviour_value: dict[str, Any]
    """Mean logged return with its bootstrap CI (the behaviour's on-policy value)."""
    ess: float
    """Effective sample size of the final trajectory weights (sessions)."""
    n_episodes: int
    max_weight_share: float
    trusted: bool
    reasons: list[str] = field(default_factory=list)
    bandwidth: float = 0.0

    @property
    def ess_fraction(self) -> float:
        """``ess / n_episodes``."""
        return self.ess / max(self.n_episodes, 1)


def _padded(tr: Any, values: np.ndarray) -> np.ndarray:
    out = np.zeros((tr.n_episodes, int(tr.step.max()) + 1))
    out[tr.episode, tr.step] = values
    return out


def _is_family(lw: np.ndarray, rew: np.ndarray, disc: np.ndarray, counts: np.ndarray
               ) -> dict[str, np.ndarray]:
    """IS, PDIS and per-decision WIS for each row of ``counts``; padded (E, T) inputs."""
    cum = np.cumsum(lw, axis=1)
    rho = np.exp(np.minimum(cum, 700.0))
    e_n = lw.shape[0]
    g = (rew * disc).sum(axis=1)
    is_ = counts @ (rho[:, -1] * g) / e_n
    pdis = counts @ (rho * rew * disc).sum(axis=1) / e_n
    num, den = counts @ (rho * rew), counts @ rho  # (B, T)
    wis = (np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0) * disc).sum(axis=1)
    return {"is": is_, "pdis": pdis, "wis": wis}


def off_policy_evaluate(tr: Any, mean: np.ndarray, bandwidth: float | None = None,
                        gamma: float = 1.0, n_boot: int = 200, seed: int = 0,
                        ridge: float = 1e-3) -> OPEResult:
    """All estimators of :data:`ESTIMATORS` with bootstrap CIs and the overlap verdict.

    Parameters
    ----------
    tr : Transitions
        Logged sessions.
    mean : ndarray, shape (N, 3)
        The target's actions at the logged states (:func:`target_actions`).
    bandwidth : float, optional
        Std ``h`` of the smoothed target; default the behaviour's largest exploration
        std (module docstring); 0 evaluates the deterministic target (IS needs a
        behaviour that acted the same then).
    gamma : float
        Discount in (0, 1].
    n_boot : int
        Bootstrap resamples of the sessions (>= 20).
    seed : int
        Seed of the resampling.
    ridge : float
        FQE ridge penalty.

    Returns
    -------
    result : OPEResult
    """
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 20:
        raise ValueError(f"n_boot must be an int >= 20, got {n_boot!r}")
    act = ~tr.held
    h = float(tr.std[act].max()) if bandwidth is None and act.any() else float(bandwidth or 0)
    if h < 0:
        raise ValueError(f"bandwidth must be >= 0, got {h!r}")
    e_n = tr.n_episodes
    rng = np.random.default_rng(seed)
    counts = np.vstack([np.ones(e_n), rng.multinomial(e_n, np.full(e_n, 1 / e_n), n_boot)])
    lw = _log_ratios(tr, mean, h)
    lw_p, rew_p = _padded(tr, lw), _padded(tr, tr.rewards)
    disc = gamma ** np.arange(lw_p.shape[1])[None, :]
    vals = _is_family(lw_p, rew_p, disc, counts)
    fit = fit_fqe(tr, mean, h, counts, gamma, ridge)
    first = np.flatnonzero(tr.step == 0)
    vals["fqe"] = (counts[:, tr.episode[first]] * fit.v[:, first]).sum(axis=1) / e_n
    rho = np.exp(np.minimum(np.cumsum(lw_p, axis=1), 700.0))
    rho_prev = np.hstack([np.ones((e_n, 1)), rho[:, :-1]])
    rp, rpp = rho[tr.episode, tr.step], rho_prev[tr.episode, tr.step]
    term = gamma ** tr.step * (rp * (tr.rewards - fit.q) + rpp * fit.v)  # (B, N)
    vals["dr"] = (counts[:, tr.episode] * term).sum(axis=1) / e_n
    estimates = {}
    for name in ESTIMATORS:
        v = vals[name]
        ok = np.isfinite(v[0])
        ci = tuple(float(x) for x in np.percentile(v[1:], [2.5, 97.5])) if ok else (np.nan,) * 2
        estimates[name] = {"value": float(v[0]), "ci": ci}
    g = tr.returns(gamma)
    bv = counts[1:] @ g / e_n
    ess, share = _overlap(np.cumsum(lw_p, axis=1)[:, -1])
    reasons = _verdict(ess, e_n, share, bool(np.isneginf(lw).any()))
    return OPEResult(estimates=estimates,
                     behaviour_value={"value": float(g.mean()),
                                      "ci": tuple(float(x) for x in
                                                  np.percentile(bv, [2.5, 97.5]))},
                     ess=ess, n_episodes=e_n, max_weight_share=share, trusted=not reasons,
                     reasons=reasons, bandwidth=h)


def _overlap(log_w: np.ndarray) -> tuple[float, float]:
    """ESS ``(sum w)^2 / sum w^2`` and the largest weight's share, from log-weights (E,)."""
    from scipy.special import logsumexp

    if not np.isfinite(log_w).any():
        return 0.0, 1.0
    lse = logsumexp(log_w)
    return float(np.exp(2 * lse - logsumexp(2 * log_w))), float(np.exp(log_w.max() - lse))


def _verdict(ess: float, e_n: int, share: float, no_support: bool) -> list[str]:
    reasons = []
    if e_n < MIN_EPISODES:
        reasons.append(f"only {e_n} sessions (at least {MIN_EPISODES} are needed)")
    if ess < MIN_ESS_FRACTION * e_n:
        reasons.append(f"low overlap: the effective sample size is {ess:.1f} of {e_n} "
                       f"sessions ({100 * ess / max(e_n, 1):.1f} % < "
                       f"{100 * MIN_ESS_FRACTION:.0f} %)")
    if share > MAX_WEIGHT_SHARE:
        reasons.append(f"one session carries {100 * share:.0f} % of the total weight "
                       f"(> {100 * MAX_WEIGHT_SHARE:.0f} %)")
    if no_support:
        reasons.append("the behaviour did not explore (--explore-std 0) where the target "
                       "acts differently: no logged action supports it; record with "
                       "--explore-std > 0")
    return reasons


def format_result(res: OPEResult, name: str = "") -> str:
    """A plain-text table of one :class:`OPEResult`."""
    lines = [f"off-policy evaluation of {name or 'the target'} on {res.n_episodes} sessions "
             f"(target bandwidth h = {res.bandwidth:.3g})",
             f"{'estimator':<10} {'value':>9} {'95% CI':>21}", "-" * 42]
    for k, v in res.estimates.items():
        lines.append(f"{k:<10} {v['value']:9.3f} {v['ci'][0]:10.3f} {v['ci'][1]:10.3f}")
    b = res.behaviour_value
    lines += [f"{'logged':<10} {b['value']:9.3f} {b['ci'][0]:10.3f} {b['ci'][1]:10.3f}"
              "   (the behaviour's own mean return)",
              f"ESS {res.ess:.1f} of {res.n_episodes} ({100 * res.ess_fraction:.1f} %), "
              f"largest weight share {100 * res.max_weight_share:.1f} %"]
    if res.trusted:
        lines.append("verdict: overlap sufficient (ESS and weight share within the limits)")
    else:
        lines.append("verdict: CANNOT BE TRUSTED: " + "; ".join(res.reasons))
    return "\n".join(lines)


# --------------------------------------------------------------------------- command


@dataclass
class OPEConfig:
    """Estimate a policy's value on logged sessions (``st-agent ope``)."""

    sessions: tuple[str, ...] = ()
    """Session folders, or folders of them (e.g. runs/sessions)."""
    subject: str = ""
    """A registered subject: all of their sessions (instead of --sessions)."""
    policy: str = "calm"
    """The target policy: a shipped preset, a baseline (pid, constant, adaptive, fixed) or a
    trained run folder (st-agent train / train-offline)."""
    target: str = "calm"
    """Target preset the baselines are tuned for (calm, focus, uplift, energize)."""
    bandwidth: float = -1.0
    """Std of the smoothed target (action units); negative: the behaviour's exploration
    std (see the module docstring)."""
    gamma: float = 1.0
    """Discount of the return."""
    n_boot: int = 200
    """Bootstrap resamples of the sessions."""
    seed: int = 0
    """Seed of the bootstrap."""
    key_file: Path | None = None
    """Key file of encrypted sessions."""
    out: str = ""
    """Write the result as JSON here (empty: only print it)."""

    def __post_init__(self) -> None:
        if bool(self.sessions) == bool(self.subject):
            raise ValueError("give either --sessions (folders) or --subject, not both "
                             f"(got sessions={self.sessions!r}, subject={self.subject!r})")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"--gamma must be in (0, 1], got {self.gamma!r}")
        if isinstance(self.n_boot, bool) or not isinstance(self.n_boot, int) or self.n_boot < 20:
            raise ValueError(f"--n-boot must be an int >= 20, got {self.n_boot!r}")


def subject_sessions(subject: str) -> list[Path]:
    """Session folders of a registered subject (:mod:`st_agent.subjects`)."""
    from st_agent import subjects
    from st_agent.errors import UsageError

    finder = getattr(subjects, "sessions_for_subject", None)
    if finder is None:
        raise UsageError("--subject needs st_agent.subjects.sessions_for_subject, which this "
                         "installation lacks; pass the session folders with --sessions")
    folders = list(finder(subject))
    if not folders:
        raise UsageError(f"subject {subject!r} has no recorded sessions; record one with "
                         f"`st-agent session --subject {subject}` or use --sessions")
    return folders


def run_ope(cfg: OPEConfig) -> OPEResult:
    """``st-agent ope``: load the sessions and the policy, estimate, print the verdict."""
    import sys

    from st_agent.contract import SafetyBounds
    from st_agent.policies.controllers import make_controller
    from st_agent.policies.transitions import check_policy_fits, load_transitions

    folders = list(cfg.sessions) if cfg.sessions else subject_sessions(cfg.subject)
    tr = load_transitions(folders, key=cfg.key_file)
    bounds = SafetyBounds(max_delta=tr.max_delta)

    def make() -> Any:
        return make_controller(cfg.policy, bounds, cfg.target)[0]

    check_policy_fits(tr, make(), cfg.policy)
    mean = target_actions(make, tr)
    res = off_policy_evaluate(tr, mean, None if cfg.bandwidth < 0 else cfg.bandwidth,
                              cfg.gamma, cfg.n_boot, cfg.seed)
    text = format_result(res, cfg.policy)
    sys.stdout.write(text + "\n")
    if cfg.out:
        Path(cfg.out).write_text(json.dumps({"config": {k: str(v) for k, v in
                                                        asdict(cfg).items()},
                                             "result": asdict(res)}, indent=1) + "\n",
                                 encoding="utf-8")
    return res
