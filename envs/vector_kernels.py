"""Compiled (numba) step of :class:`st_agent.envs.vector.VecClosedLoopEnv`: the fast backend.

At 8 sessions a NumPy step is bound by per-call overhead (every array holds
8 numbers, and a step of four listener families, the phrase pick, the
reward and the observation is a few hundred NumPy calls). This module does
the same arithmetic in two compiled loops over the sessions, on arrays
preallocated by the env:

1. :func:`knobs_and_phrases`: action -> knobs, the history shift, and the
   phrase of each session's grid cell, drawn as NumPy's
   ``Generator.integers(sizes)`` draws it (Lemire's method on the bit
   generator's ``next_uint32``, called through its documented ctypes
   interface), so the random stream is the NumPy backend's.
2. The state-noise normals are drawn by NumPy (``standard_normal``).
3. :func:`step_sessions`: the listener dynamics of every family (the
   formulas of :mod:`st_agent.listener.first_order`, ``two_timescale``,
   ``adaptation``, ``entrainment`` and the shared part of
   :mod:`st_agent.listener.base`), the estimator noise
   (:class:`~st_agent.listener.fast.EstimatorNoise`), the reward and the
   contract observation (:func:`st_agent.contract.build_observations`).

Every random number comes from the env's NumPy generator in the NumPy
backend's order, so both backends give the same observations and rewards on
the same seed (``tests/test_vector.py`` checks them against each other and
against a per-listener reference: float64 throughout, agreement to ``rtol
1e-9``; only the returned observation and reward are float32, as in the
NumPy backend, and agree to one float32 rounding, ``rtol 1e-6``).

Listeners are packed in arrays: ``fam`` (N,) family codes (index in
:data:`~st_agent.listener.family.FAMILY_NAMES`), ``P`` (N, :data:`N_P`) the
parameters (:data:`SHARED_NAMES`, the resting state, then the family's own
fields, :data:`OWN_NAMES`), ``S`` (N, :data:`N_S`) the state (:data:`S_COLS`).
Importing this module imports numba (``numba>=0.68``); the env imports it
only when that backend is chosen.
"""

from __future__ import annotations

import ctypes
import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from st_agent.listener.base import SHARED_RANGES
from st_agent.listener.family import FAMILY_NAMES, PARAMS_CLASSES

__all__ = ["N_P", "N_S", "OWN_NAMES", "SHARED_NAMES", "S_COLS", "advance_rows", "bit_source",
           "draw_integers", "init_rows", "knobs_and_phrases", "observation_row", "reset_outputs",
           "step_sessions"]

#: Shared parameters, columns 0..14 of ``P``.
SHARED_NAMES: tuple[str, ...] = tuple(SHARED_RANGES)
_REST = len(SHARED_NAMES)  # columns 15, 16: resting (valence, arousal) = tanh(baselines)
_OWN = _REST + 2  # first column of the family's own parameters
#: Each family's own parameters, in its ``RANGES`` order, from column 17 of ``P``.
OWN_NAMES: dict[str, tuple[str, ...]] = {
    f: tuple(k for k in PARAMS_CLASSES[f].RANGES if k not in SHARED_RANGES)
    for f in FAMILY_NAMES}
N_P = _OWN + max(len(v) for v in OWN_NAMES.values())
#: State columns of ``S``: shared, latent, estimator noise, then the family's own state.
S_COLS = {"exposure": 0, "nd": 1, "latent": 5, "obs_noise": 7, "own": 9}
N_S = 9 + 10
# the compiled code below indexes these positions directly
assert SHARED_NAMES[:2] == ("baseline_valence", "baseline_arousal")
assert SHARED_NAMES[10:15] == ("silence_arousal", "exposure_tau_sec", "drift_std",
                               "drift_tau_sec", "noise_std")
assert FAMILY_NAMES == ("first_order", "two_timescale", "adaptation", "entrainment")
assert OWN_NAMES["first_order"] == ("tau_arousal_sec", "tau_valence_sec",
                                     "habituation_strength", "habituation_tau_sec")
assert OWN_NAMES["two_timescale"] == ("tau_delay_sec", "tau_fast_sec", "tau_slow_sec",
                                      "fast_weight", "tau_valence_sec")
assert OWN_NAMES["adaptation"] == ("tau_arousal_sec", "tau_valence_sec", "adapt_strength",
                                   "adapt_tau_sec", "novelty_gain", "novelty_tau_sec")
