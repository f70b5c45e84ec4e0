"""Evaluation metrics of the AST family: top-1 accuracy, mAP, mAUC and d-prime.

All functions take numpy arrays and compute in float64. Per-class average precision and ROC
AUC follow scikit-learn's definitions (``average_precision_score``, ``roc_auc_score``): samples
with equal scores form one threshold. A target counts as positive when it is above 0.5, so
hard {0, 1} labels and booleans both work. Classes without positives (or, for AUC, without
negatives) have no defined AP/AUC and are left out of the means, as in AST's evaluation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

METRICS: tuple[str, ...] = ("acc", "mAP", "mAUC", "d_prime")
FRACTION_METRICS = frozenset({"acc", "mAP", "mAUC"})  # fractions, which tables, plots and logs show in percent


def metric_text(value: float, metric: str) -> str:
    """A metric's value as logs and the command line say it: fractions (:data:`FRACTION_METRICS`)
    in percent as the tables show them (``36.33 %``), others to 4 decimals."""
    return f"{100.0 * value:.2f} %" if metric in FRACTION_METRICS else f"{value:.4f}"


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better.

    True for the metrics of :data:`METRICS`, False for losses (any name ending in ``loss``,
    e.g. ``val_loss``); other names raise ``ValueError`` rather than guess a direction.
    """
    if metric in METRICS:
        return True
    if metric.endswith("loss"):
        return False
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)} or a *loss")


def _binary_inputs(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated 1-D float64 scores and boolean targets of equal length."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets)
    if s.ndim != 1 or t.ndim != 1 or len(s) != len(t):
        raise ValueError(f"expected 1-D scores and targets of equal length, got shapes {s.shape} and {t.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s, t.astype(np.float64) > 0.5


def _threshold_counts(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct score, from the highest down.

    Entry ``n`` counts the samples whose score is >= the n-th largest distinct score, so a
    group of tied scores enters as a whole (scikit-learn's ``_binary_clf_curve``).
    """
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    group_ends = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(p, dtype=np.float64)[group_ends]
    fps = (group_ends + 1) - tps
    return tps, fps


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Average precision: sum over thresholds of (R_n - R_{n-1}) * P_n, with R_0 = 0.

    ``scores`` [N] (any real values, larger = more positive), ``targets`` [N] in {0, 1}.
    Returns NaN when there is no positive.
    """
    s, positive = _binary_inputs(scores, targets)
    if not positive.any():
        return math.nan
    tps, fps = _threshold_counts(s, positive)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def roc_auc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area under the ROC curve by the trapezoid rule over distinct thresholds.

    Tied scores make one diagonal step, so a positive/negative tie counts one half (the
    Mann-Whitney statistic). Returns NaN unless both classes are present.
    """
    s, positive = _binary_inputs(scores, targets)
    if positive.all() or not positive.any():
        return math.nan
    tps, fps = _threshold_counts(s, positive)
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def d_prime(auc: float) -> float:
    """Sensitivity index of an AUC: sqrt(2) * Phi^{-1}(AUC), Phi the standard normal CDF.

    NaN stays NaN; AUC 0 and 1 give -inf and +inf; values outside [0, 1] raise ``ValueError``.
    """
    auc = float(auc)
    if math.isnan(auc):
        return math.nan
    if not 0.0 <= auc <= 1.0:
        raise ValueError(f"AUC must lie in [0, 1], got {auc}")
    z = torch.special.ndtri(torch.tensor(auc, dtype=torch.float64)).item()
    return math.sqrt(2.0) * z


def _multi_hot(targets: np.ndarray, num_samples: int, num_classes: int) -> np.ndarray:
    """Boolean [N, C] positives from multi-hot [N, C] targets or [N] integer labels."""
    t = np.asarray(targets)
    if t.ndim == 1:
        if len(t) != num_samples:
            raise ValueError(f"{len(t)} labels for {num_samples} score rows")
        if len(t) and not np.all(np.equal(np.mod(t, 1), 0)):
            raise ValueError("1-D targets must be integer class indices")
        labels = t.astype(np.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"class indices must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")
        hot = np.zeros((num_samples, num_classes), dtype=bool)
        hot[np.arange(num_samples), labels] = True
        return hot
    if t.shape != (num_samples, num_classes):
        raise ValueError(f"targets of shape {t.shape} do not match scores of shape {(num_samples, num_classes)}")
    return t.astype(np.float64) > 0.5


def _scores_2d(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"expected scores of shape [N, C], got {s.shape}")
    return s


def top1_accuracy(scores: np.ndarray, targets: np.ndarray) -> float:
    """Share of samples whose highest-scoring class is one of their positive labels.

    ``scores`` [N, C]; ``targets`` [N, C] one-/multi-hot or [N] integer labels. Ties in the
    scores go to the lowest class index (``argmax``). NaN for N = 0.
    """
    s = _scores_2d(scores)
    hot = _multi_hot(targets, *s.shape)
    if len(s) == 0:
        return math.nan
    predicted = s.argmax(axis=1)
    return float(np.mean(hot[np.arange(len(s)), predicted]))


def _nanmean(values: list[float]) -> float:
    """Mean of the non-NaN values; NaN when there are none."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def evaluate(scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """``{"acc", "mAP", "mAUC", "d_prime"}`` of ``scores`` [N, C] against ``targets``.

    ``targets`` are multi-hot [N, C] or integer labels [N]. mAP averages the classes with at
    least one positive, mAUC those with at least one positive and one negative; d-prime is
    computed from mAUC, as AST reports it.
    """
    s = _scores_2d(scores)
    hot = _multi_hot(targets, *s.shape)
    aps = [average_precision(s[:, c], hot[:, c]) for c in range(s.shape[1])]
    aucs = [roc_auc(s[:, c], hot[:, c]) for c in range(s.shape[1])]
    m_auc = _nanmean(aucs)
    return {"acc": top1_accuracy(s, hot), "mAP": _nanmean(aps), "mAUC": m_auc, "d_prime": d_prime(m_auc)}
