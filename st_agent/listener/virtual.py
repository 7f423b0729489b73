"""A simulated listener as a biometric source: raw EEG, ECG or PPG, and EMG.

:class:`VirtualListenerSource` holds a latent state (:mod:`st_agent.listener.family`)
that the music it hears (:meth:`VirtualListenerSource.hear`) drives, and
synthesises, chunk by chunk, what a headset would record from such a person.
The real :class:`~st_agent.biometrics.estimator.StateEstimator` runs on these chunks
unchanged, so it has to recover the state from the signals.

Signal model (constants in :class:`SignalModel`; amplitudes are RMS in µV,
converted to volts once, in the chunk)
------------------------------------------------------------------------------
- **Background**: 1/f ("pink") noise per channel (aperiodic component;
  He 2014; Donoghue et al. 2020), from Kellet's 3-pole IIR filter.
- **Alpha** (individual peak 9-11.5 Hz): band-limited noise, mostly common to
  all channels (volume conduction), largest over O1/O2/Pz. Its amplitude is
  ``alpha_uv * exp(-alpha_arousal * arousal)``: alpha rises with relaxation
  and falls with arousal (Klimesch 1999; Barry et al. 2007).
- **Frontal asymmetry**: alpha at right frontal sites (Fp2, F4, F8) scaled by
  ``exp(+faa_valence * valence)``, at left sites (Fp1, F3, F7) by
  ``exp(-faa_valence * valence)``: relatively less left-frontal alpha (more
  left activity) with approach/positive valence (Davidson 1992; Coan & Allen
  2004; Schmidt & Trainor 2001).
- **Beta** (13-30 Hz): independent per channel, ``beta_uv *
  exp(beta_arousal * arousal)`` (Pope, Bogart & Bartolome 1995).
- **Theta** (4-8 Hz): frontal-midline, ``theta_uv * exp(theta_valence *
  valence)`` (pleasant music raises frontal midline theta; Sammler et al. 2007).
- **Blinks**: Poisson, ``blink_rate_per_min`` (17/min: the mean at rest
  in Bentivoglio et al. 1997, who report ~4.5/min while reading and ~26/min
  in conversation), 300 ms, ``blink_uv`` at Fp1/Fp2 falling off backwards; large enough that
  the estimator's blink gate rejects the windows they touch.
- **Line noise**: ``line_uv`` at ``line_freq`` (50 Hz) on every EEG channel.
- **Heart**: rate ``hr_rest_bpm + hr_arousal_bpm * arousal`` (per-listener
  resting rate drawn around ``hr_rest_bpm``) with respiratory sinus
  arrhythmia at the listener's breathing rate (the ``entrainment`` family's
  breathing state; other families breathe faster with arousal); ECG (QRS
  and T waves, volts) or PPG (systolic and dicrotic waves, arbitrary units).
- **EMG**: 20-110 Hz noise whose RMS is ``emg_rest_uv * (1 + emg_tension *
  tension)``, ``tension = clip(0.5 + 0.4 arousal - 0.2 valence, 0, 1)``.
- **Respiration** (``respiration=True``): a ``RESP`` belt channel (arbitrary
  units), a sine at the breathing rate.

Any member of the listener-model family (:mod:`st_agent.listener.family`)
can be rendered: the latent state is advanced by that family's kernel
(:class:`~st_agent.listener.fast.FastListeners` of one listener, full noise
and drift), so the full-fidelity loop sees exactly the dynamics the fast
mode simulates.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import signal

from st_agent.biometrics.sources import BiometricSource
from st_agent.listener.family import AnyListenerParams, family_of
from st_agent.listener.fast import EstimatorNoise, FastListeners
from st_agent.listener.features import feature_vector
from st_agent.listener.first_order import ListenerState
from st_agent.types import MusicFeatures, SignalChunk

__all__ = ["MONTAGE", "SignalModel", "VirtualListenerSource"]

logger = logging.getLogger(__name__)

#: Default 10-20 montage of the virtual headset.
MONTAGE = ("Fp1", "Fp2", "F3", "F4", "Fz", "C3", "C4", "Pz", "O1", "O2")

_RIGHT_FRONTAL = frozenset({"FP2", "F4", "F8", "AF4", "AF8"})
_LEFT_FRONTAL = frozenset({"FP1", "F3", "F7", "AF3", "AF7"})

# Kellet's pink-noise filter (1/f within about 3 decades below Nyquist).
_PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
_PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])


@dataclass(frozen=True)
class SignalModel:
    """How the latent state shows in the signals (module docstring).

    Amplitudes are RMS in µV at the strongest site, at arousal = valence = 0.
    """

    sfreq: float = 250.0
    """Sampling rate, Hz."""
    montage: tuple[str, ...] = MONTAGE
    """EEG channel names (10-20); frontal asymmetry needs F3/F4 (or Fp1/Fp2...)."""
    background_uv: float = 6.0
    """RMS of the 1/f background per channel."""
    alpha_uv: float = 10.0
    """Alpha RMS at occipital sites."""
    beta_uv: float = 2.5
    """Beta RMS."""
    theta_uv: float = 3.0
    """Frontal-midline theta RMS."""
    alpha_arousal: float = 0.7
    """ln alpha amplitude lost per unit of arousal. The direction is from Klimesch 1999
    and Barry et al. 2007; the size is an assumption (about half the alpha amplitude
    between the calm and the neutral state)."""
    beta_arousal: float = 0.6
    """ln beta amplitude gained per unit of arousal."""
    faa_valence: float = 0.35
    """ln alpha amplitude, right minus left frontal, is 2 x this per unit valence."""
    theta_valence: float = 0.2
    """ln theta amplitude per unit valence."""
    alpha_shared: float = 0.5
    """Share of alpha variance common to all channels; of the rest, frontal sites
    with a left/right partner (Fp1/Fp2, F3/F4...) share 80% with each other."""
    blink_rate_per_min: float = 17.0
    """Mean blinks per minute (0 for none); 17/min at rest (Bentivoglio et al. 1997)."""
    blink_uv: float = 250.0
    """Blink peak at Fp1/Fp2."""
    line_freq: float = 50.0
    """Mains frequency, Hz."""
    line_uv: float = 2.0
    """Line-noise amplitude."""
    cardiac: Literal["ecg", "ppg"] = "ecg"
    """Which heart channel to synthesise."""
    hr_rest_bpm: float = 68.0
    """Population mean resting heart rate (each listener draws ±6 bpm around it)."""
    hr_arousal_bpm: float = 12.0
    """Heart-rate change per unit of arousal, bpm. An assumption: no paper gives bpm per
    unit of this arousal scale; listening studies report a few bpm between conditions
    (music vs silence, or a 30-45 % slower tempo; van Dyck et al. 2017, Musicae
    Scientiae, abstract), so this listener's heart answers more
    strongly than most people's."""
    hr_noise_bpm: float = 1.5
    """Stationary std of slow heart-rate fluctuations (5 s time constant) beside the
    0.1 Hz Mayer wave (1.5 bpm) and respiratory sinus arrhythmia (2 bpm)."""
    emg_rest_uv: float = 4.0
    """EMG RMS at zero tension."""
    emg_tension: float = 3.0
    """EMG RMS grows by this factor per unit tension."""
    chunk_sec: float = 0.25
    """Length of each chunk :meth:`VirtualListenerSource.read` returns."""
    respiration: bool = False
    """Add a ``RESP`` (respiration belt) channel after the EMG."""

    def __post_init__(self) -> None:
        for name in ("sfreq", "background_uv", "alpha_uv", "beta_uv", "theta_uv",
                     "blink_uv", "line_freq", "hr_rest_bpm", "emg_rest_uv", "chunk_sec"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        for name in ("alpha_arousal", "beta_arousal", "faa_valence", "theta_valence",
                     "blink_rate_per_min", "line_uv", "hr_arousal_bpm", "hr_noise_bpm",
                     "emg_tension"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        if not 0 <= self.alpha_shared <= 1:
            raise ValueError(f"alpha_shared must be in [0, 1], got {self.alpha_shared!r}")
        if self.sfreq < 100:
            raise ValueError(f"sfreq must be >= 100 Hz (beta and EMG need it), got {self.sfreq}")
        if self.cardiac not in ("ecg", "ppg"):
            raise ValueError(f"cardiac must be 'ecg' or 'ppg', got {self.cardiac!r}")
        if len(self.montage) < 2 or len(set(self.montage)) != len(self.montage):
            raise ValueError(f"montage needs >= 2 distinct channel names, got {self.montage}")


def _topography(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                  np.ndarray, np.ndarray]:
    """Per-channel gains (alpha, beta, theta, blink) and asymmetry sign (+1 right, -1 left)."""
    from st_agent.biometrics.estimator import normalize_ch_name

    alpha, beta, theta, blink, side = [], [], [], [], []
    for name in names:
        lab = normalize_ch_name(name) or name.upper()
        row = lab.rstrip("0123456789Z")
        alpha.append({"FP": 0.5, "AF": 0.6, "F": 0.7, "FC": 0.7, "C": 0.7, "CP": 0.8,
                      "T": 0.5, "P": 0.9, "PO": 1.0, "O": 1.0}.get(row, 0.6))
        beta.append(1.0 if row in ("F", "FC", "C", "AF") else 0.8)
        theta.append(1.0 if lab == "FZ" else (0.8 if row in ("F", "AF", "FC") else 0.5))
        blink.append({"FP": 1.0, "AF": 0.7, "F": 0.45, "FC": 0.25, "C": 0.1}.get(row, 0.03))
        side.append(1.0 if lab in _RIGHT_FRONTAL else (-1.0 if lab in _LEFT_FRONTAL else 0.0))
    return tuple(np.asarray(v) for v in (alpha, beta, theta, blink, side))


class _Filter:
    """A stateful IIR filter on (n_sources, n) white noise, scaled to unit variance."""

    def __init__(self, sos: np.ndarray, n_src: int) -> None:
        self.sos = sos
        imp = signal.sosfilt(sos, np.r_[1.0, np.zeros(20_000)])
        self.scale = 1.0 / math.sqrt(float(np.sum(imp ** 2)))
        self.zi = np.zeros((sos.shape[0], n_src, 2))

    def __call__(self, white: np.ndarray) -> np.ndarray:
        y, self.zi = signal.sosfilt(self.sos, white, axis=-1, zi=self.zi)
        return y * self.scale


class VirtualListenerSource(BiometricSource):
    """A simulated listener that streams raw EEG, ECG/PPG and EMG (volts).

    Parameters
    ----------
    params : listener parameters of any family
        The listener (e.g. from :func:`~st_agent.listener.family.sample_population`).
    model : SignalModel, optional
        Montage, amplitudes and how the state shows in the signals.
    rng : numpy.random.Generator or int or None
        Every random draw (latent noise, signals, blinks) comes from it; the
        same seed gives the same stream.
    realtime : bool
        Deliver chunks no faster than the wall clock; by default :meth:`read`
        returns the next chunk at once (simulated clock).
    hearing : {"midi", "audio"}
        What the listener responds to: the MIDI features, or loudness and
        density as heard in the rendered audio when :meth:`hear` is given it
        (:func:`st_agent.listener.features.heard_features`).

    Examples
    --------
    >>> from st_agent.listener.first_order import ListenerParams
    >>> with VirtualListenerSource(ListenerParams(), rng=0) as src:
    ...     chunk = src.read()
    >>> chunk.sfreq, chunk.ch_names[:3]
    (250.0, ('Fp1', 'Fp2', 'F3'))
    """

    def __init__(self, params: AnyListenerParams, model: SignalModel | None = None,
                 rng: np.random.Generator | int | None = None, realtime: bool = False,
                 hearing: str = "midi") -> None:
        super().__init__()
        from st_agent.listener.features import HEARING

        if hearing not in HEARING:
            raise ValueError(f"hearing must be one of {HEARING}, got {hearing!r}")
        self.hearing = hearing
        self.family = family_of(params)  # TypeError for anything else
        self.params = params
        self.model = model or SignalModel()
        self.realtime = bool(realtime)
        self.rng = np.random.default_rng(rng)
        m = self.model
        self._sfreq = float(m.sfreq)
        # EEG montage, then ECG or PPG, then EMG
        resp = ("RESP",) if m.respiration else ()
        self._ch_names = (*m.montage, "ECG" if m.cardiac == "ecg" else "PPG", "EMG", *resp)
        self._ch_types = ("eeg",) * len(m.montage) + (m.cardiac, "emg") + \
            (("resp",) if m.respiration else ())
        self._n_eeg = len(m.montage)
        (self._g_alpha, self._g_beta, self._g_theta, self._g_blink,
         self._side) = _topography(m.montage)
        self._frontal = np.where(self._side != 0, 0.8, 0.0)
        # per-listener signal traits
        self.alpha_peak_hz = float(self.rng.uniform(9.0, 11.5))
        self.hr_rest_bpm = float(m.hr_rest_bpm + self.rng.uniform(-6.0, 6.0))
        self._line_phase = self.rng.uniform(0, 2 * np.pi, self._n_eeg)
        # the latent dynamics: this family's kernel, noise and drift from our generator
        self.sim = FastListeners([params], rng=self.rng, noise=EstimatorNoise())
        self._queue: deque[tuple[MusicFeatures | None, float]] = deque()
        self._x_of: tuple[MusicFeatures | None, np.ndarray] = (None, feature_vector(None))
        self._reset_signal_state()

    # -- BiometricSource interface
    def start(self) -> None:
        """Begin streaming (the simulated clock starts at 0)."""
        self._running = True
        self._wall0 = time.monotonic() - self._next_sample / self.sfreq

    def stop(self) -> None:
        """Stop streaming; safe to call twice."""
        self._running = False

    def read(self, timeout_sec: float = 1.0) -> SignalChunk | None:
        """Synthesise the next ``model.chunk_sec`` of signals.

        Returns at once on the simulated clock; with ``realtime=True`` waits
        (up to ``timeout_sec``) until the wall clock reaches the chunk's end.

        Returns
        -------
        chunk : SignalChunk or None
            Shape (n_eeg + 2, round(chunk_sec * sfreq)); ``None`` only when
            ``realtime`` and the chunk is not due within ``timeout_sec``, or
            the source is stopped.
        """
        if not self._running:
            return None
        n = max(1, round(self.model.chunk_sec * self.sfreq))
        if self.realtime:
            due = self._wall0 + (self._next_sample + n) / self.sfreq
            wait = due - time.monotonic()
            if wait > timeout_sec:
                time.sleep(max(0.0, timeout_sec))
                return None
            if wait > 0:
                time.sleep(wait)
        t0 = self._next_sample / self.sfreq
        data = self._synthesise(n)
        return self._chunk(data, t0)

    def read_block(self, seconds: float) -> SignalChunk | None:
        """The next whole chunks covering ``seconds`` of signals, synthesised in one call.

        Equals the chunks :meth:`read` would return one by one, concatenated (to
        float rounding; the same random draws in the same order), at a fraction of
        the cost: the filters run once over the block. Simulated clock only.

        Parameters
        ----------
        seconds : float
            At least this much signal (rounded up to whole ``model.chunk_sec`` chunks).

        Returns
        -------
        chunk : SignalChunk or None
            Shape (n_channels, k * round(chunk_sec * sfreq)); None when stopped.

        Raises
        ------
        ValueError
            For ``seconds`` that is not a positive number, or a ``realtime`` source.
        """
        if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"seconds must be a positive number, got {seconds!r}")
        if self.realtime:
            raise ValueError("read_block needs the simulated clock (realtime=False); "
                             "use read()")
        if not self._running:
            return None
        n = max(1, round(self.model.chunk_sec * self.sfreq))
        k = max(1, math.ceil((seconds - 1e-9) * self.sfreq / n))
        t0 = self._next_sample / self.sfreq
        return self._chunk(self._synthesise_block([n] * k), t0)

    # -- music
    def hear(self, features: MusicFeatures | None, duration_sec: float | None = None,
             audio: object = None) -> None:
        """Queue what plays next: ``features`` for ``duration_sec`` seconds.

        Parameters
        ----------
        features : MusicFeatures or None
            The measured features of the phrase (``None``: silence).
        duration_sec : float, optional
            How long it plays; default ``features.duration_sec``. After the
            queue runs out the listener hears silence.
        audio : AudioFeatures, optional
            Measured from the phrase's rendered audio; with ``hearing="audio"``
            its loudness and onset rate replace the MIDI's (ignored otherwise).
        """
        if features is not None and not isinstance(features, MusicFeatures):
            raise TypeError(f"features must be MusicFeatures or None, got "
                            f"{type(features).__name__}")
        if duration_sec is None:
            if features is None:
                raise ValueError("silence needs a duration_sec")
            duration_sec = features.duration_sec
        if not (isinstance(duration_sec, int | float) and math.isfinite(duration_sec)
                and duration_sec > 0):
            raise ValueError(f"duration_sec must be a positive number of seconds, got "
                             f"{duration_sec!r}")
        if self.hearing == "audio" and audio is not None:  # what is heard
            from st_agent.listener.features import heard_features

            features = heard_features(features, audio)
        self._queue.append((features, float(duration_sec)))

    def clear(self) -> None:
        """Stop the music now (drop the queue)."""
        self._queue.clear()

    @property
    def playing(self) -> MusicFeatures | None:
        """The features playing now (``None`` in silence)."""
        return self._queue[0][0] if self._queue else None

    @property
    def latent(self) -> tuple[float, float]:
        """Current latent ``(valence, arousal)`` (any family)."""
        v, a = self.sim.state[0]
        return float(v), float(a)

    @property
    def breathing_per_min(self) -> float:
        """Current breathing rate, breaths per minute."""
        return float(self.sim.breathing_per_min[0])

    @property
    def state(self) -> ListenerState:
        """The latent state as a :class:`ListenerState` snapshot (any family).

        For a first-order listener every field is its state; for the other
        families ``familiar`` is zeros (they keep no such memory) and the
        full state is in :attr:`sim` (:meth:`FastListeners.listener_state`).
        """
        return self.sim.listener_state(0)

    @property
    def tension(self) -> float:
        """Muscle tension in [0, 1] that drives the EMG."""
        v, a = self.latent
        return float(np.clip(0.5 + 0.4 * a - 0.2 * v, 0, 1))

    # -- internals
    def _advance(self, dt: float) -> None:
        """Step the latent state by ``dt`` seconds through the play queue."""
        while dt > 1e-12:
            if self._queue:
                feats, left = self._queue[0]
                d = min(dt, left)
                if self._x_of[0] is not feats:  # one feature vector per phrase, not per chunk
                    self._x_of = (feats, feature_vector(feats))
                self.sim.advance(self._x_of[1], d)
                if left - d <= 1e-12:
                    self._queue.popleft()
                else:
                    self._queue[0] = (feats, left - d)
            else:
                d = dt
                self.sim.advance(np.zeros(6), d)
            dt -= d

    def _reset_signal_state(self) -> None:
        m, c, fs = self.model, self._n_eeg, self.model.sfreq
        pk = self.alpha_peak_hz
        self._f_alpha = _Filter(signal.butter(2, [pk - 2.0, pk + 2.0], "bandpass", fs=fs,
                                              output="sos"), c + 2)
        self._f_beta = _Filter(signal.butter(2, [14.0, 28.0], "bandpass", fs=fs,
                                             output="sos"), c)
        self._f_theta = _Filter(signal.butter(2, [4.5, 7.5], "bandpass", fs=fs,
                                              output="sos"), c + 1)
        self._f_emg = _Filter(signal.butter(4, [20.0, min(110.0, 0.45 * fs)], "bandpass",
                                            fs=fs, output="sos"), 1)
        imp = signal.lfilter(_PINK_B, _PINK_A, np.r_[1.0, np.zeros(20_000)])
        self._pink_scale = 1.0 / math.sqrt(float(np.sum(imp ** 2)))
        self._pink_zi = np.zeros((c, 3))
        self._hr_ou = 0.0
        self._mayer_phase = float(self.rng.uniform(0, 2 * np.pi))
        self._gains = self._state_gains()
        self._heart_phase = float(self.rng.uniform(0, 1))
        self._breath_phase = 0.0
        self._next_blink = self._draw_blink_gap()
        self._blinks: list[tuple[int, float]] = []  # (start sample, µV) of blinks in progress
        self._blink_len = round(0.3 * fs)
        w = np.hanning(self._blink_len)
        self._blink_shape = w * (1 + 0.3 * np.linspace(1, -1, w.size))  # slightly skewed
        del m

    def _draw_blink_gap(self) -> float:
        rate = self.model.blink_rate_per_min / 60.0
        return math.inf if rate <= 0 else float(self.rng.exponential(1 / rate))

    def _state_gains(self) -> np.ndarray:
        """Amplitudes (alpha, beta, theta, hr, emg, asym), breathing, for the latent state."""
        m, (v, a) = self.model, self.latent
        return np.array([
            m.alpha_uv * math.exp(-m.alpha_arousal * a),
            m.beta_uv * math.exp(m.beta_arousal * a),
            m.theta_uv * math.exp(m.theta_valence * v),
            self.hr_rest_bpm + m.hr_arousal_bpm * a + self._hr_ou,
            m.emg_rest_uv * (1 + m.emg_tension * self.tension),
            m.faa_valence * v,
            self.breathing_per_min / 60.0,
        ])

    def _synthesise(self, n: int) -> np.ndarray:
        return self._synthesise_block([n])

    def _draw_chunk(self, n: int, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The per-chunk part of a synthesis: latent step, random draws, blinks.

        Returns the gains ramped over the chunk (7, n), the white noise (4c + 5, n)
        and the blink wave (c, n) of the ``n`` samples from absolute sample ``start``;
        the generator is drawn in the same order as one chunk at a time.
        """
        m, rng, fs = self.model, self.rng, self.model.sfreq
        g0 = self._gains
        self._advance(n / fs)
        rho = math.exp(-n / fs / 5.0)
        self._hr_ou = (rho * self._hr_ou
                       + m.hr_noise_bpm * math.sqrt(1 - rho ** 2) * float(rng.standard_normal()))
        g1 = self._state_gains()
        self._gains = g1
        ramp = (np.arange(1, n + 1) / n)[None, :]
        g = g0[:, None] + (g1 - g0)[:, None] * ramp  # (7, n): smooth within the chunk
        white = rng.standard_normal((4 * self._n_eeg + 5, n))
        return g, white, self._blink_wave(n, start)

    def _synthesise_block(self, sizes: list[int]) -> np.ndarray:
        """Signals of consecutive chunks of ``sizes`` samples, shape (n_channels, sum(sizes)).

        The latent state, the gains and every random draw advance chunk by chunk
        (so a block equals its chunks read one at a time, to float rounding:
        ``tests/test_streaming_filters.py``); the filters (stateful, ``sosfilt``
        with carried ``zi``), the heart and the mixing run once over the block.
        """
        m, c, fs = self.model, self._n_eeg, self.model.sfreq
        start = self._next_sample
        parts, pos = [], start
        for n in sizes:
            parts.append(self._draw_chunk(n, pos))
            pos += n
        g, white, blinks = (np.concatenate(x, axis=1) for x in zip(*parts, strict=True))
        n = white.shape[1]
        alpha_amp, beta_amp, theta_amp, hr, emg_amp, asym, breath_hz = g
        bg, al_w, be_w = white[:c], white[c:2 * c + 2], white[2 * c + 2:3 * c + 2]
        th_w, heart_w, emg_w = white[3 * c + 2:4 * c + 3], white[4 * c + 3], white[4 * c + 4:]
        pink, self._pink_zi = signal.lfilter(_PINK_B, _PINK_A, bg, axis=-1, zi=self._pink_zi)
        eeg = m.background_uv * self._pink_scale * pink
        al = self._f_alpha(al_w)  # (c + 2, n): global source, frontal source, one per channel
        fr = self._frontal[:, None]  # frontal sites share a second source (left-right pairs)
        local = np.sqrt(fr) * al[1:2] + np.sqrt(1 - fr) * al[2:]
        sh = m.alpha_shared
        alpha = math.sqrt(sh) * al[:1] + math.sqrt(1 - sh) * local
        asym_gain = np.exp(self._side[:, None] * asym[None, :])  # (c, n)
        eeg += alpha_amp * self._g_alpha[:, None] * asym_gain * alpha
        eeg += beta_amp * self._g_beta[:, None] * self._f_beta(be_w)
        th = self._f_theta(th_w)
        eeg += theta_amp * self._g_theta[:, None] * (math.sqrt(0.5) * th[:1]
                                                      + math.sqrt(0.5) * th[1:])
        t = (start + np.arange(n)) / fs
        eeg += m.line_uv * np.sin(2 * np.pi * m.line_freq * t[None, :] + self._line_phase[:, None])
        eeg += blinks

        # breathing phase (integrated rate), then the heart with sinus arrhythmia on it
        bphase = self._breath_phase + np.cumsum(breath_hz) / fs
        self._breath_phase = float(bphase[-1] % 1.0)
        heart = self._heart(hr, t, bphase, heart_w)
        emg = emg_amp * self._f_emg(emg_w)[0]
        rows = [eeg * 1e-6, heart[None, :], emg[None, :] * 1e-6]
        if m.respiration:  # belt: a sine at the breathing rate, a little noise
            rows.append((np.sin(2 * np.pi * bphase) + 0.05 * heart_w)[None, :])
        return np.vstack(rows)

    def _heart(self, hr: np.ndarray, t: np.ndarray, breath_phase: np.ndarray,
               white: np.ndarray) -> np.ndarray:
        """ECG (volts) or PPG (a.u.) at rate ``hr`` (bpm, shape (n,)), with RSA and Mayer waves."""
        fs = self.model.sfreq
        # integrate the instantaneous rate (respiratory sinus arrhythmia: +-2 bpm with breathing)
        rate_hz = (hr + 2.0 * np.sin(2 * np.pi * breath_phase)
                   + 1.5 * np.sin(2 * np.pi * 0.1 * t + self._mayer_phase)) / 60.0
        phase = self._heart_phase + np.cumsum(rate_hz) / fs
        self._heart_phase = float(phase[-1] % 1.0)
        tau = (phase % 1.0) / rate_hz  # seconds since the last beat
        if self.model.cardiac == "ecg":
            heart = 1e-3 * (np.exp(-0.5 * ((tau - 0.05) / 0.010) ** 2)
                            - 0.15 * np.exp(-0.5 * ((tau - 0.07) / 0.008) ** 2)
                            + 0.25 * np.exp(-0.5 * ((tau - 0.30) / 0.040) ** 2))
            return heart + 2e-5 * white
        heart = (np.exp(-0.5 * ((tau - 0.15) / 0.06) ** 2)
                 + 0.4 * np.exp(-0.5 * ((tau - 0.40) / 0.08) ** 2))
        return heart + 0.02 * white

    def _blink_wave(self, n: int, start: int) -> np.ndarray:
        """Blink artefacts of the ``n`` samples from absolute sample ``start``, µV, (n_eeg, n)."""
        fs = self.model.sfreq
        out = np.zeros((self._n_eeg, n))
        while self._next_blink * fs < start + n:
            amp = self.model.blink_uv * float(self.rng.uniform(0.8, 1.2))
            self._blinks.append((round(self._next_blink * fs), amp))
            self._next_blink += self._draw_blink_gap()
        keep = []
        for b, amp in self._blinks:
            lo, hi = max(b, start), min(b + self._blink_len, start + n)
            if hi > lo:
                out[:, lo - start:hi - start] += (amp * self._g_blink[:, None]
                                                  * self._blink_shape[None, lo - b:hi - b])
            if b + self._blink_len > start + n:
                keep.append((b, amp))
        self._blinks = keep
        return out