assert OWN_NAMES["entrainment"] == ("tau_arousal_sec", "tau_valence_sec",
                                    "breath_rest_per_min", "beats_per_breath",
                                    "entrain_strength", "tau_breath_sec", "breath_arousal")

_jit = numba.njit(cache=True, nogil=True)
_HAB_W2 = 2 * 0.5 ** 2  # first_order._HAB_WIDTH
_CHANGE_W = (1.0, 1.0, 1.0, 0.25, 1.0, 0.0)  # adaptation._CHANGE_W


@_jit
def _clip1(v: float) -> float:
    return min(max(v, -0.999), 0.999)


@_jit
def _cascade(y0, z0, u, tau_y, tau_z, dt, gain, offset):
    """:func:`st_agent.listener.base.cascade` for one value."""
    if abs(tau_y - tau_z) < 1e-3 * tau_y:
        tau_z = tau_y * 1.001
    ey, ez = math.exp(-dt / tau_y), math.exp(-dt / tau_z)
    c = y0 - u
    z_inf = offset + gain * u
    b = gain * c * tau_y / (tau_y - tau_z)
    return u + c * ey, z_inf + b * ey + (z0 - z_inf - b) * ez


@_jit
def _advance(i, fam, P, S, x, dt, z):
    """One listener ``i`` by ``dt`` s of features ``x`` (6,), normals ``z`` (6,) or empty."""
    p, s = P[i], S[i]
    noisy = z.shape[0] > 0
    playing = x[3] != 0.0
    e0 = s[0]
    u_v = p[8] * x[0] + p[5] * x[3] + p[6] * x[4] + p[7] * x[5]
    u_a = p[2] * x[0] + p[3] * x[1] + p[4] * x[2] + p[9] * x[5]
    if not playing:
        u_a += p[10] * e0
    f = fam[i]
    o = p[_OWN:]
    w = s[9:]
    nt_v, nt_a = _family_step(f, p, s, o, w, x, dt, z, noisy, playing, e0, u_v, u_a)
    # shared: exposure, OU state noise (valence, arousal) and drift (valence, arousal)
    s[0] = 1.0 - (1.0 - e0) * math.exp(-(dt * playing) / p[11])
    if noisy:
        stds = (p[14], p[14], p[12], p[12])
        taus4 = (nt_v, nt_a, p[13], p[13])
        for k in range(4):
            g = math.exp(-dt / taus4[k])
            s[1 + k] = g * s[1 + k] + stds[k] * math.sqrt(1.0 - g ** 2) * z[k]
    _latent(f, p, s, o, w)


@_jit
def _family_step(f, p, s, o, w, x, dt, z, noisy, playing, e0, u_v, u_a):
    """The family's own state after ``dt`` (``w``, in place); its state-noise taus (v, a)."""
    if f == 0:  # first_order: own (tau_a, tau_v, hab_strength, hab_tau); state va, familiar
        d2 = 0.0
        for k in range(6):
            d2 += (x[k] - w[2 + k]) ** 2
        h = o[2] * math.exp(-d2 / _HAB_W2) * playing
        ua = (1 - h) * u_a if u_a > 0 else u_a
        tv = math.tanh(p[0] + s[3] + u_v)
        ta = math.tanh(p[1] + s[4] + ua)
        alv, ala = math.exp(-dt / o[1]), math.exp(-dt / o[0])
        vv = alv * w[0] + (1 - alv) * tv
        va = ala * w[1] + (1 - ala) * ta
        if noisy:
            vv += p[14] * math.sqrt(1 - alv ** 2) * z[0]
            va += p[14] * math.sqrt(1 - ala ** 2) * z[1]
        w[0], w[1] = _clip1(vv), _clip1(va)
        be = math.exp(-dt / o[3])
        for k in range(6):
            w[2 + k] = be * w[2 + k] + (1 - be) * x[k]
        nt_v, nt_a = o[1], o[0]
    elif f == 1:  # two_timescale: own (td, tfast, tslow, w, tv); state delayed(3), comp(3)
        uu = (u_v, u_a, u_a)
        taus = (o[4], o[1], o[2])
        for k in range(3):
            w[k], w[3 + k] = _cascade(w[k], w[3 + k], uu[k], o[0], taus[k], dt, 1.0, 0.0)
        nt_v, nt_a = o[4], o[1]
    elif f == 2:  # adaptation: own (ta, tv, strength, adapt_tau, nov_gain, nov_tau)
        jump = 0.0
        if playing:
            c2 = 0.0
            for k in range(6):
                c2 += _CHANGE_W[k] * (x[k] - w[4 + k]) ** 2
            jump = min(math.sqrt(c2), 2.0)
        w[3] = (w[3] + o[4] * jump) * math.exp(-dt / o[5])
        w[0], w[2] = _cascade(w[0], w[2], u_a if playing else 0.0, o[3], o[0], dt,
                              -o[2] if playing else 0.0, u_a)
        w[1] = u_v + (w[1] - u_v) * math.exp(-dt / o[1])
        for k in range(6):
            w[4 + k] = x[k]
        nt_v, nt_a = o[1], o[0]
    else:  # entrainment: own (ta, tv, rest, bpb, strength, tau_breath, breath_arousal)
        rest = o[2]
        if playing:
            bpm = 105.0 + 55.0 * x[0]
            target = min(max(rest + o[4] * (bpm / o[3] - rest), 4.0), 30.0)
        else:
            target = rest * (1.0 + 0.25 * p[10] * e0)
        w[0] = target + (w[0] - target) * math.exp(-dt / o[5])
        w[1] = u_v + (w[1] - u_v) * math.exp(-dt / o[1])
        w[2] = u_a + (w[2] - u_a) * math.exp(-dt / o[0])
        nt_v, nt_a = o[1], o[0]
    return nt_v, nt_a


