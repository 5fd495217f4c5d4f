"""The combiner, fitted at the platform on ``f_platform``'s output and the nodes' ``g`` scores.

Two logistic regressions on logits:

* platform-only PD: ``sigmoid(a0 + a1 * logit f)`` — a calibration of ``f``, used
  for every merchant (and the only PD for merchants with no ``g`` score);
* PD with ERP data: ``sigmoid(b0 + b1 * logit f + b2 * logit g)``, fitted on the
  merchants that have a ``g`` score and used for them.

A merchant's uplift (credit line with ``g`` minus without) is computed from the two.

Fit it on ``f`` scores the platform model did not train on (a held-out slice,
or :func:`~federation.models.out_of_fold_f_scores`) and on ``g`` scores for
merchants outside ``g``'s training cohort where possible; in-sample scores are
overconfident and distort the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from .._errors import ModelError

__all__ = ["PDEstimates", "Combiner"]

_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


@dataclass(frozen=True, slots=True)
class PDEstimates:
    """Both PD estimates per merchant.

    Attributes
    ----------
    platform_only : numpy.ndarray
        PD from platform data alone.
    with_erp : numpy.ndarray
        PD using the ``g`` score where one exists, else equal to ``platform_only``.
    has_erp : numpy.ndarray
        Boolean: the merchant had a ``g`` score.
    """

    platform_only: np.ndarray
    with_erp: np.ndarray
    has_erp: np.ndarray


class Combiner:
    """Fits and applies the two-PD combiner.

    Parameters
    ----------
    C : float, default 1.0
        Inverse L2 regularisation of both logistic regressions.
    """

    def __init__(self, *, C: float = 1.0) -> None:
        if C <= 0:
            raise ValueError(f"C must be > 0, got {C}")
        self.C = C
        self._platform: LogisticRegression | None = None
        self._erp: LogisticRegression | None = None

    @staticmethod
    def _inputs(f: np.ndarray, g: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        ff = np.asarray(f, dtype=np.float64).ravel()
        gg = np.full(ff.shape, np.nan) if g is None else np.asarray(g, dtype=np.float64).ravel()
        if gg.shape != ff.shape:
            raise ModelError(f"f has {ff.size} scores but g has {gg.size}", code="BAD_INPUT")
        return ff, gg

    def fit(self, f: np.ndarray, g: np.ndarray | None, y: np.ndarray) -> Combiner:
        """Fit on platform scores ``f``, ERP scores ``g`` (NaN = no score) and labels ``y``."""
        ff, gg = self._inputs(f, g)
        yy = np.asarray(y).astype(int).ravel()
        if yy.shape != ff.shape or np.unique(yy).size < 2:
            raise ModelError("y must match f and contain both classes", code="BAD_INPUT")
        self._platform = LogisticRegression(C=self.C).fit(_logit(ff)[:, None], yy)
        has = np.isfinite(gg)
        self._erp = None
        if has.any() and np.unique(yy[has]).size == 2:
            X = np.column_stack([_logit(ff[has]), _logit(gg[has])])
            self._erp = LogisticRegression(C=self.C).fit(X, yy[has])
        return self

    @property
    def uses_erp(self) -> bool:
        """Whether the ERP combiner could be fitted (some scored merchants of both classes)."""
        return self._erp is not None

    def predict(self, f: np.ndarray, g: np.ndarray | None = None) -> PDEstimates:
        """Both PD estimates; merchants with NaN ``g`` get the platform-only PD twice."""
        if self._platform is None:
            raise ModelError("combiner is not fitted", code="NOT_FITTED")
        ff, gg = self._inputs(f, g)
        base = self._platform.predict_proba(_logit(ff)[:, None])[:, 1]
        with_erp = base.copy()
        has = np.isfinite(gg)
        if self._erp is not None and has.any():
            X = np.column_stack([_logit(ff[has]), _logit(gg[has])])
            with_erp[has] = self._erp.predict_proba(X)[:, 1]
        else:
            has = np.zeros_like(has)
        return PDEstimates(platform_only=base, with_erp=with_erp, has_erp=has)
