"""State estimation: biosignal windows -> markers -> EmotionState.

Pipeline
--------
1. **Windows.** Chunks from a :class:`~st_agent.biometrics.sources.BiometricSource` are
   buffered; every ``hop_sec`` (0.5 s) the last ``window_sec`` (2 s) of EEG is
   analysed. A gap in ``first_sample`` is filled with NaN, so windows across it are bad.
2. **Markers.** EEG (:mod:`~st_agent.biometrics.eeg_markers`): band powers, posterior
   alpha at the occipital/parietal sites in the listener's own alpha band, frontal
   alpha asymmetry, beta/alpha. Heart, breathing, skin (:mod:`~st_agent.biometrics.cardiac`,
   NeuroKit2): heart rate, RMSSD, HF power and ECG/PPG-derived breathing rate, EDA tonic
   level, recomputed every ``hr_update_sec`` (EDA: ``eda_update_sec``) on their own,
   longer windows (:mod:`~st_agent.biometrics.slow_markers`; at most one of these slow
   updates per hop, so no hop pays for all). EMG RMS.
3. **Artifacts** (:mod:`~st_agent.biometrics.artifacts`): blinks and eye movements cost
   their samples, not the window; bad channels leave the means; a window is rejected
   only for a gap, for too little eye-free data, muscle, or too many bad channels. A
   rejected window never moves the estimate: the previous state is held and its
   confidence multiplied by ``confidence_decay``. :meth:`StateEstimator.gate_report`
   gives the share lost per gate.
4. **Calibration** (:mod:`~st_agent.biometrics.calibration`): the first
   ``calibration_sec`` of good windows (rest) give each marker's mean and SD for this
   listener, the peak alpha frequency and the arousal weights; afterwards markers are
   z-scored against them. It warns while it falls behind (naming the gate) and falls
   back to the best data available after ``calibration_timeout_sec``, with the state's
   confidence reduced accordingly (:meth:`StateEstimator.calibration_status`).
5. **Mapping** to Russell's circumplex, both in [-1, 1]::

       valence = tanh(gain · z(eeg/faa))
       arousal = tanh(gain · Σ_k w_k z_k / Σ_k |w_k|)     (markers k present)

   **What drives ``calm``** (low arousal; ``w_k`` are the signed priors of
   :data:`AROUSAL_PRIORS` for the markers the montage has and the calibration saw,
   see :mod:`~st_agent.biometrics.calibration`; signs from the literature, sizes
   fitted on simulated listeners, see :data:`AROUSAL_PRIORS`): *lower* heart rate
   (``hr/bpm``, ``hr_weight`` 1.0), *more* posterior relative alpha
   (``eeg/alpha_post_lrel``, −0.7; alpha is the idling rhythm, largest with eyes closed and
   relaxed, Klimesch 1999; Barry et al. 2007), *less* beta relative to alpha
   (``eeg/log_beta_alpha``, +0.7; Pope, Bogart & Bartolome 1995), *less* muscle
   tension (``emg/ln_rms``, +0.65), *lower* tonic skin conductance (``eda/tonic_us``,
   +0.5; Boucsein 2012), and a little: *higher* vagal heart-rate variability
   (``hr/ln_hf`` −0.1, ``hr/ln_rmssd`` −0.05; Task Force 1996; Thayer et al. 2012) and
   *slower* breathing (``resp/rate_bpm``, +0.05; Boiten, Frijda & Wientjes 1994).
   A montage contributes the markers it has. With a
   per-listener supervised map (:meth:`StateEstimator.set_supervised`, or
   ``EstimatorConfig.supervised``: ``st-agent calibrate`` fits one and ``st-agent
   session --calibration`` loads it; :mod:`~st_agent.biometrics.supervised`) its score
   *minus its mean over this session's rest calibration* (the map's own rest score with a
   stored baseline) replaces that weighted mean, so that rest is arousal 0 either way.
   A map fitted on other EEG channels than the stream's is not used (an event says so).

   ``confidence`` = share of good EEG channels × share of the window free of eye
   artifacts and spikes × (0.5 without a frontal pair) × the calibration's confidence
   (1, or less after a fallback).

   *Valence* follows Davidson's approach/withdrawal model (Davidson 1992; Coan & Allen
   2004): relatively more right-frontal alpha means relatively more left-frontal
   activity, associated with approach. Both axes are weak, listener-specific correlates
   (frontal asymmetry in particular replicates poorly); that is why they are z-scored
   per listener and why ``confidence`` is reported.
6. **Smoothing.** Each drive inside the ``tanh`` goes through an exponential moving
   average with time constant ``τ = smoothing_sec``, ``m <- a·m + (1 - a)·d`` with
   ``a = exp(-Δt/τ)``, ``Δt`` the time since the last good window. Bad windows never
   enter it; the first good window after calibration, :meth:`StateEstimator.reset`,
   :meth:`~StateEstimator.calibrate` or :meth:`~StateEstimator.set_baseline` starts it
   afresh. The mean delay is about ``τ - hop_sec/2``; τ = 4 s (valence) was chosen on 50
   simulated listeners (``benchmarks/bench_listener.py``): mean r with the latent state
   0.66 per window, 0.85 at 4 s, 0.84 at 12 s. Arousal has its own τ
   (``arousal_smoothing_sec``, 2.5 s, fitted with its weights).
   ``smoothing_sec=0`` gives the per-window state; each :class:`Estimate` also carries
   the unsmoothed ``raw_state`` and the raw ``features`` and ``z``.

Valence and arousal are 0 with confidence 0 until the baseline is complete. What the
estimator cannot compute (no occipital channel, no ECG, a PPG too slow for beat-to-beat
markers, a flat or saturated channel) it logs once and lists in
:meth:`StateEstimator.marker_status`, and goes on with the rest.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from st_agent.biometrics.artifacts import EyeScale, GateCounter, GateReport
from st_agent.biometrics.calibration import (
    Baseline,
    CalibrationStatus,
    Calibrator,
    EstimatorEvent,
)
from st_agent.biometrics.eeg_markers import BANDS, alpha_markers, eeg_features
from st_agent.biometrics.estimate import Estimate
from st_agent.biometrics.estimator_config import AROUSAL_PRIORS, EstimatorConfig
from st_agent.biometrics.montage import (
    _LABELS,
    FAA_PAIRS,
    Montage,
    montage,
    normalize_ch_name,
)
from st_agent.biometrics.slow_markers import SlowMarkers
from st_agent.biometrics.supervised import SupervisedDrive, SupervisedMap
from st_agent.biometrics.window import (
    BrainFlowReference,
    features_from_window,
    is_bad,
    other_features,
    other_features_batch,
)
from st_agent.types import EmotionState, SignalChunk

__all__ = [
    "AROUSAL_PRIORS",
    "BANDS",
    "FAA_PAIRS",
    "Baseline",
    "CalibrationStatus",
    "Estimate",
    "EstimatorConfig",
    "EstimatorEvent",
    "GateReport",
    "StateEstimator",
    "features_from_window",
    "normalize_ch_name",
]

_ = _LABELS  # re-exported for callers that list 10-20 labels

logger = logging.getLogger(__name__)


# -------------------------------------------------------------------- estimator


class StateEstimator:
    """Streaming estimator: push chunks, get one :class:`Estimate` per hop.

    Parameters
    ----------
    config : EstimatorConfig, optional
        Windows, bands, calibration and gating settings.
    baseline : Baseline, optional
        A stored baseline for this listener; skips calibration.

    Examples
    --------
    >>> est = StateEstimator(EstimatorConfig(calibration_sec=30))  # doctest: +SKIP
    >>> with BrainFlowSource("synthetic") as src, est:  # doctest: +SKIP
    ...     for chunk in src.iter_chunks():
    ...         for e in est.push(chunk):
    ...             print(e.state)
    ...     print(est.calibration_status().message, est.gate_report().summary())
    """

    def __init__(self, config: EstimatorConfig | None = None,
                 baseline: Baseline | None = None) -> None:
        if config is not None and not isinstance(config, EstimatorConfig):
            raise TypeError(f"config must be an EstimatorConfig, got {type(config).__name__}")
        self.config = config or EstimatorConfig()
        self._baseline = baseline
        self._stored = baseline is not None
        self._calibrator = Calibrator(self.config, self._priors(), self.config.marker_windows())
        self._gates = GateCounter()
        self._events: list[EstimatorEvent] = []
        self._unavailable: dict[str, str] = {}
        self._layout: tuple[float, tuple[str, ...], tuple[str, ...]] | None = None
        self._buf = np.empty((0, 0))
        self._buf_start = 0
        self._next_end = 0
        self._t_ref = (0, 0.0)  # (sample index, t_sec) of the last chunk's start
        self._state = EmotionState(0.0, 0.0, 0.0, 0.0)
        # (value, t_sec) of the moving average of each drive, valence and arousal
        self._ema: list[tuple[float, float] | None] = [None, None]
        self._reset_stream()
        self._reference: BrainFlowReference | None = None
        self._reference_failed = False
        self._supervised: SupervisedDrive | None = None
        if self.config.supervised is not None:
            self.set_supervised(self.config.supervised)

    def _priors(self) -> dict[str, float]:
        return self.config.priors()

    def _reset_stream(self) -> None:
        self._eye_scale = EyeScale()
        self._slow: SlowMarkers | None = None

    # -- calibration
    @property
    def baseline(self) -> Baseline | None:
        """The listener's baseline, once calibration is complete."""
        return self._baseline

    @property
    def is_calibrated(self) -> bool:
        """Whether markers are z-scored against a baseline (or calibration is off)."""
        return self._baseline is not None or self.config.calibration_sec == 0

    def calibrate(self, duration_sec: float | None = None) -> None:
        """(Re)start the rest-baseline phase.

        The next ``duration_sec`` (default ``config.calibration_sec``) of good
        windows become the baseline; meanwhile estimates have confidence 0.
        """
        if duration_sec is not None:
            if not (isinstance(duration_sec, int | float) and duration_sec > 0):
                raise ValueError(f"duration_sec must be > 0 seconds, got {duration_sec!r}")
            self.config.calibration_sec = float(duration_sec)
        self._baseline = None
        self._stored = False
        self._calibrator = Calibrator(self.config, self._priors(), self.config.marker_windows())
        self._ema = [None, None]

    def set_baseline(self, baseline: Baseline) -> None:
        """Use a stored baseline (e.g. from an earlier session of this listener)."""
        if not isinstance(baseline, Baseline):
            raise TypeError(f"baseline must be a Baseline, got {type(baseline).__name__}")
        self._baseline = baseline
        self._stored = True
        self._ema = [None, None]

    def set_supervised(self, mapping: SupervisedMap | None) -> None:
        """Use a per-listener supervised map for arousal (None: back to the markers).

        Parameters
        ----------
        mapping : SupervisedMap or None
            From :func:`~st_agent.biometrics.supervised.fit_supervised`, fitted on
            this stream's ``Estimate.log_bands``.
        """
        if mapping is not None and not isinstance(mapping, SupervisedMap):
            raise TypeError(f"mapping must be a SupervisedMap or None, got "
                            f"{type(mapping).__name__}")
        self._supervised = None if mapping is None else SupervisedDrive(mapping)
        self._ema[1] = None
        if mapping is not None and self._layout is not None:
            self._check_supervised(montage(self._layout[1], self._layout[2]),
                                   self._state.t_sec)

    def _check_supervised(self, mont: Montage, t_sec: float) -> None:
        """Drop a supervised map fitted on other EEG channels than the stream's."""
        why = self._supervised.mismatch(tuple(self._layout[1][i] for i in mont.eeg),
                                        len(self.config.bands))
        if why:
            self._supervised = None
            self._note("supervised_map", why, t_sec, True)

    def calibration_status(self) -> CalibrationStatus:
        """Progress of the calibration, what blocks it, the confidence it implies.

        Returns
        -------
        status : CalibrationStatus
            ``phase`` (calibrating / done / fallback / stored / disabled),
            ``progress`` in [0, 1], ``blocking_gate`` and its share, ``confidence``
            and a one-line ``message`` for the user.
        """
        if self.config.calibration_sec == 0 and self._baseline is None:
            return self._calibrator.status(phase="disabled")
        return self._calibrator.status(self._baseline, "stored" if self._stored else None)

    def gate_report(self) -> GateReport:
        """Windows rejected per gate and eye-artifact samples removed, since the start."""
        return self._gates.report()

    def marker_status(self) -> dict[str, str]:
        """Markers this stream cannot provide (or provides only in a fallback form), and why."""
        out = dict(self._unavailable)
        tracker = self._slow.tracker if self._slow is not None else None
        if tracker is not None:  # what the heart channel lacks now, not in the past
            for k in ("hr/bpm", "hr/rmssd_ms", "hr/hf_ms2", "resp/rate_bpm"):
                if k not in tracker.unavailable:
                    out.pop(k, None)
            out.update(tracker.unavailable)
        out.update({k: v for k, v in self._calibrator.notes.items() if k == "eeg/paf_hz"})
        return out

    def arousal_weights(self) -> dict[str, float]:
        """Signed weights of the arousal markers in use (the priors until calibrated)."""
        base = self._baseline
        if base is not None and base.weights:
            return dict(base.weights)
        return {k: w for k, w in self._priors().items() if w != 0}

    def pop_events(self) -> list[EstimatorEvent]:
        """Events since the last call (calibration warnings and results, missing markers)."""
        out = self._events + self._calibrator.events
        self._events, self._calibrator.events = [], []
        return out

    def _note(self, marker: str, reason: str, t_sec: float, warn: bool) -> None:
        """Record, once per marker and reason, that a marker is unavailable."""
        if self._unavailable.get(marker) == reason:
            return
        self._unavailable[marker] = reason
        (logger.warning if warn else logger.info)("%s unavailable: %s", marker, reason)
        self._events.append(EstimatorEvent("marker_unavailable", t_sec, f"{marker}: {reason}",
                                           {"marker": marker}))

    # -- streaming
    def reset(self) -> None:
        """Forget buffered samples, the held state and its average (keeps the baseline)."""
        self._layout = None
        self._state = EmotionState(0.0, 0.0, 0.0, 0.0)
        self._ema = [None, None]
        self._reset_stream()

    def _start_layout(self, chunk: SignalChunk) -> None:
        mont = montage(chunk.ch_names, chunk.ch_types)
        if mont.eeg.size == 0:
            raise ValueError(f"the stream has no EEG channel; types: {sorted(set(chunk.ch_types))}")
        self._layout = (chunk.sfreq, chunk.ch_names, chunk.ch_types)
        self._buf = np.empty((len(chunk.ch_names), 0))
        self._buf_start = chunk.first_sample
        self._next_end = chunk.first_sample + self._n_win
        self._reset_stream()
        self._slow = SlowMarkers(self.config, mont, chunk.sfreq)
        if self._supervised is not None:
            self._check_supervised(mont, chunk.t0_sec)
        logger.info("estimator: %d EEG channels, alpha at %s (%s), FAA pair %s, cardiac %s",
                    mont.eeg.size, ", ".join(mont.alpha_names), mont.alpha_source,
                    mont.faa_names, mont.cardiac_type)
        self._note_montage(mont, chunk.t0_sec)

    def _note_montage(self, mont: Montage, t_sec: float) -> None:
        if mont.alpha_source != "occipital/parietal":
            self._note("eeg/alpha_post_lrel", f"no occipital/parietal channel; alpha from "
                       f"{', '.join(mont.alpha_names)} ({mont.alpha_source})", t_sec, True)
        if mont.faa is None:
            self._note("eeg/faa", "no frontal pair (F4/F3, AF8/AF7, AF4/AF3, Fp2/Fp1, F8/F7): "
                       "valence holds at 0", t_sec, True)
        if mont.frontal.size == 0:
            self._note("eye_artifacts", "no frontal channel: blinks cannot be detected",
                       t_sec, True)
        if mont.cardiac_type is None:
            self._note("hr/bpm", "no ECG or PPG channel", t_sec, False)
            if mont.resp.size == 0:
                self._note("resp/rate_bpm", "no respiration belt, ECG or PPG", t_sec, False)
        if mont.eda.size == 0:
            self._note("eda/tonic_us", "no EDA channel", t_sec, False)

    @property
    def _n_win(self) -> int:
        return round(self.config.window_sec * self._layout[0])

    @property
    def _n_hop(self) -> int:
        return max(1, round(self.config.hop_sec * self._layout[0]))

    def push(self, chunk: SignalChunk) -> list[Estimate]:
        """Add a chunk; return the estimates of the windows it completes.

        Parameters
        ----------
        chunk : SignalChunk
            Next samples of the stream. A jump in ``first_sample`` (a gap) is
            filled with NaN, so windows across it are bad and hold the state.

        Returns
        -------
        estimates : list of Estimate
            One per hop whose window ended inside this chunk (often 0 or 1).
        """
        if not isinstance(chunk, SignalChunk):
            raise TypeError(f"push() takes a SignalChunk, got {type(chunk).__name__}")
        if self._layout is None:
            self._start_layout(chunk)
        elif (chunk.sfreq, chunk.ch_names, chunk.ch_types) != self._layout:
            raise ValueError("chunk layout changed (rate, names or types); call reset() first")
        buf_end = self._buf_start + self._buf.shape[1]
        data = chunk.data
        if chunk.first_sample > buf_end:  # gap: NaN, never bridged
            n_gap = chunk.first_sample - buf_end
            fill = min(n_gap, self._keep)
            self._buf = np.concatenate(
                [self._buf, np.full((self._buf.shape[0], fill), np.nan)], axis=1)
            self._buf_start += n_gap - fill
            # skip the windows that would lie wholly inside the gap
            self._next_end = max(self._next_end, chunk.first_sample)
        elif chunk.first_sample < buf_end:  # overlap: drop what we have
            data = data[:, buf_end - chunk.first_sample:]
        self._buf = np.concatenate([self._buf, data], axis=1)
        self._t_ref = (chunk.first_sample, chunk.t0_sec)
        buf_end = self._buf_start + self._buf.shape[1]

        ends = []
        while self._next_end <= buf_end:
            ends.append(self._next_end)
            self._next_end += self._n_hop
        out: list[Estimate] = []
        for i in range(0, len(ends), 256):  # batches bound the memory for long pushes
            out += self._estimate(ends[i:i + 256])
        # keep what the next windows need
        drop = max(0, buf_end - self._keep - self._buf_start)
        drop = min(drop, max(0, self._next_end - self._n_win - self._buf_start))
        if drop:
            self._buf = self._buf[:, drop:]
            self._buf_start += drop
        return out

    @property
    def _keep(self) -> int:
        sfreq, cfg = self._layout[0], self.config
        sec = max(cfg.window_sec, cfg.hr_window_sec, cfg.eda_window_sec)
        if montage(self._layout[1], self._layout[2]).resp.size:
            sec = max(sec, cfg.hrv_window_sec)
        return round(sec * sfreq)

    def _alpha_band(self) -> tuple[float, float]:
        base = self._baseline
        return (base.alpha_band if base is not None and base.alpha_band is not None
                else tuple(self.config.bands["alpha"]))

    def _estimate(self, ends: list[int]) -> list[Estimate]:
        if not ends:
            return []
        sfreq = self._layout[0]
        mont = montage(self._layout[1], self._layout[2])
        n_win = self._n_win
        rel = np.asarray(ends) - self._buf_start
        idx = rel[:, None] - n_win + np.arange(n_win)[None, :]  # (W, n_win)
        windows = self._buf[mont.eeg[None, :, None], idx[:, None, :]]  # (W, C, n_win)
        self._batch_band = tuple(self._alpha_band())
        batch = eeg_features(windows, sfreq, mont, self.config, self._eye_scale,
                             self._batch_band, hop=self._n_hop)
        slow = self._slow
        if slow.tracker is not None and len(ends) > 1:  # offline: one beat search per batch
            slow.update_beats(self._buf, self._buf_start, int(rel[-1]))
        out = []
        if rel[0] >= n_win:  # whole windows: EMG and EDA of the batch at once
            others = other_features_batch(self._buf[:, idx].transpose(1, 0, 2), mont,
                                          self.config)
        else:
            others = [other_features(self._buf[:, max(0, int(r) - n_win):int(r)], mont,
                                     self.config) for r in rel]
        for w, end in enumerate(ends):
            f, q = others[w]
            f.update(slow.features(self._buf, self._buf_start, end, streaming=len(ends) == 1))
            feats, qual = batch.features[w], batch.quality[w]
            feats.update(f)
            qual.update(q)
            t_sec = self._t_ref[1] + (end - self._t_ref[0]) / sfreq
            if slow.tracker is not None:
                for marker, why in slow.tracker.unavailable.items():
                    self._note(marker, why, t_sec, True)
            bad = is_bad(qual)
            qual["bad"] = bad
            self._gates.add(qual)
            self._note_channels(qual, t_sec)
            if not bad and self.config.reference_model:
                feats.update(self._reference_scores(windows[w], sfreq))
            est = self._update(feats, qual, bad, t_sec, batch.alpha_psd[w], batch.freqs,
                               batch.log_bands[w])
            est.log_bands = batch.log_bands[w]
            out.append(est)
        return out

    def _note_channels(self, qual: dict[str, Any], t_sec: float) -> None:
        """Flat or saturated channels: one line for those new in this window."""
        fresh = []
        for key in ("flat", "saturated"):
            for ch in qual[key]:
                marker, reason = f"channel {ch}", f"{key}: left out of the EEG means while it lasts"
                if self._unavailable.get(marker) != reason:
                    self._unavailable[marker] = reason
                    fresh.append(f"{ch} ({key})")
        if fresh:
            msg = "channels left out of the EEG means while bad: " + ", ".join(fresh)
            logger.warning("%s", msg)
            self._events.append(EstimatorEvent("marker_unavailable", t_sec, msg,
                                               {"channels": fresh}))

    def _reference_scores(self, eeg_v: np.ndarray, sfreq: float) -> dict[str, float]:
        if self._reference_failed:
            return {}
        try:
            if self._reference is None:
                self._reference = BrainFlowReference()
            return self._reference(eeg_v * 1e6, sfreq)
        except Exception as e:  # the reference is optional; never let it stop estimation
            logger.warning("BrainFlow reference model unavailable: %s", e)
            self._reference_failed = True
            return {}

    def _update(self, feats: dict[str, float], qual: dict[str, Any], bad: bool,
                t_sec: float, alpha_psd: np.ndarray, freqs: np.ndarray,
                log_bands: np.ndarray) -> Estimate:
        cfg = self.config
        prev = self._state
        qual["calibrating"] = not self.is_calibrated
        held = EmotionState(prev.valence, prev.arousal, prev.confidence * cfg.confidence_decay,
                            t_sec)
        if qual["calibrating"]:
            base = self._calibrator.add(t_sec, feats, qual, bad, alpha_psd, freqs)
            if self._supervised is not None and not bad:
                self._supervised.add_rest(log_bands, feats)
            if base is not None:
                self._baseline = base
                self._ema = [None, None]
                if self._supervised is not None:
                    self._supervised.end_rest()
            self._state = held if bad else EmotionState(0.0, 0.0, 0.0, t_sec)
            return Estimate(self._state, feats, qual, bad)
        if bad:
            self._state = held
            return Estimate(self._state, feats, qual, True)
        base = self._baseline or Baseline({}, {}, 0)
        if base.alpha_band is not None and tuple(base.alpha_band) != getattr(
                self, "_batch_band", None):  # the listener's band (the batch may predate it)
            feats.update({k: float(v[0]) for k, v in
                          alpha_markers(alpha_psd[None], freqs, base.alpha_band).items()})
        mean, std = base.mean, base.std  # = {k: base.z(k, v) ...}, inlined (per window)
        z = {k: (v - mean[k]) / std[k] if k in std and math.isfinite(v) else math.nan
             for k, v in feats.items() if k in mean}
        if not base.mean:  # calibration disabled: raw markers
            z = dict(feats)
        drives = self._drives(z, log_bands, feats)
        raw = [math.tanh(d) if math.isfinite(d) else h
               for d, h in zip(drives, (prev.valence, prev.arousal), strict=True)]
        smooth = list(raw)
        for k, d in enumerate(drives):  # a missing drive holds its axis and its average
            if math.isfinite(d):
                smooth[k] = math.tanh(self._smooth(k, d, t_sec))
        confidence = float(np.clip(qual["good_fraction"] * (1.0 - qual["excluded"])
                                   * (1.0 if math.isfinite(drives[0]) else 0.5)
                                   * base.confidence, 0, 1))
        self._state = EmotionState(float(np.clip(smooth[0], -1, 1)),
                                   float(np.clip(smooth[1], -1, 1)), confidence, t_sec)
        raw_state = EmotionState(float(np.clip(raw[0], -1, 1)), float(np.clip(raw[1], -1, 1)),
                                 confidence, t_sec)
        return Estimate(self._state, feats, qual, False, z, raw_state)

    def _drives(self, z: dict[str, float], log_bands: np.ndarray,
                feats: dict[str, float] | None = None) -> tuple[float, float]:
        """``gain · z(faa)`` and ``gain · Σ w z / Σ |w|`` (NaN where nothing is present);
        with a supervised map, ``gain`` times its score less its rest mean."""
        gain = self.config.gain
        z_faa = z.get("eeg/faa", math.nan)
        drive_v = gain * z_faa if math.isfinite(z_faa) else math.nan
        if self._supervised is not None:
            return drive_v, gain * self._supervised.drive(log_bands, feats)
        num = den = 0.0
        for key, w in self.arousal_weights().items():
            v = z.get(key, math.nan)
            if math.isfinite(v) and w != 0:
                num += w * v
                den += abs(w)
        return drive_v, gain * num / den if den > 0 else math.nan

    def _smooth(self, k: int, drive: float, t_sec: float) -> float:
        """Exponential moving average of drive ``k`` (0 valence, 1 arousal); O(1)."""
        cfg = self.config
        tau = cfg.smoothing_sec
        if k == 1 and cfg.arousal_smoothing_sec is not None:
            tau = cfg.arousal_smoothing_sec
        last = self._ema[k]
        if tau <= 0 or last is None:
            value = drive
        else:
            a = math.exp(-max(t_sec - last[1], 0.0) / tau)
            value = a * last[0] + (1 - a) * drive
        self._ema[k] = (value, t_sec)
        return value

    @property
    def state(self) -> EmotionState:
        """The latest state (held through bad windows)."""
        return self._state

    def close(self) -> None:
        """Release BrainFlow's reference models."""
        if self._reference is not None:
            self._reference.close()
            self._reference = None

    def __enter__(self) -> StateEstimator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