@_jit
def _latent(f, p, s, o, w):
    """Latent (valence, arousal) from the new state, into ``s[5:7]``."""
    if f == 0:
        s[5], s[6] = w[0], w[1]
    else:
        dv = p[0] + s[1] + s[3]
        da = p[1] + s[2] + s[4]
        if f == 1:
            dv += w[3]
            da += o[3] * w[4] + (1 - o[3]) * w[5]
        elif f == 2:
            dv = dv + w[1]
            da = da + w[2] + w[3]
        else:
            dv = dv + w[1]
            da = da + w[2] + o[6] * (w[0] - o[2]) / o[2]
        s[5], s[6] = _clip1(math.tanh(dv)), _clip1(math.tanh(da))


@_jit
def advance_rows(rows, fam, P, S, x, dt, Z, log_ar1, obs_std, gain, relative, est):
    """Listeners ``rows`` by ``dt`` s of ``x`` (6,): what the estimator reports, into ``est``.

    ``Z`` (len(rows), 6): normals (dynamics 0-3, estimator noise 4-5), as in
    :meth:`~st_agent.listener.fast.FastListeners.step`.
    """
    for j in range(rows.shape[0]):
        i = rows[j]
        _advance(i, fam, P, S, x, dt, Z[j])
        _observe(i, P, S, dt, Z[j], log_ar1, obs_std, gain, relative, est)


@_jit
def _observe(i, P, S, dt, z, log_ar1, obs_std, gain, relative, est):
    s = S[i]
    for k in range(2):
        rho = math.exp(dt * log_ar1[k])
        s[7 + k] = rho * s[7 + k] + obs_std[k] * math.sqrt(1 - rho ** 2) * z[4 + k]
        ref = P[i, _REST + k] if relative else 0.0
        est[i, k] = min(max(gain[k] * (s[5 + k] - ref) + s[7 + k], -1.0), 1.0)


@_jit
def _region_error(i, P, S, gain, relative, region):
    """Noise-free state of session ``i`` (estimator units) to its region, (valence, arousal)."""
    rv = P[i, _REST] if relative else 0.0
    ra = P[i, _REST + 1] if relative else 0.0
    cv = min(max(gain[0] * (S[i, 5] - rv), -1.0), 1.0)
    ca = min(max(gain[1] * (S[i, 6] - ra), -1.0), 1.0)
    return (min(max(cv, region[i, 0]), region[i, 1]) - cv,
            min(max(ca, region[i, 2]), region[i, 3]) - ca)


def bit_source(rng: np.random.Generator) -> tuple[int, int]:
    """``(next_uint32 function, state)`` addresses of ``rng``'s bit generator (its ctypes API).

    Valid while ``rng`` lives; drawing through them is drawing from ``rng``
    (not thread-safe: the generator's lock is not taken).
    """
    c = rng.bit_generator.ctypes
    return ctypes.cast(c.next_uint32, ctypes.c_void_p).value, c.state_address


@intrinsic
def _next_u32(typingctx, fn, state):
    """Call the bit generator's ``uint32_t next_uint32(void *state)`` at address ``fn``."""
    sig = types.uint32(types.intp, types.intp)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(8).as_pointer()])
        f = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.call(f, [builder.inttoptr(args[1], ir.IntType(8).as_pointer())])

    return sig, codegen


