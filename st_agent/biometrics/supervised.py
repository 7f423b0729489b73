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
instead of the prior-weighted markers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BlockedCV", "Excerpt", "SupervisedMap", "blocked_cv", "fit_supervised",
           "label_windows", "random_split_cv"]

_MODELS = ("lda", "logreg")


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

    def score(self, log_bands: np.ndarray) -> float:
        """Score of one window in SDs of the training scores (NaN without data).

        Parameters
        ----------
        log_bands : ndarray, shape (n_channels, n_bands)
            ``Estimate.log_bands`` (missing channels NaN: they count as their mean).
        """
        x = np.asarray(log_bands, dtype=float).ravel()
        if x.size != self.mean.size:
            raise ValueError(f"log_bands has {x.size} values, the map was fitted on "
                             f"{self.mean.size}")
        if not np.isfinite(x).any():
            return math.nan
        z = np.where(np.isfinite(x), (x - self.mean) / self.scale, 0.0)
        return float((z @ self.coef + self.intercept) / self.score_sd)


@dataclass(frozen=True)
class BlockedCV:
    """Held-out AUC per fold of a time-blocked cross-validation."""

    fold_auc: tuple[float, ...]
    gap_sec: float

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


def fit_supervised(X: np.ndarray, y: np.ndarray, model: str = "lda") -> SupervisedMap:
    """Fit the linear map on labelled windows.

    Parameters
    ----------
    X : ndarray, shape (n_windows, n_channels, n_bands) or (n_windows, n_features)
        ``Estimate.log_bands`` of the labelled windows.
    y : ndarray of int, shape (n_windows,)
        1 energetic, 0 calm.
    model : {"lda", "logreg"}
        Shrinkage LDA or L2 logistic regression.

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
    return SupervisedMap(coef, intercept, mean, scale, sd, model)


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
    aucs = []
    for start in range(0, ids.size, block):
        test = np.isin(groups, ids[start:start + block])
        lo, hi = t[test].min(), t[test].max()
        train = ~test & ((t < lo - gap_sec) | (t > hi + gap_sec))
        if len(set(y[train])) < 2 or len(set(y[test])) < 2:
            continue
        m = fit_supervised(X[train], y[train], model)
        scores = np.array([m.score(row) for row in X[test]])
        aucs.append(_auc(scores, y[test]))
    return BlockedCV(tuple(aucs), gap_sec)


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
