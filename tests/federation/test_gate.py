"""The gated combiner (out-of-sample g only) and cross-fitted platform scores."""

from __future__ import annotations

import numpy as np
import pandas as pd

from federation.models import fit_gated_combiner, platform_scores


def _scores(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(a + b - 1)))).astype(float)
    f = 1 / (1 + np.exp(-(a - 1)))
    g = 1 / (1 + np.exp(-(b - 1)))
    hold = rng.random(n) < 0.25
    return f, g, y, hold


def test_an_informative_g_opens_the_gate() -> None:
    """When g carries signal f lacks, cross-validated AUC rises and the gate opens."""
    f, g, y, hold = _scores(4000)
    gated = fit_gated_combiner(f, g, y, hold)
    assert gated.open and gated.cv_auc_f_plus_g > gated.cv_auc_f
    assert gated.fit_merchants == int((hold & np.isfinite(g)).sum())
    est = gated.predict(f, g)
    assert not np.allclose(est.with_erp, est.platform_only)


def test_a_useless_g_closes_the_gate_and_lines_use_f() -> None:
    """Pure-noise g does not beat f: the gate closes and both PDs are f's."""
    f, _, y, hold = _scores(4000)
    noise = np.random.default_rng(9).random(4000)
    gated = fit_gated_combiner(f, noise, y, hold, min_gain=0.005)
    est = gated.predict(f, noise)
    assert not gated.open
    assert np.array_equal(est.with_erp, est.platform_only)


def test_in_sample_g_never_enters_the_fit() -> None:
    """In-sample g (merchants not held out) is ignored: leaking labels there changes nothing."""
    f, g, y, hold = _scores(3000)
    leaked = np.where(hold, g, y * 0.98 + 0.01)  # a perfect in-sample g outside the hold-out
    a = fit_gated_combiner(f, g, y, hold).predict(f, g)
    b = fit_gated_combiner(f, leaked, y, hold).predict(f, g)
    assert np.allclose(a.with_erp, b.with_erp)


def test_platform_scores_are_out_of_fold_for_labelled_merchants() -> None:
    """Labelled merchants get cross-fitted f, unlabelled ones a full model's; text is a category."""
    rng = np.random.default_rng(1)
    n = 600
    x = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * x))).astype(float)
    y[:100] = np.nan
    frame = pd.DataFrame({"merchant_id": [f"m{i}" for i in range(n)], "label": y, "x": x,
                          "home": rng.choice(["rent", "own", None], size=n)})
    out = platform_scores(frame, folds=3)
    assert out["labelled"].sum() == 500 and out["f"].notna().all()
    assert 0.7 < out.attrs["oof_auc"] < 0.95
