"""Optional per-listener supervised calibration: band powers -> calm vs energetic.

A rest baseline says how a listener's markers look at rest, not which of them
move with *this* listener's arousal. The supervised protocol (as in Ehrlich et
al. 2019 and Daly et al. 2016) plays known calm and energetic excerpts after the
rest baseline, labels each 2 s window by the excerpt it lies in, and fits a
linear map from the log band power of every channel and band
(:attr:`Estimate.log_bands <st_agent.biometrics.estimator.Estimate>`) to the
label: shrinkage LDA (Ledoit-Wolf shrinkage, scikit-learn; Blankertz et al.
2011) by default, or L2 logistic regression.

Evaluation is **time-blocked** cross-validation (:func:`blocked_cv`): each fold
holds out one block of consecutive excerpts (one calm and one energetic when they
alternate), and training windows within ``gap_sec`` of the held-out block are
dropped. Windows overlap (2 s every 0.5 s) and the state drifts slowly, so a
random split puts near-copies of test windows in training and inflates the
score (:func:`random_split_cv` measures by how much).

:meth:`StateEstimator.set_supervised <st_agent.biometrics.estimator.StateEstimator>`
then uses the map's score (in SDs of its training scores) as the arousal drive
instead of the prior-weighted markers. Besides the band powers a map may use scalar
markers of ``Estimate.features`` (heart rate, breathing, EMG...: ``markers``), appended
after them (:func:`design_row`).

:func:`cv_summary` pools the held-out scores of the folds and gives the AUC and the
accuracy (score > 0) with 95 % CIs from a bootstrap over *excerpts* (stratified by
label): windows of one excerpt overlap and share its slow state, so they are not
independent samples. A map is stored as JSON (:func:`save_map`, :func:`load_map`;
no pickles): the ``st-agent calibrate`` protocol writes it
(:mod:`~st_agent.biometrics.calibrate_protocol`) and ``st-agent session
--calibration`` reads it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from st_agent.errors import DataError

__all__ = ["BlockedCV", "CVSummary", "Excerpt", "SupervisedDrive", "SupervisedMap",
           "SupervisedMapError",
           "blocked_cv", "cv_summary", "design_row", "fit_supervised", "label_windows",
           "load_map", "random_split_cv", "save_map"]

_MODELS = ("lda", "logreg")
MAP_FORMAT = "st-agent-supervised-map"
MAP_VERSION = 1


class SupervisedMapError(DataError):
    """A calibration map file is missing, malformed or does not fit the stream."""


def design_row(log_bands: np.ndarray, features: dict[str, float] | None = None,
               markers: tuple[str, ...] = ()) -> np.ndarray:
    """One window's feature vector: the band powers, then the named scalar markers.

    Parameters
    ----------
    log_bands : ndarray, shape (n_channels, n_bands)
        ``Estimate.log_bands``.
    features : dict of str to float, optional
        ``Estimate.features``; a missing marker is NaN.
    markers : tuple of str
        Marker names appended, in this order.

    Returns
    -------
    row : ndarray, shape (n_channels * n_bands + len(markers),)
    """
    features = features or {}
    extra = [float(features.get(k, math.nan)) for k in markers]
    return np.concatenate([np.asarray(log_bands, dtype=float).ravel(), np.asarray(extra)])


@dataclass(frozen=True)
class Excerpt:
    """One labelled stretch of the protocol: ``label`` 1 energetic, 0 calm, in stream seconds."""

    label: int
    start_sec: float
    end_sec: float

    def __post_init__(self) -> None:
        if self.label not in (0, 1):
            raise ValueError(f"label must be 0 (calm) or 1 (energetic), got {self.label!r}")
        if not self.end_sec > self.start_sec:
            raise ValueError(f"end_sec ({self.end_sec}) must be after start_sec "
                             f"({self.start_sec})")


def label_windows(t_end_sec: np.ndarray, excerpts: list[Excerpt], window_sec: float = 2.0,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Label and excerpt index of each window lying wholly inside an excerpt (else -1).

    Parameters
    ----------
    t_end_sec : ndarray, shape (n_windows,)
        Window end times, s.
    excerpts : list of Excerpt
    window_sec : float
        Window length, s.

    Returns
    -------
    labels, groups : ndarray of int, shape (n_windows,)
    """
    t = np.asarray(t_end_sec, dtype=float)
    labels = np.full(t.size, -1)
    groups = np.full(t.size, -1)
    for k, ex in enumerate(excerpts):
        inside = (t - window_sec >= ex.start_sec) & (t <= ex.end_sec)
        labels[inside], groups[inside] = ex.label, k
    return labels, groups