@_jit
def _integer(fn, state, size):
    """``Generator.integers(size)`` for one ``size`` >= 1 (NumPy's Lemire method, exactly)."""
    if size == 1:  # a range of one: NumPy draws nothing
        return 0
    s = np.uint64(size)
    threshold = (np.uint64(0x100000000) - s) % s
    while True:
        m = np.uint64(_next_u32(fn, state)) * s
        left = m & np.uint64(0xFFFFFFFF)
        if left >= s or left >= threshold:
            return np.int64(m >> np.uint64(32))


@_jit
def draw_integers(fn, state, sizes, out):
    """``out[:] = rng.integers(sizes)`` through ``rng``'s bit source (:func:`bit_source`)."""
    for i in range(sizes.shape[0]):
        out[i] = _integer(fn, state, sizes[i])


@_jit
def knobs_and_phrases(actions, knobs, prev, est, hist_est, hist_knobs, hist_count, lo, hi,
                      max_delta, grid, sizes, table, fn, state, idx):
    """Knobs from actions, the history shift, and each session's phrase (into ``idx``).

    The phrase is ``table[c, rng.integers(sizes[c])]`` for the grid cell
    ``c`` nearest to the new knobs (:meth:`PhraseBank.pick_many`), drawn
    through ``fn``/``state`` (:func:`bit_source`).
    """
    n, m = knobs.shape[0], hist_est.shape[1]
    for i in range(n):
        for j in range(m - 1, 0, -1):
            for k in range(2):
                hist_est[i, j, k] = hist_est[i, j - 1, k]
            for k in range(3):
                hist_knobs[i, j, k] = hist_knobs[i, j - 1, k]
        hist_est[i, 0, 0], hist_est[i, 0, 1] = est[i, 0], est[i, 1]
        cell = 0
        for k in range(3):
            a = float(actions[i, k])
            a = 0.0 if a != a else min(max(a, -1.0), 1.0)
            prev[i, k] = knobs[i, k]
            hist_knobs[i, 0, k] = knobs[i, k]
            knobs[i, k] = min(max(knobs[i, k] + a * max_delta, lo[k]), hi[k])
            c = min(max(int(np.rint(knobs[i, k] * (grid - 1))), 0), grid - 1)
            cell = cell * grid + c
        hist_count[i] = min(hist_count[i] + 1, m)
        # one draw after another, in session order (as NumPy draws them)
        idx[i] = table[cell, _integer(fn, state, sizes[cell])]


@_jit
def step_sessions(idx, knobs, prev, bank_x, bank_dur, rest_energy, bpm_lo, bpm_hi,
                  fam, P, S, Z, lost, log_ar1, obs_std, gain, relative,
                  est, conf, t_sec, n_steps, dist, nominal, region,
                  hist_est, hist_knobs, hist_count, history_len, max_delta,
                  distance_weight, jerk_weight, max_steps, dur, jerk, reward, obs, done):
    """Play the picked phrases, advance every listener, then reward and observation.

    Returns the number of sessions whose episode ended (``done``: ``n_steps >= max_steps``).
    """
    n = idx.shape[0]
    n_done = 0
    zero = np.zeros(6)
    for i in range(n):
        if knobs[i, 2] <= rest_energy:  # a rest: 4 bars of silence at the tempo
            bpm = np.rint(bpm_lo + knobs[i, 1] * (bpm_hi - bpm_lo))
            d = 16 * 60.0 / bpm
            x = zero
            idx[i] = -1
        else:
            d = bank_dur[idx[i]]
            x = bank_x[idx[i]]
        dur[i] = d
        _advance(i, fam, P, S, x, d, Z[i])
        _observe(i, P, S, d, Z[i], log_ar1, obs_std, gain, relative, est)
        conf[i] = 1.0
        if lost.shape[0] > 0 and lost[i]:
            est[i, 0] = est[i, 1] = np.nan
            conf[i] = 0.0
        t_sec[i] += d
        n_steps[i] += 1
        d_prev = dist[i]
        e0, e1 = _region_error(i, P, S, gain, relative, region)
        dist[i] = math.hypot(e0, e1)
        j2 = 0.0
        for k in range(3):
            j2 += ((knobs[i, k] - prev[i, k]) / max_delta) ** 2
        jerk[i] = j2 / 3
        reward[i] = (d_prev - dist[i]) - distance_weight * dist[i] - jerk_weight * jerk[i]
        observation_row(i, est, nominal, knobs, conf, hist_est, hist_knobs, hist_count,
                        history_len, region, obs)
        done[i] = n_steps[i] >= max_steps
        n_done += done[i]
    return n_done


