"""EEG markers of a batch of windows: band powers, posterior alpha, asymmetry, ratios.

Names as logged (all from :func:`masked_welch` spectra, so eye-artifact samples
do not count; µV² for powers):

==========================  ===========================================================
``eeg/<band>_power``        band power, mean over good EEG channels; δ 1-4, θ 4-8,
                            α 8-13, β 13-30, γ 30-45 Hz
``eeg/<band>_rel``          band power / total 1-45 Hz power (channel means)
``eeg/<band>_de``           differential entropy ½·ln(2πe·P) (Gaussian assumption;
                            Duan et al. 2013), mean over channels
``eeg/alpha_post_power``    alpha power at the alpha sites (:mod:`.montage`: occipital/
                            parietal where the montage has them), in the listener's own
                            band (peak alpha frequency ± 2 Hz once calibrated; 8-13 Hz
                            before)
``eeg/alpha_post_rel``      the same / total 1-45 Hz power at those sites;
                            ``eeg/alpha_post_lrel`` its natural log (what arousal uses)
``eeg/faa``                 frontal alpha asymmetry ln α(right) − ln α(left), first pair
                            of :data:`~.montage.FAA_PAIRS` the montage has
``eeg/beta_alpha``          β/α power ratio (all channels); ``eeg/log_beta_alpha`` its log
``eeg/engagement``          β/(α+θ), Pope et al. 1995's engagement index
``eeg/good_channels``       channels that entered the means
==========================  ===========================================================

Peak alpha frequency (:func:`peak_alpha_frequency`) is found once, on the mean
spectrum of the alpha sites over the calibration: the log spectrum minus a
straight line fitted (log-log) to 2-40 Hz outside 7-14 Hz (the aperiodic 1/f
part; Donoghue et al. 2020), then the centre of gravity of what remains above
the line in 7-14 Hz (Klimesch 1999 defines the individual band around that
peak; the ±2 Hz band follows Doppelmayr et al. 1998). Without a peak of at least
``min_peak_log10`` above the line the default 8-13 Hz band stays, and the
estimator says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from st_agent.biometrics.artifacts import (
    EyeScale,
    _dilate,
    channel_quality,
    eye_artifact_mask,
    masked_welch,
)
from st_agent.biometrics.montage import Montage

__all__ = ["BANDS", "EegBatch", "alpha_markers", "eeg_features", "peak_alpha_frequency"]

#: Default EEG bands in Hz, ``name -> (low, high)``.
BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}

#: Total-power range for relative powers, Hz.
TOTAL_BAND = (1.0, 45.0)


@dataclass
class EegBatch:
    """EEG markers of a batch of windows."""

    features: list[dict[str, float]]
    """Per window, the named markers of the module docstring."""
    quality: list[dict[str, Any]]
    """Per window: ``nonfinite``, ``flat``, ``saturated``, ``blink``, ``eye_excluded``,
    ``excluded`` (eye artifacts and spikes), ``eye_peak_uv``, ``muscle``,
    ``bad_channels``, ``good_fraction``, ``faa_pair``, ``alpha_sites``."""
    freqs: np.ndarray
    """Frequencies of ``alpha_psd``, Hz."""
    alpha_psd: np.ndarray
    """Mean PSD of the good alpha sites per window, shape (n_windows, n_freqs), µV²/Hz."""
    log_bands: np.ndarray
    """ln band power per channel and band (``cfg.bands`` order), shape (n_windows,
    n_eeg, n_bands); NaN for bad channels. What supervised calibration fits."""


def _band(psd: np.ndarray, freqs: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Band power (sum of PSD bins in [lo, hi) times the bin width)."""
    mask = (freqs >= lo) & (freqs < hi)
    if not mask.any():
        return np.full(psd.shape[:-1], np.nan)
    return psd[..., mask].sum(-1) * (freqs[1] - freqs[0])


def alpha_markers(alpha_psd: np.ndarray, freqs: np.ndarray, band: tuple[float, float],
                  ) -> dict[str, np.ndarray]:
    """Posterior alpha markers from the mean PSD of the alpha sites.

    Parameters
    ----------
    alpha_psd : ndarray, shape (n_windows, n_freqs)
        µV²/Hz.
    freqs : ndarray, shape (n_freqs,)
        Hz.
    band : (float, float)
        Alpha band, Hz.

    Returns
    -------
    markers : dict of str to ndarray, shape (n_windows,)
        ``eeg/alpha_post_power``, ``eeg/alpha_post_rel``, ``eeg/alpha_post_lrel``.
    """
    power = _band(alpha_psd, freqs, *band)
    total = _band(alpha_psd, freqs, *TOTAL_BAND)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(total > 0, power / total, np.nan)
        lrel = np.where(rel > 0, np.log(rel), np.nan)
    return {"eeg/alpha_post_power": power, "eeg/alpha_post_rel": rel,
            "eeg/alpha_post_lrel": lrel}


