"""Tests for the evaluation metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from federation.metrics import auc, brier, ks, recall_at_alert_rate


def test_perfect_ranking_scores() -> None:
    """A perfect ranking has AUC 1 and KS 1."""
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.8, 0.9])

    assert auc(y, p) == 1.0
    assert ks(y, p) == 1.0


def test_auc_and_ks_known_values() -> None:
    """AUC and KS match hand-computed values on a small case."""
    y = np.array([0, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4])

    assert auc(y, p) == pytest.approx(0.75)
    assert ks(y, p) == pytest.approx(0.5)


def test_brier() -> None:
    """Brier is the mean squared error of the probabilities."""
    assert brier([0, 1], [0.2, 0.6]) == pytest.approx((0.04 + 0.16) / 2)


def test_single_class_gives_nan() -> None:
    """AUC is undefined with one class."""
    assert math.isnan(auc([1, 1], [0.2, 0.3]))


def test_recall_at_alert_rate() -> None:
    """Flagging the top 20% catches the positives ranked there."""
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.05])

    assert recall_at_alert_rate(y, s, 0.2) == 0.5


def test_bad_inputs_raise() -> None:
    """Mismatched lengths, non-binary labels and bad rates are refused."""
    with pytest.raises(ValueError):
        auc([0, 1], [0.5])
    with pytest.raises(ValueError):
        brier([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError):
        recall_at_alert_rate([0, 1], [0.1, 0.2], 0.0)