@_jit
def observation_row(i, est, nominal, knobs, conf, hist_est, hist_knobs, hist_count,
                    history_len, region, obs):
    """Row ``i`` of :func:`st_agent.contract.build_observations` (same rules), into ``obs``."""
    m = hist_est.shape[1]
    count = min(hist_count[i], m)
    cur0, cur1 = est[i, 0], est[i, 1]
    bad0, bad1 = not np.isfinite(cur0), not np.isfinite(cur1)
    c = conf[i]
    nan = bad0 or bad1
    if nan:
        fb0, fb1 = 0.0, 0.0
        for j in range(count):  # the latest finite past estimate
            if np.isfinite(hist_est[i, j, 0]) and np.isfinite(hist_est[i, j, 1]):
                fb0, fb1 = hist_est[i, j, 0], hist_est[i, j, 1]
                break
        cur0 = fb0 if bad0 else cur0
        cur1 = fb1 if bad1 else cur1
        c = 0.0
    elif not np.isfinite(c):
        c = 0.0
    row = obs[i]
    row[0], row[1] = cur0, cur1
    row[2], row[3] = nominal[i, 0], nominal[i, 1]
    row[4] = min(max(cur0, region[i, 0]), region[i, 1]) - cur0
    row[5] = min(max(cur1, region[i, 2]), region[i, 3]) - cur1
    row[6], row[7], row[8] = knobs[i, 0], knobs[i, 1], knobs[i, 2]
    row[9] = c
    row[10] = 1.0 if nan else 0.0
    for k in range(history_len):
        b = 11 + 5 * k
        if count == 0:
            row[b], row[b + 1] = cur0, cur1
            row[b + 2], row[b + 3], row[b + 4] = knobs[i, 0], knobs[i, 1], knobs[i, 2]
            continue
        j = min(k, count - 1)
        hv, ha = hist_est[i, j, 0], hist_est[i, j, 1]
        row[b] = hv if np.isfinite(hv) else cur0
        row[b + 1] = ha if np.isfinite(ha) else cur1
        row[b + 2], row[b + 3], row[b + 4] = (hist_knobs[i, j, 0], hist_knobs[i, j, 1],
                                              hist_knobs[i, j, 2])
    # clip to observation_bounds: head, then (-1, -1, 0, 0, 0)..(1, 1, 1, 1, 1) per entry
    for k in range(row.shape[0]):
        lo = -1.0 if k < 6 else 0.0
        hi = 1.0
        if k == 4 or k == 5:
            lo, hi = -2.0, 2.0
        elif k >= 11 and (k - 11) % 5 < 2:
            lo = -1.0
        row[k] = min(max(row[k], lo), hi)


@_jit
def init_rows(rows, f, vals, fam, P, S):
    """Listeners of family ``f`` at rest in rows ``rows``.

    ``vals`` (n_fields, len(rows)): :data:`SHARED_NAMES` then the family's
    :data:`OWN_NAMES`. The state is :meth:`FastListeners.reset`'s: latent =
    rest = ``tanh`` of the baselines, everything else 0 but the first-order
    lag (at rest) and the entrainment breathing (at its resting rate).
    """
    n_own = vals.shape[0] - _REST
    for j in range(rows.shape[0]):
        i = rows[j]
        fam[i] = f
        P[i, :] = 0.0
        S[i, :] = 0.0
        for c in range(_REST):
            P[i, c] = vals[c, j]
        for c in range(n_own):
            P[i, _OWN + c] = vals[_REST + c, j]
        P[i, _REST], P[i, _REST + 1] = math.tanh(vals[0, j]), math.tanh(vals[1, j])
        S[i, 5], S[i, 6] = P[i, _REST], P[i, _REST + 1]
        if f == 0:
            S[i, 9], S[i, 10] = P[i, _REST], P[i, _REST + 1]
        elif f == 3:
            S[i, 9] = P[i, _OWN + 2]


@_jit
def reset_outputs(rows, P, S, gain, relative, dist, est, nominal, knobs, conf, hist_est,
                  hist_knobs, hist_count, history_len, region, obs):
    """Distances (into ``dist``) and observations (into ``obs``) of sessions ``rows``."""
    for j in range(rows.shape[0]):
        i = rows[j]
        e0, e1 = _region_error(i, P, S, gain, relative, region)
        dist[i] = math.hypot(e0, e1)
        observation_row(i, est, nominal, knobs, conf, hist_est, hist_knobs, hist_count,
                        history_len, region, obs)