def peak_alpha_frequency(freqs: np.ndarray, psd: np.ndarray, search: tuple[float, float] = (
        7.0, 14.0), min_peak_log10: float = 0.05) -> tuple[float | None, str]:
    """Peak alpha frequency of a mean spectrum (module docstring).

    Parameters
    ----------
    freqs : ndarray, shape (n_freqs,)
        Hz.
    psd : ndarray, shape (n_freqs,)
        Mean power spectral density (any units).
    search : (float, float)
        Where to look for the peak, Hz.
    min_peak_log10 : float
        Least height above the aperiodic line, log10 units (0.05 ≈ 12 %).

    Returns
    -------
    paf : float or None
        Hz; None without a clear peak.
    reason : str
        How it was found, or why not.
    """
    psd = np.asarray(psd, dtype=float)
    fit = (freqs >= 2.0) & (freqs <= 40.0) & ~((freqs >= search[0]) & (freqs <= search[1]))
    ok = fit & np.isfinite(psd) & (psd > 0)
    if ok.sum() < 4:
        return None, "spectrum too short or empty to fit the aperiodic part"
    coef = np.polyfit(np.log10(freqs[ok]), np.log10(psd[ok]), 1)
    sel = (freqs >= search[0]) & (freqs <= search[1]) & np.isfinite(psd) & (psd > 0)
    if not sel.any():
        return None, "no finite power in the alpha search range"
    resid = np.log10(psd[sel]) - np.polyval(coef, np.log10(freqs[sel]))
    if resid.max() < min_peak_log10:
        return None, (f"no alpha peak: at most {resid.max():.3f} log10 units above the 1/f "
                      f"line in {search[0]:g}-{search[1]:g} Hz (needs {min_peak_log10:g})")
    pos = np.clip(resid, 0.0, None)
    paf = float((freqs[sel] * pos).sum() / pos.sum())
    return paf, f"peak {resid.max():.2f} log10 units above the 1/f line"