@dataclass
class SupervisedMap:
    """A fitted per-listener linear map (:func:`fit_supervised`); higher = more energetic."""

    coef: np.ndarray
    intercept: float
    mean: np.ndarray
    scale: np.ndarray
    score_sd: float
    model: str
    cv: BlockedCV | None = None
    markers: tuple[str, ...] = ()
    """Scalar markers appended after the band powers (:func:`design_row`)."""
    ch_names: tuple[str, ...] = ()
    """EEG channels the map was fitted on, in order (empty: not checked)."""
    rest_score: float = math.nan
    """Mean score over the rest windows before the excerpts (NaN: unknown); the
    estimator measures arousal from it when a session has no rest of its own."""
    info: dict[str, Any] = field(default_factory=dict)
    """What the calibration measured (CV AUC, protocol...), JSON-ready."""

    def score(self, log_bands: np.ndarray, features: dict[str, float] | None = None) -> float:
        """Score of one window in SDs of the training scores (NaN without data).

        Parameters
        ----------
        log_bands : ndarray, shape (n_channels, n_bands)
            ``Estimate.log_bands`` (missing channels NaN: they count as their mean).
        features : dict of str to float, optional
            ``Estimate.features``, for the map's ``markers``.
        """
        if self.markers or features is not None:
            x = design_row(log_bands, features, self.markers)
        else:
            x = np.asarray(log_bands, dtype=float).ravel()
        if x.size != self.mean.size:
            raise ValueError(f"log_bands has {x.size} values, the map was fitted on "
                             f"{self.mean.size}")
        if not np.isfinite(x).any():
            return math.nan
        z = np.where(np.isfinite(x), (x - self.mean) / self.scale, 0.0)
        return float((z @ self.coef + self.intercept) / self.score_sd)


    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description of the map (no CV object)."""
        return {"format": MAP_FORMAT, "version": MAP_VERSION, "model": self.model,
                "coef": self.coef.tolist(), "intercept": self.intercept,
                "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "score_sd": self.score_sd, "markers": list(self.markers),
                "ch_names": list(self.ch_names),
                "rest_score": None if not math.isfinite(self.rest_score) else self.rest_score,
                "info": self.info}

    @classmethod
    def from_dict(cls, doc: Any, source: str = "the map") -> SupervisedMap:
        """Build a map from :meth:`to_dict` output, checking every field.

        Raises
        ------
        SupervisedMapError
            Naming the field, the bad value and what is allowed.
        """
        if not isinstance(doc, dict) or doc.get("format") != MAP_FORMAT:
            raise SupervisedMapError(f"{source} is not a calibration map (no \"format\": "
                                     f"\"{MAP_FORMAT}\"); write one with `st-agent calibrate`")
        if doc.get("version") != MAP_VERSION:
            raise SupervisedMapError(f"{source}: version {doc.get('version')!r} is not "
                                     f"supported (this st-agent reads {MAP_VERSION})")
        if doc.get("model") not in _MODELS:
            raise SupervisedMapError(f"{source}: model must be one of {_MODELS}, got "
                                     f"{doc.get('model')!r}")
        arrays = {}
        for key in ("coef", "mean", "scale"):
            try:
                a = np.asarray(doc.get(key), dtype=float)
            except (TypeError, ValueError):
                a = np.empty(0)
            if a.ndim != 1 or a.size == 0 or not np.isfinite(a).all():
                raise SupervisedMapError(f"{source}: {key!r} must be a non-empty list of "
                                         "finite numbers")
            arrays[key] = a
        sizes = {k: a.size for k, a in arrays.items()}
        if len(set(sizes.values())) != 1 or (arrays["scale"] <= 0).any():
            raise SupervisedMapError(f"{source}: coef, mean and scale must have one length "
                                     f"(got {sizes}) and scale must be > 0")
        nums = {}
        for key in ("intercept", "score_sd"):
            v = doc.get(key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise SupervisedMapError(f"{source}: {key!r} must be a finite number, got {v!r}")
            nums[key] = float(v)
        if nums["score_sd"] <= 0:
            raise SupervisedMapError(f"{source}: 'score_sd' must be > 0, got {nums['score_sd']}")
        names = {}
        for key in ("markers", "ch_names"):
            v = doc.get(key, [])
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise SupervisedMapError(f"{source}: {key!r} must be a list of names")
            names[key] = tuple(v)
        n_bands = sizes["coef"] - len(names["markers"])
        if names["ch_names"] and (n_bands <= 0 or n_bands % len(names["ch_names"])):
            raise SupervisedMapError(f"{source}: {sizes['coef']} weights do not fit "
                                     f"{len(names['ch_names'])} channels and "
                                     f"{len(names['markers'])} markers")
        rest = doc.get("rest_score")
        if rest is not None and (isinstance(rest, bool) or not isinstance(rest, int | float)
                                 or not math.isfinite(rest)):
            raise SupervisedMapError(f"{source}: 'rest_score' must be a number or null")
        info = doc.get("info", {})
        return cls(arrays["coef"], nums["intercept"], arrays["mean"], arrays["scale"],
                   nums["score_sd"], doc["model"], None, names["markers"], names["ch_names"],
                   math.nan if rest is None else float(rest),
                   info if isinstance(info, dict) else {})


class SupervisedDrive:
    """A map in use by an estimator: its score less the mean over the rest windows.

    Parameters
    ----------
    mapping : SupervisedMap
    """

    def __init__(self, mapping: SupervisedMap) -> None:
        self.map = mapping
        self._rest: list[float] = []
        self.offset = math.nan

    def mismatch(self, eeg_names: tuple[str, ...], n_bands: int) -> str:
        """Why the map does not fit a stream with these EEG channels ("" when it does)."""
        m = self.map
        n_feat = len(eeg_names) * n_bands + len(m.markers)
        if (m.ch_names and tuple(m.ch_names) != tuple(eeg_names)) or m.mean.size != n_feat:
            fitted = ", ".join(m.ch_names) or "channels unknown"
            return (f"fitted on {m.mean.size} features ({fitted}), the stream has {n_feat} "
                    f"({', '.join(eeg_names)}): arousal from the markers instead")
        return ""

    def add_rest(self, log_bands: np.ndarray, features: dict[str, float]) -> None:
        """A good rest-calibration window."""
        self._rest.append(self.map.score(log_bands, features))

    def end_rest(self) -> None:
        """Calibration is complete: the offset is the rest windows' mean (>= 10 of them)."""
        rest = np.asarray(self._rest, dtype=float)
        if np.isfinite(rest).sum() >= 10:
            self.offset = float(np.nanmean(rest))

    def drive(self, log_bands: np.ndarray, features: dict[str, float]) -> float:
        """The window's score less the rest offset (the map's own without a rest), SDs."""
        offset = self.offset if math.isfinite(self.offset) else self.map.rest_score
        return self.map.score(log_bands, features) - (offset if math.isfinite(offset) else 0.0)


