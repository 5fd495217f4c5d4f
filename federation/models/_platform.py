"""``f_platform``: the platform's own model on platform features only (scikit-learn)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from .._errors import ModelError
from ..schema import PLATFORM_FEATURES, SECTOR

__all__ = ["F_KINDS", "PlatformModel", "fit_f_platform", "out_of_fold_f_scores"]

F_KINDS = ("hgb", "logistic")


class PlatformModel:
    """A fitted platform-only model; :meth:`predict_proba` gives ``f`` per merchant.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        The fitted pipeline.
    features : Sequence[str]
        Input columns it was fitted on.
    kind : str
        ``hgb`` or ``logistic``.
    """

    def __init__(self, pipeline: Pipeline, features: Sequence[str], kind: str) -> None:
        self.pipeline = pipeline
        self.features = list(features)
        self.kind = kind

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """Probability of the label ``(n,)``; raises ``ModelError`` on missing columns."""
        missing = [c for c in self.features if c not in df.columns]
        if missing:
            raise ModelError(f"platform frame lacks {missing}", code="BAD_INPUT")
        proba = self.pipeline.predict_proba(df[self.features])
        return np.asarray(proba[:, 1], dtype=np.float64)


def fit_f_platform(
    df: pd.DataFrame,
    y: np.ndarray | pd.Series,
    *,
    kind: str = "hgb",
    features: Sequence[str] | None = None,
    seed: int = 0,
) -> PlatformModel:
    """Fit ``f_platform`` at the platform.

    Parameters
    ----------
    df : pandas.DataFrame
        Platform rows.
    y : array-like
        Labels (``default_12m`` or ``fake_trade``).
    kind : {"hgb", "logistic"}, default "hgb"
        Histogram gradient boosting, or a standardised logistic regression.
    features : Sequence[str] | None, default None
        Columns to use; default :data:`~federation.schema.PLATFORM_FEATURES` present in ``df``.
        Object/category columns are one-hot encoded, numeric ones used as is.
    seed : int, default 0
    """
    if kind not in F_KINDS:
        raise ValueError(f"kind must be one of {F_KINDS}, got {kind!r}")
    cols = list(features) if features is not None else [c for c in PLATFORM_FEATURES
                                                          if c in df.columns]
    if not cols:
        raise ModelError("no platform feature columns to fit on", code="BAD_INPUT")
    categorical = [c for c in cols if c == SECTOR or not pd.api.types.is_numeric_dtype(df[c])]
    numeric = [c for c in cols if c not in categorical]
    onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    if kind == "hgb":
        pre = ColumnTransformer([("cat", onehot, categorical), ("num", "passthrough", numeric)])
        clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1,
                                             early_stopping=False, random_state=seed)
    else:
        num = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
        pre = ColumnTransformer([("cat", onehot, categorical), ("num", num, numeric)])
        clf = LogisticRegression(max_iter=1000)
    pipe = Pipeline([("pre", pre), ("clf", clf)])
    pipe.fit(df[cols], np.asarray(y).astype(int))
    return PlatformModel(pipe, cols, kind)


def out_of_fold_f_scores(
    df: pd.DataFrame,
    y: np.ndarray | pd.Series,
    *,
    folds: int = 5,
    kind: str = "hgb",
    features: Sequence[str] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Cross-fitted ``f`` scores: each row scored by a model that never saw it.

    Fit the :class:`~federation.models.Combiner` on these (or on a held-out
    slice), not on in-sample ``f`` scores: in-sample scores of a boosted model
    are overconfident and the combiner would then underweight ``g``.

    Parameters
    ----------
    df, y, kind, features, seed
        As for :func:`fit_f_platform`.
    folds : int, default 5
        Stratified folds (>= 2).
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    yy = np.asarray(y).astype(int)
    out = np.empty(len(df), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_idx, test_idx in splitter.split(np.zeros(len(df)), yy):
        model = fit_f_platform(df.iloc[train_idx], yy[train_idx], kind=kind, features=features,
                               seed=seed)
        out[test_idx] = model.predict_proba(df.iloc[test_idx])
    return out
