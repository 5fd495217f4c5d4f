"""The gated combiner and cross-fitted platform scores: what ``fedgate fl combine|platform`` run.

``g`` scores of merchants that ``g`` was trained on are in-sample (overconfident);
a combiner fitted on them over-weights ``g`` and can make ``f + g`` worse than
``f``. :func:`fit_gated_combiner` therefore fits the ERP half of the
:class:`~federation.models.Combiner` only on the nodes' **hold-out** merchants
(the :class:`~federation.jobconfig.HoldoutRule`: ``g`` never trained on them),
with cross-fitted ``f`` scores (:func:`platform_scores`), and **gates** it: a
``folds``-fold cross-validation on those merchants compares the AUC of the
platform-only PD with the PD using ``g``; unless ``g`` improves it by more than
``min_gain``, the gate closes and every merchant gets the platform-only PD.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from .._errors import ModelError
from ..metrics import auc
from ..schema import MERCHANT_ID
from ._combiner import Combiner, PDEstimates
from ._platform import fit_f_platform, out_of_fold_f_scores

__all__ = ["GatedCombiner", "fit_gated_combiner", "platform_scores"]

_MIN_FIT = 30  # fewest hold-out merchants with a g score the ERP half is fitted on


@dataclass(frozen=True, slots=True)
class GatedCombiner:
    """A fitted combiner and the gate's verdict.

    Attributes
    ----------
    combiner : Combiner
    open : bool
        ``g`` improved ``f`` in cross-validation on out-of-sample merchants.
    fit_merchants : int
        Hold-out merchants (with a ``g`` score and a label) the ERP half was fitted on.
    cv_auc_f, cv_auc_f_plus_g : float
        Cross-validated AUC of the two PDs on those merchants.
    """

    combiner: Combiner
    open: bool
    fit_merchants: int
    cv_auc_f: float
    cv_auc_f_plus_g: float

    def predict(self, f: np.ndarray, g: np.ndarray | None) -> PDEstimates:
        """Both PDs; with the gate closed, ``with_erp`` equals the platform-only PD."""
        return self.combiner.predict(f, g if self.open else None)

    def report(self) -> dict[str, Any]:
        """The verdict as plain data."""
        return {
            "open": self.open,
            "fit_merchants": self.fit_merchants,
            "cv_auc_f": self.cv_auc_f,
            "cv_auc_f_plus_g": self.cv_auc_f_plus_g,
        }


def fit_gated_combiner(
    f: np.ndarray,
    g: np.ndarray,
    y: np.ndarray,
    holdout: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    min_gain: float = 0.0,
) -> GatedCombiner:
    """Fit the combiner on out-of-sample ``g`` only, and gate it on cross-validated AUC.

    Parameters
    ----------
    f : numpy.ndarray
        Cross-fitted platform scores, one per merchant.
    g : numpy.ndarray
        ERP scores (NaN where the merchant has none).
    y : numpy.ndarray
        Labels 0/1; NaN for unlabelled merchants (not used for fitting).
    holdout : numpy.ndarray
        Boolean: the nodes held the merchant out (``g`` is out of sample for it).
    folds, seed : int, default 5, 0
        The gate's cross-validation.
    min_gain : float, default 0.0
        AUC gain ``g`` must exceed for the gate to open.

    Raises
    ------
    ModelError
        ``BAD_INPUT``: mismatched lengths, or no labelled merchants of both classes.
    """
    ff = np.asarray(f, dtype=np.float64)
    gg = np.asarray(g, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    hh = np.asarray(holdout, dtype=bool)
    if not ff.shape == gg.shape == yy.shape == hh.shape:
        raise ModelError("f, g, y and holdout must have one value per merchant", code="BAD_INPUT")
    labelled = np.isfinite(yy)
    if labelled.sum() == 0 or np.unique(yy[labelled]).size < 2:
        raise ModelError("no labelled merchants of both classes", code="BAD_INPUT")
    fit = labelled & hh & np.isfinite(gg)
    g_fit = np.where(fit, gg, np.nan)
    n_fit = int(fit.sum())
    yf = yy[fit].astype(int)
    cv_f = cv_fg = float("nan")
    is_open = False
    if n_fit >= _MIN_FIT and np.bincount(yf, minlength=2).min() >= folds:
        p_f = np.empty(n_fit)
        p_fg = np.empty(n_fit)
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        fx, gx = ff[fit], gg[fit]
        for tr, te in splitter.split(np.zeros(n_fit), yf):
            est = Combiner().fit(fx[tr], gx[tr], yf[tr]).predict(fx[te], gx[te])
            p_f[te], p_fg[te] = est.platform_only, est.with_erp
        cv_f, cv_fg = float(auc(yf, p_f)), float(auc(yf, p_fg))
        is_open = cv_fg > cv_f + min_gain
    combiner = Combiner().fit(ff[labelled], g_fit[labelled], yy[labelled].astype(int))
    return GatedCombiner(combiner, is_open and combiner.uses_erp, n_fit, cv_f, cv_fg)


def platform_scores(
    frame: pd.DataFrame,
    *,
    kind: str = "logistic",
    folds: int = 5,
    seed: int = 0,
    features: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Cross-fitted ``f`` for labelled merchants, a full-data model's ``f`` for the rest.

    Parameters
    ----------
    frame : pandas.DataFrame
        ``merchant_id``, ``label`` (0/1 or NaN) and the platform features
        (:func:`federation.jobconfig.read_platform`); text columns are categorical
        (a missing value is its own category).
    kind : {"logistic", "hgb"}, default "logistic"
    folds, seed : int, default 5, 0
    features : Sequence[str] | None, default every column but the id and the label

    Returns
    -------
    pandas.DataFrame
        ``merchant_id``, ``f``, ``labelled``; ``attrs["oof_auc"]`` is the
        cross-fitted AUC on the labelled merchants.
    """
    cols = list(features) if features is not None else [
        c for c in frame.columns if c not in (MERCHANT_ID, "label")
    ]
    X = frame[cols].copy()
    for c in cols:
        if not pd.api.types.is_numeric_dtype(X[c]):
            X[c] = X[c].astype("string").fillna("(missing)").astype(str)
    labelled = frame["label"].notna().to_numpy()
    y = frame.loc[labelled, "label"].astype(int).to_numpy()
    f = np.full(len(frame), np.nan)
    f[labelled] = out_of_fold_f_scores(X[labelled], y, folds=folds, kind=kind, features=cols,
                                       seed=seed)
    if (~labelled).any():
        model = fit_f_platform(X[labelled], y, kind=kind, features=cols, seed=seed)
        f[~labelled] = model.predict_proba(X[~labelled])
    out = pd.DataFrame({MERCHANT_ID: frame[MERCHANT_ID].astype(str), "f": f,
                        "labelled": labelled})
    out.attrs["oof_auc"] = float(auc(y, f[labelled]))
    return out
