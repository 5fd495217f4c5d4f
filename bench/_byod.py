"""Bring-your-own-data rows of ``bench.federation``: the two-model story on three real data sets.

For each of ``modeldata``'s credit_data (ISVs = ``Job``), GMSC (age quartiles)
and PAKDD (shops), on the data set's 80/20 split (stratified, seed 0):

* **centralized logistic regression on the raw ERP features** (median imputation
  with missing indicators, standardised; scikit-learn) on the whole train split —
  the peer;
* **federated ``g``** without DP and with DP-SGD at ε = 3 (Flower simulation jobs;
  the saved model is the best round on the nodes' hold-out), scored on the test
  split; targets: within 0.01 (no DP) and 0.03 (DP) of the peer;
* **``f``** (cross-fitted logistic ``f_platform`` on the platform group) and
  **``f + g``**: the gated combiner fitted only on the nodes' hold-out merchants
  (out-of-sample ``g``), applied to the test merchants; target: ``f + g ≥ f``.

``g`` on the test and hold-out merchants is computed here from the saved model
and encoder (what ``fedgate fl score`` returns through the nodes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from federation import is_holdout
from federation.metrics import auc
from federation.models import fit_gated_combiner, platform_scores, predict_proba
from federation.realdata import RealDataset
from federation.schema import LABEL, MERCHANT_ID

__all__ = ["byod_section", "CATEGORIES"]

# ERP categories whose fields give each data set's ERP columns one slot each.
CATEGORIES = {
    "credit": ("cost_of_goods", "labour_cost", "logistics_cost", "cash_and_debt"),
    "GMSC": ("cost_of_goods", "labour_cost", "logistics_cost", "inventory", "cash_and_debt"),
    "PAKDD": ("margins", "cash_and_debt"),
}


def _central_lr(train: pd.DataFrame, test: pd.DataFrame, columns: Sequence[str]) -> float:
    model = make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler(),
                          LogisticRegression(max_iter=2000))
    model.fit(train[list(columns)], train[LABEL])
    return float(auc(test[LABEL], model.predict_proba(test[list(columns)])[:, 1]))


def _g(model_path: Path, arch: str, frame: pd.DataFrame, to_slot: dict[str, str]) -> np.ndarray:
    from bench.federation import load_job_model

    model, enc = load_job_model(model_path, arch)
    return predict_proba(model, enc.transform(frame[list(to_slot)].rename(columns=to_slot)))


def _dataset_rows(name: str, data: RealDataset, cfg: Any, work: Path, digest: Any,
                  *, lr: float, batch_size: int, dp_batch_size: int) -> tuple[list[Any], list[Any]]:
    from bench.federation import (
        DP_DELTA,
        DP_EPSILON,
        _auc_row,
        _node_world,
        _row,
        _slots,
        run_flower_job,
    )

    columns = list(data.erp_columns)
    to_slot = _slots(columns, CATEGORIES[name])
    tables = {k: data.train.isv_table(k, with_platform=False) for k in data.isvs}
    tables = {k: t for k, t in tables.items() if len(t)}
    train = pd.concat(tables.values(), ignore_index=True)
    test_erp = data.test.pooled(with_platform=False)
    digest.add(f"byod.{name}.rows", [len(train), len(test_erp), int(train[LABEL].sum())])
    peer = _central_lr(train, test_erp, columns)
    rows: list[Any] = [_auc_row(name, "centralized logistic, raw ERP features", peer, "—",
                                float("nan"))]
    labels = train[[MERCHANT_ID, LABEL]]
    world = _node_world(work, f"byod-{name}", tables, to_slot, labels)
    common = {"categories": ",".join(CATEGORIES[name]), "rounds": cfg.rounds,
              "n-bins": cfg.n_bins, "seed": cfg.seed, "local-epochs": 2, "arch": "logistic"}
    jobs = []
    fed, timing = run_flower_job(world, f"byod-{name}-fed", lr=lr,
                                 **{"batch-size": batch_size}, **common)
    jobs.append(timing)
    dp, timing = run_flower_job(world, f"byod-{name}-dp", lr=cfg.dp_lr, **{
        "batch-size": dp_batch_size, "dp-epsilon": DP_EPSILON, "dp-delta": DP_DELTA}, **common)
    jobs.append(timing)
    y_test = test_erp[LABEL].to_numpy()
    g_fed = _g(fed.model_path, "logistic", test_erp, to_slot)
    g_dp = _g(dp.model_path, "logistic", test_erp, to_slot)
    auc_fed, auc_dp = float(auc(y_test, g_fed)), float(auc(y_test, g_dp))
    eps = max(dp.epsilon.values()) if dp.epsilon else float("nan")
    rows.append(_auc_row(name, f"federated g, no DP ({cfg.rounds} rounds, best round)", auc_fed,
                         "centralized logistic", peer, "≥ peer − 0.01", auc_fed >= peer - 0.01))
    rows.append(_auc_row(name, f"federated g, DP ε={eps:.2f}", auc_dp, "centralized logistic",
                         peer, "≥ peer − 0.03", auc_dp >= peer - 0.03))
    # f + g on the test merchants: f cross-fitted on the train split, the combiner fitted on
    # the nodes' hold-out merchants only (their g is out of sample).
    plat = pd.concat([data.train.platform, data.test.platform], ignore_index=True)
    is_test = plat[MERCHANT_ID].isin(set(data.test.platform[MERCHANT_ID])).to_numpy()
    frame = plat[[MERCHANT_ID, *data.platform_columns]].copy()
    frame.insert(1, "label", np.where(is_test, np.nan, plat[LABEL].astype(float)))
    f = platform_scores(frame, kind="logistic", seed=cfg.seed)["f"].to_numpy()
    erp_all = pd.concat([train, test_erp], ignore_index=True)
    g_all = pd.Series(_g(fed.model_path, "logistic", erp_all, to_slot),
                      index=erp_all[MERCHANT_ID].astype(str))
    g = plat[MERCHANT_ID].astype(str).map(g_all).to_numpy(dtype=float)
    hold = plat[MERCHANT_ID].astype(str).map(is_holdout).to_numpy(dtype=bool)
    gated = fit_gated_combiner(f[~is_test], g[~is_test], frame["label"].to_numpy()[~is_test],
                               hold[~is_test])
    est = gated.predict(f[is_test], g[is_test])
    y_plat = plat[LABEL].to_numpy()[is_test]
    auc_f = float(auc(y_plat, est.platform_only))
    auc_fg = float(auc(y_plat, est.with_erp))
    rows.append(_row(name, "f_platform logistic (cross-fitted), test", auc_f, "AUC"))
    verdict = "open" if gated.open else "closed: f alone"
    rows.append(_auc_row(name, f"f + g, gated combiner on hold-out g (gate {verdict})", auc_fg,
                         "f", auc_f, "≥ f", auc_fg >= auc_f - 1e-12))
    return rows, jobs


def byod_section(cfg: Any, work: Path, digest: Any) -> tuple[list[Any], list[Any]]:
    """credit_data (and, at full size, GMSC and PAKDD) through the two-model story."""
    from federation.byod_example import load_credit_data
    from federation.realdata import load_gmsc, load_pakdd

    rows, jobs = _dataset_rows("credit", load_credit_data(seed=cfg.seed), cfg, work, digest,
                               lr=0.05, batch_size=64, dp_batch_size=64)
    if cfg.quick:
        return rows, jobs
    for name, data in (("GMSC", load_gmsc(seed=cfg.seed)),
                       ("PAKDD", load_pakdd(n_isvs=cfg.pakdd_isvs, seed=cfg.seed))):
        r, j = _dataset_rows(name, data, cfg, work, digest, lr=cfg.lr,
                             batch_size=cfg.batch_size, dp_batch_size=cfg.dp_batch_size)
        rows += r
        jobs += j
    return rows, jobs
