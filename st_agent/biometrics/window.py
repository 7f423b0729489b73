"""Markers of one window, without a stream (:func:`features_from_window`), and the
BrainFlow reference models; import both through :mod:`st_agent.biometrics.estimator`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from st_agent.biometrics.artifacts import GATES, EyeScale
from st_agent.biometrics.cardiac import BeatTracker, eda_tonic
from st_agent.biometrics.eeg_markers import eeg_features
from st_agent.biometrics.estimator_config import EstimatorConfig
from st_agent.biometrics.montage import Montage, montage

__all__ = ["BrainFlowReference", "features_from_window", "is_bad", "other_features",
           "other_features_batch"]

logger = logging.getLogger(__name__)


def other_features(data: np.ndarray, mont: Montage, cfg: EstimatorConfig,
                    ) -> tuple[dict[str, float], dict[str, Any]]:
    """EMG and EDA level of one window (heart, breathing, EDA tonic: slower, elsewhere)."""
    f: dict[str, float] = {}
    q: dict[str, Any] = {"emg_burst": False}
    if mont.emg.size:
        emg = data[mont.emg] * 1e6
        if np.isfinite(emg).all():
            rms = float(np.sqrt(np.mean((emg - emg.mean(-1, keepdims=True)) ** 2)))
            f["emg/rms_uv"] = rms
            f["emg/ln_rms"] = math.log(max(rms, 1e-3))
            q["emg_burst"] = rms > cfg.emg_burst_uv
    if mont.eda.size:
        eda = data[mont.eda]
        if np.isfinite(eda).all():
            f["eda/level_us"] = float(eda.mean() * 1e6)
    return f, q


def other_features_batch(data: np.ndarray, mont: Montage, cfg: EstimatorConfig,
                         ) -> list[tuple[dict[str, float], dict[str, Any]]]:
    """:func:`other_features` of a batch of windows at once (the same values).

    Parameters
    ----------
    data : ndarray, shape (n_windows, n_channels, n_times)
        The windows (SI units), all of one length.

    Returns
    -------
    list of (features, quality), one per window.
    """
    n_win = data.shape[0]
    out: list[tuple[dict[str, float], dict[str, Any]]] = [
        ({}, {"emg_burst": False}) for _ in range(n_win)]
    if mont.emg.size:
        emg = data[:, mont.emg] * 1e6  # (W, E, T)
        ok = np.isfinite(emg).all(axis=(1, 2))
        rms = np.sqrt(np.mean((emg - emg.mean(-1, keepdims=True)) ** 2, axis=(1, 2)))
        for w in np.flatnonzero(ok):
            r = float(rms[w])
            out[w][0]["emg/rms_uv"] = r
            out[w][0]["emg/ln_rms"] = math.log(max(r, 1e-3))
            out[w][1]["emg_burst"] = r > cfg.emg_burst_uv
    if mont.eda.size:
        eda = data[:, mont.eda]
        ok = np.isfinite(eda).all(axis=(1, 2))
        level = eda.mean(axis=(1, 2)) * 1e6
        for w in np.flatnonzero(ok):
            out[w][0]["eda/level_us"] = float(level[w])
    return out


def is_bad(q: dict[str, Any]) -> bool:
    return bool(any(q.get(g) for g in GATES))


def features_from_window(data: np.ndarray, sfreq: float, ch_names: list[str] | tuple[str, ...],
                         ch_types: list[str] | tuple[str, ...],
                         config: EstimatorConfig | None = None,
                         ) -> tuple[dict[str, float], dict[str, Any]]:
    """Markers and quality flags of one window (pure function, for offline use).

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_times)
        Samples in SI units (volts for eeg/emg/ecg, siemens for eda).
    sfreq : float
        Sampling rate in Hz.
    ch_names, ch_types : sequence of str
        One per row of ``data``; EEG channels are picked by type and matched to
        10-20 positions by :func:`normalize_ch_name`.
    config : EstimatorConfig, optional
        Bands and gating thresholds.

    Returns
    -------
    features : dict of str to float
        Named markers (module docstring); heart and breathing markers use the
        whole window (they need several seconds).
    quality : dict
        Flags: ``nonfinite``, ``flat`` and ``saturated`` (channel names),
        ``blink``, ``eye_excluded``, ``muscle``, ``emg_burst``, ``good_fraction``,
        ``bad``.

    Raises
    ------
    ValueError
        If shapes disagree or there is no EEG channel.
    """
    cfg = config or EstimatorConfig()
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] != len(ch_names) or len(ch_names) != len(ch_types):
        raise ValueError(f"data must have shape (n_channels, n_times) with one name and type "
                         f"per row; got {data.shape}, {len(ch_names)} names, "
                         f"{len(ch_types)} types")
    mont = montage(tuple(ch_names), tuple(ch_types))
    if mont.eeg.size == 0:
        raise ValueError(f"no EEG channel among types {sorted(set(ch_types))}")
    batch = eeg_features(data[None, mont.eeg], float(sfreq), mont, cfg, EyeScale())
    feats, quals = batch.features[0], batch.quality[0]
    f, q = other_features(data, mont, cfg)
    if mont.cardiac_type is not None:
        tracker = BeatTracker(mont.cardiac_type, sfreq, data.shape[1] / sfreq,
                              data.shape[1] / sfreq, cfg.min_hrv_sfreq, margin_sec=0.2)
        tracker.update(data[mont.cardiac[0]], 0)
        f.update(tracker.features(data.shape[1]))
    if mont.eda.size:
        tonic = eda_tonic(data[mont.eda[0]], float(sfreq))
        if tonic is not None:
            f["eda/tonic_us"] = tonic
    feats.update(f)
    quals.update(q)
    quals["bad"] = is_bad(quals)
    return feats, quals



class BrainFlowReference:
    """BrainFlow's mindfulness and restfulness models, loaded once."""

    def __init__(self) -> None:
        from st_agent.biometrics.sources import load_brainflow

        load_brainflow()
        from brainflow.ml_model import (
            BrainFlowClassifiers,
            BrainFlowMetrics,
            BrainFlowModelParams,
            MLModel,
        )

        self.models = {}
        for name, metric in (("mindfulness", BrainFlowMetrics.MINDFULNESS),
                             ("restfulness", BrainFlowMetrics.RESTFULNESS)):
            model = MLModel(BrainFlowModelParams(metric.value,
                                                 BrainFlowClassifiers.DEFAULT_CLASSIFIER.value))
            model.prepare()
            self.models[name] = model

    def __call__(self, eeg_uv: np.ndarray, sfreq: float) -> dict[str, float]:
        from brainflow.data_filter import DataFilter

        data = np.ascontiguousarray(eeg_uv, dtype=np.float64)
        avg, std = DataFilter.get_avg_band_powers(data, list(range(data.shape[0])),
                                                  round(sfreq), True)
        vec = np.concatenate([avg, std])
        return {f"reference/{k}": float(np.ravel(m.predict(vec))[0])
                for k, m in self.models.items()}

    def close(self) -> None:
        for model in self.models.values():
            try:
                model.release()
            except Exception as e:  # released already or never prepared
                logger.debug("releasing BrainFlow model: %s", e)
        self.models = {}
