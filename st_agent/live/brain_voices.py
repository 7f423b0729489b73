"""``st-agent brain-voices``: the regions of an EEG recording as the voices of one piece.

1. **Regions** (:func:`st_agent.biometrics.regions.group_channels`): the EEG
   channels are grouped by their 10-20/10-10 names into lobes (optionally split
   into hemispheres). A recording without such names is refused with a message
   that says how to rename its channels.
2. **Activity** (:func:`region_activity`): the recording is cut into one window
   per phrase (real time: each window as long as the phrase; or ``phrases``
   equal windows). In each window the power of every channel in the band
   (Welch, 2 s Hann segments with 50 % overlap) is averaged over the region's
   channels on a log10 scale. Relative to the recording's own baseline -- the
   median over the first ``baseline_sec`` seconds, or over the whole recording
   -- and divided by the baseline's robust spread (1.4826 x MAD over the
   windows), it is a z-like score, clipped to [-3, 3].
3. **Voices** (:func:`voice_proposals`): at most ``max_voices`` regions play
   (the ones whose activity varies most, IQR over the windows); a region's
   activity sets its voice's energy (``0.5 + 0.2 z``, clipped to [0.05, 0.95]:
   busier and louder above baseline; the gain is an assumption, unsourced); its
   valence is fixed per lobe so that the voices sit in different registers
   (all in the major family, so the negotiated mode never flips); the tempo is
   shared.
4. **Harmony** (:func:`choose_voices`): each step composes ``candidates``
   phrases per voice (seeds) and plays the combination with the fewest
   dissonant simultaneities -- the jam's clash measure
   (:func:`st_agent.music.ensemble.count_clashes`), counting every
   combination (up to 4096 of them; coordinate descent beyond). The first candidate of every voice
   (what :class:`~st_agent.music.ensemble.Ensemble` would play) is the
   *independent voices* baseline, measured in the same step with the same
   context.

Figures (``summary.json``): clashes per bar played vs independent (paired
per phrase, bootstrap 95 % CI of the difference), and per voice the Spearman
correlation between its region's activity and its measured density (melody
notes per beat) and loudness (mean velocity).

Writes ``piece.wav``, ``piece.mid``, ``score.abc`` (one multi-voice tune per
phrase), ``regions.png``, ``phrases.json`` and ``summary.json``.
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

from st_agent.biometrics.regions import Region, group_channels
from st_agent.music.piece_config import BrainVoicesConfig, band_hz, out_dir

__all__ = ["BrainVoicesConfig", "BrainVoicesResult", "baseline_stats", "brain_voices",
           "choose_voices", "load_eeg", "region_activity", "relative_activity",
           "voice_proposals", "window_log_power"]

logger = logging.getLogger(__name__)

#: Valence of each lobe's voice: register spread, all in the major family
#: (assumption, unsourced: front-to-back from low to high).
LOBE_VALENCE = {"frontal": 0.55, "central": 0.62, "temporal": 0.68, "parietal": 0.8,
                "occipital": 0.9}
_WELCH_SEC = 2.0
_Z_CLIP = 3.0


def load_eeg(path: Path, window: tuple[float, float] | None = None
             ) -> tuple[np.ndarray, float, tuple[str, ...], tuple[str, ...]]:
    """Read a recording with :class:`~st_agent.biometrics.sources.FileSource`.

    Returns
    -------
    data : ndarray, shape (n_channels, n_times)
        Volts.
    sfreq : float
        Hz.
    ch_names, ch_types : tuple of str
    """
    from st_agent.biometrics.sources import FileSource

    src = FileSource(path, chunk_sec=60.0)
    with src:
        chunks = [c.data for c in src.iter_chunks()]
    data = np.concatenate(chunks, axis=1)
    sfreq = float(src.sfreq)
    if window is not None:
        a, b = (round(x * sfreq) for x in window)
        if a >= data.shape[1]:
            raise ValueError(f"--window starts at {window[0]} s but {path.name} lasts only "
                             f"{data.shape[1] / sfreq:.1f} s")
        data = data[:, a:b]
    return data, sfreq, tuple(src.ch_names), tuple(src.ch_types)


def window_log_power(data: np.ndarray, sfreq: float, regions: list[Region],
                     edges_sec: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """Mean log10 band power of each region's channels in each window.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_times)
        Volts.
    sfreq : float
        Hz.
    regions : list of Region (R)
    edges_sec : ndarray, shape (W + 1,)
        Window edges, seconds from the start of ``data``.
    band : (float, float)
        Hz.

    Returns
    -------
    log_power : ndarray, shape (W, R)
        log10 of V²/Hz (Welch, 2 s Hann segments, 50 % overlap).

    Raises
    ------
    ValueError
        When a window is shorter than 0.5 s or the band is above Nyquist.
    """
    from scipy.signal import welch

    lo, hi = band
    if hi >= sfreq / 2:
        raise ValueError(f"band {band} Hz reaches the Nyquist frequency of {sfreq:g} Hz "
                         f"sampling ({sfreq / 2:g} Hz); choose a lower band")
    idx = np.round(np.asarray(edges_sec) * sfreq).astype(int)
    if np.any(np.diff(idx) < round(0.5 * sfreq)):
        raise ValueError("each phrase window must cover at least 0.5 s of the recording; "
                         "use fewer --phrases or a longer --window")
    chans = sorted({c for r in regions for c in r.channels})
    logp = np.empty((len(idx) - 1, len(regions)))
    for w in range(len(idx) - 1):
        seg = data[chans, idx[w]:idx[w + 1]]
        seg = seg - seg.mean(axis=1, keepdims=True)
        nper = min(seg.shape[1], round(_WELCH_SEC * sfreq))
        f, pxx = welch(seg, fs=sfreq, nperseg=nper, axis=1)
        sel = (f >= lo) & (f < hi)
        if not sel.any():
            raise ValueError(f"band {band} Hz holds no frequency bin at a window of "
                             f"{nper / sfreq:.2f} s; widen the band or lengthen the windows")
        power = np.log10(np.maximum(pxx[:, sel].mean(axis=1), 1e-30))  # (C,)
        by_chan = dict(zip(chans, power, strict=True))
        for r, reg in enumerate(regions):
            logp[w, r] = np.mean([by_chan[c] for c in reg.channels])
    return logp


def baseline_stats(logp_base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust spread (1.4826 x MAD; the SD where the MAD is 0) per region.

    Parameters
    ----------
    logp_base : ndarray, shape (W_b, R)
        Log band power of the baseline windows, W_b >= 2.

    Returns
    -------
    median, spread : ndarray, shape (R,)
    """
    med = np.median(logp_base, axis=0)
    mad = 1.4826 * np.median(np.abs(logp_base - med), axis=0)
    spread = np.where(mad > 1e-9, mad, np.maximum(logp_base.std(axis=0), 1e-9))
    return med, spread