def save_map(mapping: SupervisedMap, path: str | Path) -> Path:
    """Write a map as JSON (written to a temporary file, then renamed).

    Parameters
    ----------
    mapping : SupervisedMap
    path : str or Path
        Output file (its folder is created).

    Returns
    -------
    path : Path
    """
    if not isinstance(mapping, SupervisedMap):
        raise TypeError(f"mapping must be a SupervisedMap, got {type(mapping).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(mapping.to_dict(), indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_map(path: str | Path) -> SupervisedMap:
    """Read a map written by :func:`save_map` (``st-agent calibrate``).

    Raises
    ------
    SupervisedMapError
        If the file is missing, not JSON or not a valid map (the message says which).
    """
    path = Path(path)
    if not path.is_file():
        raise SupervisedMapError(f"calibration file {path} does not exist; write one with "
                                 "`st-agent calibrate --out " + str(path) + "`")
    if path.stat().st_size > 16 * 1024 * 1024:
        raise SupervisedMapError(f"calibration file {path} is over 16 MiB: not a map")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SupervisedMapError(f"calibration file {path} is not valid JSON: {e}") from e
    return SupervisedMap.from_dict(doc, f"calibration file {path}")


@dataclass(frozen=True)
class BlockedCV:
    """Held-out AUC per fold of a time-blocked cross-validation.

    ``held_out`` holds, for every window that was tested, its held-out score, label
    and excerpt index (:func:`cv_summary` pools them).
    """

    fold_auc: tuple[float, ...]
    gap_sec: float
    held_out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def mean_auc(self) -> float:
        """Mean over the folds."""
        return float(np.nanmean(self.fold_auc)) if self.fold_auc else math.nan


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    pos, neg = score[y == 1], score[y == 0]
    if not pos.size or not neg.size:
        return math.nan
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def _classifier(model: str) -> Any:
    try:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        from sklearn.linear_model import LogisticRegression
    except ImportError as e:
        raise ImportError("supervised calibration needs scikit-learn "
                          "(pip install scikit-learn)") from e
    if model == "lda":
        return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    return LogisticRegression(C=0.1, max_iter=1000)


def _prepare(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=float).reshape(len(X), -1)
    y = np.asarray(y)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels")
    if set(np.unique(y)) != {0, 1}:
        raise ValueError(f"y must hold both labels 0 and 1, got {sorted(set(np.unique(y)))}")
    mean = np.nanmean(X, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    scale = np.nanstd(X, axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return np.where(np.isfinite(X), (X - mean) / scale, 0.0), mean, scale


def fit_supervised(X: np.ndarray, y: np.ndarray, model: str = "lda",
                   markers: tuple[str, ...] = (), ch_names: tuple[str, ...] = (),
                   ) -> SupervisedMap:
    """Fit the linear map on labelled windows.

    Parameters
    ----------
    X : ndarray, shape (n_windows, n_channels, n_bands) or (n_windows, n_features)
        ``Estimate.log_bands`` of the labelled windows.
    y : ndarray of int, shape (n_windows,)
        1 energetic, 0 calm.
    model : {"lda", "logreg"}
        Shrinkage LDA or L2 logistic regression.
    markers, ch_names : tuple of str
        What the columns are (:func:`design_row`), stored with the map.

    Returns
    -------
    map : SupervisedMap
    """
    if model not in _MODELS:
        raise ValueError(f"model must be one of {_MODELS}, got {model!r}")
    Z, mean, scale = _prepare(X, y)
    clf = _classifier(model).fit(Z, np.asarray(y))
    coef = np.ravel(clf.coef_).astype(float)
    intercept = float(np.ravel(clf.intercept_)[0])
    sd = float(np.std(Z @ coef + intercept)) or 1.0
    return SupervisedMap(coef, intercept, mean, scale, sd, model, None, tuple(markers),
                         tuple(ch_names))


def blocked_cv(X: np.ndarray, y: np.ndarray, groups: np.ndarray, t_sec: np.ndarray,
               model: str = "lda", block: int = 2, gap_sec: float = 4.0) -> BlockedCV:
    """Time-blocked cross-validation: hold out ``block`` consecutive excerpts per fold.

    Parameters
    ----------
    X, y : ndarray
        As :func:`fit_supervised`.
    groups : ndarray of int, shape (n_windows,)
        Excerpt index of each window, in time order of the excerpts.
    t_sec : ndarray, shape (n_windows,)
        Window end times, s (for the gap).
    model : {"lda", "logreg"}
    block : int
        Consecutive excerpts per held-out fold.
    gap_sec : float
        Training windows this close to the held-out block are dropped, s.

    Returns
    -------
    cv : BlockedCV
    """
    if model not in _MODELS:
        raise ValueError(f"model must be one of {_MODELS}, got {model!r}")
    X = np.asarray(X, dtype=float).reshape(len(X), -1)
    y, groups, t = np.asarray(y), np.asarray(groups), np.asarray(t_sec, dtype=float)
    ids = np.unique(groups)
    aucs, kept = [], []
    for start in range(0, ids.size, block):
        test = np.isin(groups, ids[start:start + block])
        lo, hi = t[test].min(), t[test].max()
        train = ~test & ((t < lo - gap_sec) | (t > hi + gap_sec))
        if len(set(y[train])) < 2 or len(set(y[test])) < 2:
            continue
        m = fit_supervised(X[train], y[train], model)
        scores = np.array([m.score(row) for row in X[test]])
        aucs.append(_auc(scores, y[test]))
        kept.append((scores, y[test], groups[test]))
    held = None
    if kept:
        held = tuple(np.concatenate([k[i] for k in kept]) for i in range(3))
    return BlockedCV(tuple(aucs), gap_sec, held)


@dataclass(frozen=True)
class CVSummary:
    """Pooled held-out figures of a :class:`BlockedCV`, with 95 % CIs (:func:`cv_summary`)."""

    auc: float
    auc_ci: tuple[float, float]
    accuracy: float
    accuracy_ci: tuple[float, float]
    n_windows: int
    n_excerpts: int
    fold_auc: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"auc": self.auc, "auc_ci": list(self.auc_ci), "accuracy": self.accuracy,
                "accuracy_ci": list(self.accuracy_ci), "n_windows": self.n_windows,
                "n_excerpts": self.n_excerpts, "fold_auc": list(self.fold_auc)}


def cv_summary(cv: BlockedCV, rng: np.random.Generator, n_boot: int = 2000) -> CVSummary:
    """Pooled AUC and accuracy (score > 0 means energetic) of the held-out windows.

    The 95 % CIs come from a bootstrap over excerpts, drawn with replacement within
    each label, so that overlapping windows of one excerpt move together.

    Parameters
    ----------
    cv : BlockedCV
        From :func:`blocked_cv`.
    rng : numpy.random.Generator
    n_boot : int
        Bootstrap resamples.

    Returns
    -------
    summary : CVSummary
        NaN figures when no fold could be tested.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator, got {type(rng).__name__}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot must be an int >= 100, got {n_boot!r}")
    nan2 = (math.nan, math.nan)
    if cv.held_out is None:
        return CVSummary(math.nan, nan2, math.nan, nan2, 0, 0, cv.fold_auc)
    score, y, groups = cv.held_out
    ok = np.isfinite(score)
    score, y, groups = score[ok], y[ok], groups[ok]
    ids = {lab: np.unique(groups[y == lab]) for lab in (0, 1)}
    members = {g: np.flatnonzero(groups == g) for g in np.unique(groups)}

    def figures(idx: np.ndarray) -> tuple[float, float]:
        return _auc(score[idx], y[idx]), float(np.mean((score[idx] > 0) == (y[idx] == 1)))

    auc, acc = figures(np.arange(score.size))
    boots = []
    if ids[0].size and ids[1].size:
        for _ in range(n_boot):
            pick = np.concatenate([rng.choice(ids[lab], ids[lab].size) for lab in (0, 1)])
            boots.append(figures(np.concatenate([members[g] for g in pick])))
    b = np.array(boots) if boots else np.full((1, 2), np.nan)

    def ci(col: int) -> tuple[float, float]:
        lo, hi = np.nanpercentile(b[:, col], [2.5, 97.5])
        return float(lo), float(hi)

    return CVSummary(auc, ci(0), acc, ci(1), int(score.size), len(members), cv.fold_auc)


def random_split_cv(X: np.ndarray, y: np.ndarray, rng: np.random.Generator, n_folds: int = 5,
                    model: str = "lda") -> float:
    """Mean held-out AUC of a *random* k-fold split (leaky with overlapping windows)."""
    X = np.asarray(X, dtype=float).reshape(len(X), -1)
    y = np.asarray(y)
    fold = rng.permutation(np.arange(y.size) % n_folds)
    aucs = []
    for k in range(n_folds):
        test = fold == k
        m = fit_supervised(X[~test], y[~test], model)
        aucs.append(_auc(np.array([m.score(r) for r in X[test]]), y[test]))
    return float(np.nanmean(aucs))
