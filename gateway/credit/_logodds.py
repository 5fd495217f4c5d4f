"""Log-odds and back, for the PDs and g scores the credit code combines.

Probabilities are clipped to ``[1e-6, 1 − 1e-6]`` first, so a score of exactly 0 or 1
(a tiny cohort, a saturated model) maps to a finite logit instead of ±inf.
"""

from __future__ import annotations

import numpy as np

__all__ = ["logit", "sigmoid"]

_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    """``log(q / (1 − q))`` of ``p`` clipped to ``[1e-6, 1 − 1e-6]`` (float64)."""
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + e^−x)`` (float64)."""
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)