def relative_activity(logp: np.ndarray, median: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """``(logp - median) / spread`` clipped to [-3, 3]; shapes broadcast per region."""
    return np.clip((logp - median) / spread, -_Z_CLIP, _Z_CLIP)


def region_activity(data: np.ndarray, sfreq: float, regions: list[Region], edges_sec: np.ndarray,
                    band: tuple[float, float], baseline_sec: float = 0.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Band-power activity of each region in each window, relative to its baseline.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_times)
        Volts.
    sfreq : float
        Hz.
    regions : list of Region (R)
    edges_sec : ndarray, shape (W + 1,)
        Window edges, seconds from the start of ``data``.
    band : (float, float)
        Hz.
    baseline_sec : float
        Baseline = windows that end within the first ``baseline_sec`` seconds;
        0 = all windows.

    Returns
    -------
    z : ndarray, shape (W, R)
        Activity relative to the baseline, in robust standard deviations, clipped
        to [-3, 3].
    log_power : ndarray, shape (W, R)
        Mean log10 band power of the region's channels (V²/Hz).

    Raises
    ------
    ValueError
        When a window is shorter than 0.5 s, the band is above Nyquist, or the
        baseline holds fewer than two windows.
    """
    logp = window_log_power(data, sfreq, regions, edges_sec, band)
    ends = np.asarray(edges_sec)[1:]
    base = ends <= baseline_sec + 1e-9 if baseline_sec > 0 else np.ones(len(ends), bool)
    if base.sum() < 2:
        raise ValueError(f"the baseline ({baseline_sec:g} s) holds {int(base.sum())} phrase "
                         "window(s); it needs at least 2: raise --baseline-sec or use more "
                         "--phrases")
    med, spread = baseline_stats(logp[base])
    return relative_activity(logp, med, spread), logp


def voice_proposals(z: np.ndarray, regions: list[Region], tempo: float) -> np.ndarray:
    """Knobs (valence, tempo, energy) of each region's voice in each window.

    Parameters
    ----------
    z : ndarray, shape (W, R)
        Region activity (:func:`region_activity`).
    regions : list of Region (R)
    tempo : float
        Shared tempo knob.

    Returns
    -------
    knobs : ndarray, shape (W, R, 3)
    """
    w, r = z.shape
    out = np.empty((w, r, 3))
    out[..., 0] = [LOBE_VALENCE[reg.lobe] for reg in regions]
    out[..., 1] = tempo
    out[..., 2] = np.clip(0.5 + 0.2 * z, 0.05, 0.95)
    return out


def _masks(phrase: Any, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    from st_agent.music.abc import abc_to_midi
    from st_agent.music.ensemble import voice_masks

    pm = abc_to_midi(phrase.abc)
    inst = [i for i in pm.instruments if not i.is_drum and i.notes][:1]
    s, o = voice_masks(pm, inst, n_steps)
    return s[0], o[0]


def choose_voices(masks: list[list[tuple[np.ndarray, np.ndarray]]], max_exhaustive: int = 4096,
                  passes: int = 3) -> tuple[list[int], int, int]:
    """The combination of candidates (one per voice) with the fewest clashes.

    Every combination is counted when there are at most ``max_exhaustive`` of
    them (ties go to the earliest candidates); beyond that, coordinate descent
    from the first candidates.

    Parameters
    ----------
    masks : list (V) of list (K_v) of (sounding, onset)
        Pitch-class masks of each voice's candidates, each shape (n_steps,)
        (:func:`st_agent.music.ensemble.voice_masks`).
    max_exhaustive : int
        Most combinations counted one by one.
    passes : int
        Coordinate-descent passes over the voices (large searches only).

    Returns
    -------
    choice : list of int
        Candidate index per voice.
    clashes : int
        Dissonant simultaneities of the choice.
    clashes_independent : int
        Those of the first candidates (independent voices).
    """
    from st_agent.music.ensemble import count_clashes

    sizes = [len(m) for m in masks]
    snd = [np.stack([c[0] for c in m]) for m in masks]  # per voice (K_v, S)
    ons = [np.stack([c[1] for c in m]) for m in masks]

    def clashes(choice: Sequence[int]) -> int:
        return int(count_clashes(np.stack([snd[v][c] for v, c in enumerate(choice)]),
                                 np.stack([ons[v][c] for v, c in enumerate(choice)])))

    base = clashes([0] * len(masks))
    if math.prod(sizes) <= max_exhaustive:
        combos = np.array(list(itertools.product(*(range(k) for k in sizes))))  # (n, V)
        s = np.stack([snd[v][combos[:, v]] for v in range(len(masks))], axis=1)  # (n, V, S)
        o = np.stack([ons[v][combos[:, v]] for v in range(len(masks))], axis=1)
        counts = count_clashes(s, o)
        best = int(np.argmin(counts))  # the first minimum: the earliest candidates
        return combos[best].tolist(), int(counts[best]), base
    choice, best_n = [0] * len(masks), base
    for _ in range(passes):
        improved = False
        for v in range(len(masks)):
            for c in range(sizes[v]):
                trial = [*choice[:v], c, *choice[v + 1:]]
                n = clashes(trial)
                if n < best_n:
                    choice, best_n, improved = trial, n, True
        if not improved or best_n == 0:
            break
    return choice, best_n, base


@dataclass
class BrainVoicesResult:
    """What ``brain_voices`` wrote and measured (``summary`` as in summary.json)."""

    folder: Path
    wav_path: Path | None
    summary: dict[str, Any]


def _windows(cfg: BrainVoicesConfig, duration_sec: float, bpm: float, quarters: float
             ) -> np.ndarray:
    if cfg.phrases:
        return np.linspace(0.0, duration_sec, cfg.phrases + 1)
    phrase_sec = quarters * 60.0 / bpm
    n = int(duration_sec // phrase_sec)
    if n < 2:
        raise ValueError(f"the recording lasts {duration_sec:.1f} s, fewer than two phrases of "
                         f"{phrase_sec:.1f} s in real time; give --phrases to compress it")
    return np.arange(n + 1) * phrase_sec


def _pick_voices(z: np.ndarray, regions: list[Region], max_voices: int) -> list[int]:
    if len(regions) < 2:
        raise ValueError(f"only one region ({regions[0].name}: {', '.join(regions[0].names)}) "
                         "has 10-20 channels; brain voices need at least two regions")
    if len(regions) <= max_voices:
        return list(range(len(regions)))
    iqr = np.subtract(*np.percentile(z, [75, 25], axis=0))
    keep = sorted(np.argsort(-iqr, kind="stable")[:max_voices].tolist())
    return keep


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    r = float(spearmanr(x, y).statistic)
    return r if math.isfinite(r) else None


def _bootstrap_ci(d: np.ndarray, seed: int, n: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(d, size=(n, d.size), replace=True).mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def _compose_step(ens: Any, proposals: list[Any], context: Any, seed: int, candidates: int,
                  bar_steps: int) -> tuple[Any, int, int]:
    """Compose candidates per voice, choose by clashes, return the EnsemblePhrase."""
    from st_agent.music.ensemble import EnsemblePhrase, ensemble_abc, negotiate

    cfg = ens.composer.config
    neg = negotiate(proposals, previous_mode=context.negotiation.mode if context else None,
                    major_key=cfg.major_key, minor_key=cfg.minor_key)
    cands, masks = [], []
    for v, knobs in enumerate(neg.voice_knobs(proposals)):
        ctx = context.voices[v] if context is not None else None
        row = [ens.composer.compose(knobs, context=ctx, seed=seed + 1000 * c + v)
               for c in range(candidates)]
        cands.append(row)
        masks.append([_masks(p, p.bars * bar_steps) for p in row])
    choice, clashes, independent = choose_voices(masks)
    voices = tuple(cands[v][c] for v, c in enumerate(choice))
    first = voices[0]
    progs = ens.programs[:len(voices)]
    abc = ensemble_abc([p.body for p in voices], neg.key, first.meter, first.unit, neg.bpm, progs,
                       title="brain voices")
    phrase = EnsemblePhrase(abc=abc, voices=voices, proposals=tuple(proposals), negotiation=neg,
                            programs=progs, extra={"choice": choice})
    return phrase, clashes, independent


def brain_voices(cfg: BrainVoicesConfig) -> BrainVoicesResult:
    """Regions, activity, voices under the clash constraint; write the piece and figures.

    With ``cfg.board`` the regions come from a live board instead of a file
    (:func:`st_agent.live.brain_voices_live.brain_voices_live`).

    Raises
    ------
    ValueError
        For a recording without 10-20 channel names, fewer than two regions, or
        windows too short for the band.
    FileNotFoundError
        When the recording or the soundfont is missing.
    """
    if cfg.board:
        from st_agent.live.brain_voices_live import brain_voices_live

        return brain_voices_live(cfg)
    from st_agent.music.config import ComposerConfig
    from st_agent.music.render import parse_meter
    from st_agent.types import Knobs

    assert cfg.recording is not None  # the config checks: a recording or a board
    path = Path(cfg.recording)
    data, sfreq, names, types = load_eeg(path, cfg.window)
    regions = group_channels(names, types, cfg.regions == "hemispheres", where=path.name)
    band = band_hz(cfg.band)
    ccfg = ComposerConfig(checkpoint=cfg.checkpoint)
    bar_quarters = parse_meter(ccfg.meter)[0]
    edges = _windows(cfg, data.shape[1] / sfreq, Knobs(0.5, cfg.tempo, 0.5).bpm,
                     4 * bar_quarters)
    z_all, logp = region_activity(data, sfreq, regions, edges, band, cfg.baseline_sec)
    keep = _pick_voices(z_all, regions, cfg.max_voices)
    regions = [regions[i] for i in keep]
    z = z_all[:, keep]
    props = voice_proposals(z, regions, cfg.tempo)
    # the recording is fine: now load the heavy parts (torch, FluidSynth)
    from st_agent.music.composer import Composer
    from st_agent.music.ensemble import STEPS_PER_QUARTER, Ensemble
    from st_agent.music.render import find_soundfont

    find_soundfont(cfg.soundfont)
    composer = Composer(ccfg)
    ens = Ensemble(composer)
    bar_steps = round(bar_quarters * STEPS_PER_QUARTER)  # grid steps of the clash measure
    played, clashes, independent, rows = [], [], [], []
    for k in range(len(edges) - 1):
        proposals = [Knobs(*p) for p in props[k]]
        phrase, c, ind = _compose_step(ens, proposals, played[-1][0] if played else None,
                                       cfg.seed + 10_000 * k, cfg.candidates, bar_steps)
        pm = ens.render(phrase)
        m = ens.measure(pm, phrase.n_voices, bars=phrase.bars, meter=phrase.meter)
        played.append((phrase, pm, m))
        clashes.append(m.clashes_per_bar)
        independent.append(ind / max(phrase.bars, 1))
        rows.append({"index": k, "window_sec": [float(edges[k]), float(edges[k + 1])],
                     "activity": dict(zip([r.name for r in regions], z[k].tolist(), strict=True)),
                     "energy": props[k, :, 2].tolist(), "choice": phrase.extra["choice"],
                     "clashes_search": c, "clashes_independent": ind,
                     "clashes_per_bar": m.clashes_per_bar,
                     "voices": [f.as_dict() for f in m.voices]})
        logger.info("phrase %d/%d: clashes/bar %.2f (independent %.2f)", k + 1, len(edges) - 1,
                    m.clashes_per_bar, ind / max(phrase.bars, 1))
    return _finish(cfg, path, regions, z, logp[:, keep], played, clashes, independent, rows,
                   band, sfreq)


def _finish(cfg: BrainVoicesConfig, path: Path | str, regions: list[Region], z: np.ndarray,
            logp: np.ndarray, played: list[Any], clashes: list[float], independent: list[float],
            rows: list[dict], band: tuple[float, float], sfreq: float) -> BrainVoicesResult:
    from st_agent.music.piece import write_json, write_piece_wav
    from st_agent.music.render import AudioRenderer

    out = out_dir(cfg.out, "brain-voices")
    out.mkdir(parents=True, exist_ok=True)
    density = np.array([[f.notes_per_beat for f in m.voices] for _, _, m in played])  # (W, V)
    velocity = np.array([[f.mean_velocity for f in m.voices] for _, _, m in played])
    tracking = {reg.name: {"channels": list(reg.names),
                           "density": _spearman(z[:, i], density[:, i]),
                           "loudness": _spearman(z[:, i], velocity[:, i])}
                for i, reg in enumerate(regions)}
    d = np.asarray(clashes) - np.asarray(independent)
    chunks, rate = [], 44100
    if cfg.wav:
        with AudioRenderer(cfg.soundfont) as synth:
            chunks = [synth.synthesize(pm) for _, pm, _ in played]
            rate = synth.sample_rate
    wav = write_piece_wav(out / "piece.wav", chunks, rate) if cfg.wav else None
    _join(played).write(str(out / "piece.mid"))
    (out / "score.abc").write_text("\n".join(
        ph.abc.replace("X:1", f"X:{i + 1}", 1) for i, (ph, _, _) in enumerate(played)),
        encoding="utf-8")
    from st_agent.music.render import musical_span_sec

    music_sec = float(sum(musical_span_sec(pm)[1] for _, pm, _ in played))
    summary = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "recording": str(path), "sfreq": sfreq, "band_hz": list(band),
        "voices": [r.name for r in regions], "phrases": len(played), "music_sec": music_sec,
        "clashes_per_bar": float(np.mean(clashes)),
        "clashes_per_bar_independent": float(np.mean(independent)),
        "clashes_difference_ci95": _bootstrap_ci(d, cfg.seed) if d.size > 1 else None,
        "tracking": tracking,
    }
    write_json(out / "phrases.json", rows)
    write_json(out / "summary.json", summary)
    if cfg.plot:
        _plot(out / "regions.png", regions, z, density, tracking)
    return BrainVoicesResult(out, wav, summary)


def _join(played: list[Any]) -> Any:
    import pretty_midi

    from st_agent.music.render import musical_span_sec

    out = pretty_midi.PrettyMIDI()
    by_name: dict[tuple[int, str], pretty_midi.Instrument] = {}
    shift = 0.0
    for _, pm, _m in played:
        for inst in pm.instruments:
            key = (inst.program, inst.name)
            if key not in by_name:
                by_name[key] = pretty_midi.Instrument(inst.program, name=inst.name)
                out.instruments.append(by_name[key])
            by_name[key].notes.extend(pretty_midi.Note(n.velocity, n.pitch, n.start + shift,
                                                       n.end + shift) for n in inst.notes)
        shift += musical_span_sec(pm)[1]  # as long as its audio
    return out


def _plot(path: Path, regions: list[Region], z: np.ndarray, density: np.ndarray,
          tracking: dict[str, dict[str, Any]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(regions), 1, figsize=(8, 1.8 * len(regions) + 0.6),
                             sharex=True, squeeze=False)
    x = np.arange(z.shape[0])
    for i, (ax, reg) in enumerate(zip(axes[:, 0], regions, strict=True)):
        ax.plot(x, z[:, i], "o-", color="tab:blue", label="activity (z vs baseline)")
        ax2 = ax.twinx()
        ax2.plot(x, density[:, i], "s--", color="tab:red", label="voice density")
        r = tracking[reg.name]["density"]
        ax.set_title(f"{reg.name} ({len(reg.names)} ch): Spearman "
                     f"{'n/a' if r is None else f'{r:+.2f}'}", fontsize=9)
        ax.set_ylabel("z")
        ax2.set_ylabel("notes/beat")
    axes[0, 0].legend(loc="upper left", fontsize=7)
    axes[-1, 0].set_xlabel("phrase")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
