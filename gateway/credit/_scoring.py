"""From a world's platform table and the nodes' g scores to :class:`MerchantScores`.

The PD *without* ISV data is ``f_platform`` cross-fitted (each merchant scored by a
model that never saw it); the PD *with* ISV data is the combiner's, fitted on those
``f`` scores and the g scores that a live ``credit_scoring`` consent covers (the
gate: a g score without one is dropped before the combiner sees it). With several
ISVs for one merchant, the combiner reads the mean logit of their scores, and each
ISV's own PD (for attribution) reads its score alone.

Off-platform merchants (ERP data, no platform sales), as the demo decides them in
memory: PD from an ERP-only score calibrated on the platform's labels (a one-feature
logistic regression), line base from the ERP-reported turnover. The operator's path
(``fedgate credit decide --off-platform-…``: a ``pd-erp-only`` PD used as is, the node's
``revenue_3m`` release, strict files) is :mod:`gateway.credit._offplatform`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._lines import MerchantScores
from ._logodds import logit, sigmoid

__all__ = [
    "PlatformPds",
    "platform_pds",
    "merchant_scores",
    "offplatform_scores",
    "consented_scores",
]





@dataclass(frozen=True, slots=True)
class PlatformPds:
    """PDs per merchant, aligned with the platform table's rows."""

    merchant_id: np.ndarray
    pd_f: np.ndarray
    pd_with: np.ndarray
    isv_pd: list[dict[str, float]]
    f_scores: np.ndarray
    combiner: object


def platform_pds(
    platform: pd.DataFrame,
    labels: np.ndarray,
    g_scores: pd.DataFrame,
    *,
    f_kind: str = "hgb",
    seed: int = 0,
) -> PlatformPds:
    """Cross-fitted ``f`` and the combiner with the (consented) g scores.

    Parameters
    ----------
    platform : pandas.DataFrame
        Platform rows (``merchant_id`` and the platform features).
    labels : numpy.ndarray
        The platform's default labels for these rows.
    g_scores : pandas.DataFrame
        ``merchant_id``, ``isv_id``, ``g``: only scores a consent covers.
    """
    from federation.models import Combiner, out_of_fold_f_scores

    ids = platform["merchant_id"].astype(str).to_numpy()
    y = np.asarray(labels).astype(int)
    f = out_of_fold_f_scores(platform, y, kind=f_kind, seed=seed)
    per: dict[str, dict[str, float]] = {}
    for m, isv, g in zip(
        g_scores["merchant_id"].astype(str),
        g_scores["isv_id"].astype(str),
        g_scores["g"],
        strict=True,
    ):
        per.setdefault(m, {})[isv] = float(g)
    g_mean = np.asarray(
        [
            sigmoid(np.mean(logit(np.asarray(list(per[m].values()))))) if m in per else np.nan
            for m in ids
        ]
    )
    comb = Combiner().fit(f, g_mean, y)
    est = comb.predict(f, g_mean)
    isv_pd: list[dict[str, float]] = []
    for i, m in enumerate(ids):
        scores = per.get(m, {})
        if len(scores) <= 1 or not est.has_erp[i]:
            isv_pd.append({k: float(est.with_erp[i]) for k in scores} if est.has_erp[i] else {})
            continue
        one = {
            k: float(comb.predict(f[i : i + 1], np.asarray([v])).with_erp[0])
            for k, v in scores.items()
        }
        isv_pd.append(one)
    pd_with = np.where(est.has_erp, est.with_erp, np.nan)
    return PlatformPds(ids, est.platform_only, pd_with, isv_pd, f, comb)


def merchant_scores(
    pds: PlatformPds,
    sales_monthly: Sequence[int],
    consent_of: Callable[[str, str], str | None],
) -> list[MerchantScores]:
    """One :class:`MerchantScores` per platform merchant (trailing 3 months = 3 × monthly)."""
    out: list[MerchantScores] = []
    for i, m in enumerate(pds.merchant_id):
        pw = pds.pd_with[i]
        isvs = pds.isv_pd[i]
        out.append(
            MerchantScores(
                merchant_id=str(m),
                sales_3m=3 * int(sales_monthly[i]),
                pd_f=float(pds.pd_f[i]),
                pd_with=None if not np.isfinite(pw) else float(pw),
                isv_pd=isvs,
                consent_ids={k: c for k in isvs if (c := consent_of(str(m), k))},
            )
        )
    return out


def offplatform_scores(
    erp_rows: pd.DataFrame,
    calibration: tuple[np.ndarray, np.ndarray],
    consent_of: Callable[[str, str], str | None],
) -> list[MerchantScores]:
    """Off-platform merchants' scores from an ERP-only score calibrated on labelled merchants.

    Parameters
    ----------
    erp_rows : pandas.DataFrame
        ``merchant_id``, ``isv_id``, ``g`` (ERP-only score), ``monthly_revenue`` (fen).
    calibration : (numpy.ndarray, numpy.ndarray)
        ERP-only scores and default labels of platform merchants, to map score → PD.
    """
    from sklearn.linear_model import LogisticRegression

    g_cal, y_cal = calibration
    lr = LogisticRegression().fit(logit(np.asarray(g_cal))[:, None], np.asarray(y_cal).astype(int))
    pd_ = lr.predict_proba(logit(erp_rows["g"].to_numpy())[:, None])[:, 1]
    out: list[MerchantScores] = []
    for (m, isv, rev), p in zip(
        erp_rows[["merchant_id", "isv_id", "monthly_revenue"]].itertuples(index=False),
        pd_,
        strict=True,
    ):
        out.append(
            MerchantScores(
                merchant_id=str(m),
                sales_3m=3 * int(rev),
                pd_f=None,
                pd_with=float(p),
                isv_pd={str(isv): float(p)},
                consent_ids={str(isv): c} if (c := consent_of(str(m), str(isv))) else {},
            )
        )
    return out


def consented_scores(
    g_scores: pd.DataFrame, allowed: Mapping[tuple[str, str], str | None]
) -> pd.DataFrame:
    """Only the g scores a consent covers (``allowed[(merchant, isv)]`` is a consent id)."""
    keep = [
        bool(allowed.get((str(m), str(k))))
        for m, k in zip(g_scores["merchant_id"], g_scores["isv_id"], strict=True)
    ]
    return g_scores[np.asarray(keep, dtype=bool)]
