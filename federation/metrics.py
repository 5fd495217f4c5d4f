"""Evaluation metrics for PD and fake-trade models: AUC, KS, Brier and recall at an alert rate.

All functions take a binary label vector ``y`` (0/1) and a score vector ``p`` of the
same length (a probability for :func:`brier`, any monotone score elsewhere).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["auc", "ks", "brier", "recall_at_alert_rate"]

ArrayLike = np.ndarray | Sequence[float]


def _check(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    yy = np.asarray(y, dtype=np.float64).ravel()
    pp = np.asarray(p, dtype=np.float64).ravel()
    if yy.shape != pp.shape:
        raise ValueError(f"y and p must have the same length, got {yy.size} and {pp.size}")
    if yy.size and not np.isin(yy, (0.0, 1.0)).all():
        raise ValueError("y must contain only 0 and 1")
    return yy, pp


def auc(y: ArrayLike, p: ArrayLike) -> float:
    """Area under the ROC curve; ``nan`` when ``y`` holds only one class."""
    yy, pp = _check(y, p)
    if yy.size == 0 or yy.min() == yy.max():
        return math.nan
    return float(roc_auc_score(yy, pp))


def ks(y: ArrayLike, p: ArrayLike) -> float:
    """Kolmogorov-Smirnov statistic: max |TPR - FPR| over thresholds; ``nan`` for one class."""
    yy, pp = _check(y, p)
    if yy.size == 0 or yy.min() == yy.max():
        return math.nan
    fpr, tpr, _ = roc_curve(yy, pp)
    return float(np.max(tpr - fpr))


def brier(y: ArrayLike, p: ArrayLike) -> float:
    """Brier score: mean squared difference between probability ``p`` and label ``y``."""
    yy, pp = _check(y, p)
    if yy.size == 0:
        return math.nan
    return float(np.mean((pp - yy) ** 2))


def recall_at_alert_rate(y: ArrayLike, score: ArrayLike, alert_rate: float) -> float:
    """Share of positives caught when the top ``alert_rate`` share of merchants is flagged.

    Parameters
    ----------
    y : array-like
        True labels (1 = fake trade).
    score : array-like
        Higher means more suspicious.
    alert_rate : float
        Share of merchants flagged, in (0, 1]; ``ceil(alert_rate * n)`` are flagged
        (ties broken by a stable sort, so the result is deterministic).

    Returns
    -------
    float
        Recall among flagged merchants; ``nan`` when ``y`` has no positive.
    """
    if not 0.0 < alert_rate <= 1.0:
        raise ValueError(f"alert_rate must be in (0, 1], got {alert_rate}")
    yy, ss = _check(y, score)
    positives = yy.sum()
    if positives == 0:
        return math.nan
    k = math.ceil(alert_rate * yy.size)
    top = np.argsort(-ss, kind="stable")[:k]
    return float(yy[top].sum() / positives)