def _means(bp: dict[str, np.ndarray], total: np.ndarray, good: np.ndarray,
           ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    n_good = np.maximum(good.sum(-1), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        gmean = {b: np.where(good, p, 0).sum(-1) / n_good for b, p in bp.items()}
        tot_mean = np.where(good, total, 0).sum(-1) / n_good
        de = {b: np.where(good, 0.5 * np.log(2 * np.pi * np.e * np.maximum(p, 1e-12)), 0)
              .sum(-1) / n_good for b, p in bp.items()}
    return gmean, tot_mean, de


def _clean_samples(x: np.ndarray, sfreq: float, mont: Montage, cfg: Any, eye_scale: EyeScale,
                   ) -> dict[str, np.ndarray]:
    """µV signal, channel flags and the mask of samples free of eye artifacts and spikes."""
    finite = np.isfinite(x)
    uv = np.where(finite, x * 1e6, 0.0)
    nonfinite_ch, flat, saturated, spikes = channel_quality(uv, finite, cfg.flat_uv,
                                                            cfg.max_abs_uv, cfg.clip_fraction)
    if spikes.any():  # brief spikes cost their samples (and 50 ms around them)
        uv = np.where(spikes[:, None, :], np.median(uv, axis=-1, keepdims=True), uv)
        spikes = _dilate(spikes, round(0.05 * sfreq))
    good = ~(nonfinite_ch | flat | saturated)
    clean, eye_peak = eye_artifact_mask(uv, good, mont.frontal, mont.eye_reference,
                                        mont.lateral, sfreq, eye_scale, cfg.blink_uv,
                                        cfg.blink_z, cfg.blink_pad_sec, cfg.blink_cap_uv)
    eye_excluded = 1.0 - clean.mean(-1)
    clean &= ~spikes
    return {"uv": uv, "nonfinite": nonfinite_ch, "flat": flat, "saturated": saturated,
            "good": good, "clean": clean, "eye_peak": eye_peak, "eye_excluded": eye_excluded,
            "excluded": 1.0 - clean.mean(-1)}


def _window_dicts(w: int, m: dict[str, Any], mont: Montage, cfg: Any,
                  ) -> tuple[dict[str, float], dict[str, Any]]:
    """Named markers and quality flags of window ``w`` from the batch arrays ``m``."""
    gmean, tot_mean, de, bp, good = m["gmean"], m["tot_mean"], m["de"], m["bp"], m["good"]
    n_good, n_ch = int(good[w].sum()), good.shape[1]
    f: dict[str, float] = {}
    for b in cfg.bands:
        f[f"eeg/{b}_power"] = float(gmean[b][w])
        f[f"eeg/{b}_rel"] = float(gmean[b][w] / tot_mean[w]) if tot_mean[w] > 0 else math.nan
        f[f"eeg/{b}_de"] = float(de[b][w])
    for k, v in m["post"].items():
        f[k] = float(v[w])
    a, b_, t = gmean["alpha"][w], gmean["beta"][w], gmean["theta"][w]
    f["eeg/beta_alpha"] = float(b_ / a) if a > 0 else math.nan
    f["eeg/log_beta_alpha"] = float(math.log(b_ / a)) if a > 0 and b_ > 0 else math.nan
    f["eeg/engagement"] = float(b_ / (a + t)) if a + t > 0 else math.nan
    faa_ok = mont.faa is not None and bool(good[w, list(mont.faa)].all())
    if faa_ok:
        r, lft = bp["alpha"][w, mont.faa[0]], bp["alpha"][w, mont.faa[1]]
        f["eeg/faa"] = float(math.log(r) - math.log(lft)) if r > 0 and lft > 0 else math.nan
    f["eeg/good_channels"] = float(n_good)
    good_frac = n_good / n_ch if n_ch else 0.0
    names = np.asarray(mont.eeg_names)
    flat, sat = m["flat"][w], m["saturated"][w]
    q = {
        "nonfinite": bool(m["nonfinite"][w].any()),
        "flat": names[flat].tolist(),
        "saturated": names[sat & ~flat].tolist(),
        "eye_excluded": float(m["eye_excluded"][w]),
        "excluded": float(m["excluded"][w]),
        "eye_peak_uv": float(m["eye_peak"][w]),
        "blink": bool(m["eye_excluded"][w] > 1.0 - cfg.min_clean_fraction),
        "spikes": bool(m["eye_excluded"][w] <= 1.0 - cfg.min_clean_fraction
                       and m["excluded"][w] > 1.0 - cfg.min_clean_fraction),
        "muscle": bool(m["muscle"][w]),
        "good_fraction": good_frac,
        "faa_pair": mont.faa_names if faa_ok else None,
        "alpha_sites": int(good[w, mont.alpha].sum()),
        "bad_channels": bool((1 - good_frac) > cfg.max_bad_channel_fraction or n_good == 0),
    }
    return f, q


def eeg_features(x: np.ndarray, sfreq: float, mont: Montage, cfg: Any, eye_scale: EyeScale,
                 alpha_band: tuple[float, float] = BANDS["alpha"], hop: int = 0) -> EegBatch:
    """Vectorised EEG markers and quality for a batch of windows.

    Parameters
    ----------
    x : ndarray, shape (n_windows, n_eeg, n_times)
        EEG in volts (the rows ``mont.eeg`` of the stream).
    sfreq : float
        Sampling rate, Hz.
    mont : Montage
        Channel roles.
    cfg : EstimatorConfig
        Bands and artifact thresholds.
    eye_scale : EyeScale
        Running SDs of the eye proxies (updated).
    alpha_band : (float, float)
        The listener's alpha band for the posterior markers, Hz.
    hop : int
        Samples between consecutive windows of the batch (0: unrelated windows); lets
        :func:`masked_welch` share the overlapping segments.

    Returns
    -------
    batch : EegBatch
    """
    m: dict[str, Any] = _clean_samples(x, sfreq, mont, cfg, eye_scale)
    good = m["good"]
    n_good = good.sum(axis=-1)
    freqs, psd = masked_welch(m["uv"], m["clean"], sfreq, round(sfreq),
                              taper=round(0.05 * sfreq), hop=hop)
    psd = np.nan_to_num(psd, nan=0.0)
    total = _band(psd, freqs, *TOTAL_BAND)
    bp = {band: _band(psd, freqs, lo, hi) for band, (lo, hi) in cfg.bands.items()}
    m["gmean"], m["tot_mean"], m["de"] = _means(bp, total, good)
    m["bp"] = bp
    m["muscle"] = np.zeros(x.shape[0], dtype=bool)
    if "gamma" in bp:
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(good, bp["gamma"] / np.maximum(total, 1e-12), 0).sum(-1)
        m["muscle"] = share / np.maximum(n_good, 1) > cfg.muscle_ratio
    a_good = good[:, mont.alpha]
    alpha_psd = ((psd[:, mont.alpha] * a_good[..., None]).sum(1)
                 / np.maximum(a_good.sum(-1), 1)[:, None])
    alpha_psd[a_good.sum(-1) == 0] = np.nan
    m["post"] = alpha_markers(alpha_psd, freqs, alpha_band)
    feats, quals = [], []
    for w in range(x.shape[0]):
        f, q = _window_dicts(w, m, mont, cfg)
        feats.append(f)
        quals.append(q)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_bands = np.log(np.stack([bp[b] for b in cfg.bands], axis=-1))
    log_bands[~good] = np.nan
    return EegBatch(feats, quals, freqs, alpha_psd, log_bands)
