"""Tests for g_erp, the local trainer, f_platform and the combiner."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from federation._errors import ModelError
from federation.metrics import auc
from federation.models import (
    Combiner,
    build_g_erp,
    fit_f_platform,
    get_weights,
    out_of_fold_f_scores,
    predict_proba,
    set_weights,
    train_local,
)


def _binary_data(n: int = 2000, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = (rng.random((n, d)) < 0.3).astype(np.float32)
    w = rng.normal(size=d) * 2
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ w - 1)))).astype(np.float32)
    return X, y


@pytest.mark.parametrize("arch", ["logistic", "mlp"])
def test_train_local_learns(arch: str) -> None:
    """A few epochs reach a clearly better than chance AUC and return a finite loss."""
    X, y = _binary_data()
    torch.manual_seed(0)
    model = build_g_erp(arch, X.shape[1], hidden=8)

    loss = train_local(model, X, y, epochs=5, batch_size=64, lr=0.05)

    assert np.isfinite(loss)
    assert auc(y, predict_proba(model, X)) > 0.75


def test_forward_returns_logits_of_shape_n() -> None:
    """forward gives one logit per row."""
    model = build_g_erp("mlp", 5)

    out = model(torch.zeros(7, 5))

    assert out.shape == (7,)


def test_train_local_is_deterministic_for_a_seed() -> None:
    """Same initial weights and seed give the same weights."""
    X, y = _binary_data(n=500)
    a, b = build_g_erp("logistic", X.shape[1]), build_g_erp("logistic", X.shape[1])
    set_weights(b, get_weights(a))

    train_local(a, X, y, epochs=2, batch_size=32, lr=0.01, seed=3)
    train_local(b, X, y, epochs=2, batch_size=32, lr=0.01, seed=3)

    for wa, wb in zip(get_weights(a), get_weights(b), strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_fedprox_term_keeps_weights_closer_to_entry() -> None:
    """A large proximal mu keeps the weights nearer the weights at entry."""
    X, y = _binary_data(n=800)
    start = build_g_erp("logistic", X.shape[1])
    plain, prox = build_g_erp("logistic", X.shape[1]), build_g_erp("logistic", X.shape[1])
    set_weights(plain, get_weights(start))
    set_weights(prox, get_weights(start))

    train_local(plain, X, y, epochs=3, batch_size=32, lr=0.05)
    train_local(prox, X, y, epochs=3, batch_size=32, lr=0.05, proximal_mu=10.0)

    def dist(m: torch.nn.Module) -> float:
        return sum(float(((a - b) ** 2).sum()) for a, b in zip(get_weights(m),
                                                               get_weights(start), strict=True))
    assert dist(prox) < dist(plain) / 2


def test_set_weights_rejects_wrong_shapes() -> None:
    """Weights of another shape are refused with BAD_WEIGHTS."""
    model = build_g_erp("logistic", 4)

    with pytest.raises(ModelError) as err:
        set_weights(model, [np.zeros((1, 5)), np.zeros(1)])

    assert err.value.code == "BAD_WEIGHTS"


def test_build_g_erp_unknown_arch() -> None:
    """An unknown architecture is a ValueError naming the choices."""
    with pytest.raises(ValueError, match="arch"):
        build_g_erp("transformer", 4)


@pytest.mark.parametrize("kind", ["hgb", "logistic"])
def test_f_platform_fits_platform_frame(kind: str) -> None:
    """f_platform uses numeric and sector columns and ranks defaults above chance."""
    rng = np.random.default_rng(1)
    n = 1500
    sales = rng.lognormal(10, 1, n)
    df = pd.DataFrame({"sales": sales, "rating": rng.normal(4.5, 0.3, n),
                       "sector": rng.choice(["food", "toys"], n)})
    y = (rng.random(n) < 1 / (1 + np.exp(np.log(sales) - 9))).astype(int)

    model = fit_f_platform(df, y, kind=kind)

    assert auc(y, model.predict_proba(df)) > 0.7


def test_out_of_fold_scores_cover_every_row() -> None:
    """Cross-fitted f scores exist for every row and still rank above chance."""
    rng = np.random.default_rng(3)
    n = 600
    x = rng.normal(size=n)
    df = pd.DataFrame({"sales": x, "sector": rng.choice(["food", "toys"], n)})
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * x))).astype(int)

    scores = out_of_fold_f_scores(df, y, folds=3, kind="logistic")

    assert scores.shape == (n,) and np.isfinite(scores).all()
    assert auc(y, scores) > 0.7


def test_combiner_uses_g_when_present_and_falls_back_without() -> None:
    """With ERP scores the combined PD ranks better; merchants without g keep the platform PD."""
    rng = np.random.default_rng(2)
    n = 4000
    h = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(2 + 1.5 * h))).astype(int)
    f = 1 / (1 + np.exp(2 + 0.5 * (h + rng.normal(scale=2, size=n))))
    g = 1 / (1 + np.exp(2 + 1.5 * (h + rng.normal(scale=0.3, size=n))))
    g[: n // 4] = np.nan

    comb = Combiner().fit(f, g, y)
    pd_est = comb.predict(f, g)

    has = pd_est.has_erp
    assert has.sum() == n - n // 4
    np.testing.assert_array_equal(pd_est.with_erp[~has], pd_est.platform_only[~has])
    assert auc(y[has], pd_est.with_erp[has]) > auc(y[has], pd_est.platform_only[has]) + 0.05


def test_models_package_all_is_pinned() -> None:
    """federation.models exports exactly its public names."""
    import federation.models

    assert set(federation.models.__all__) == {
        "G_ARCHS", "LogisticG", "MlpG", "build_g_erp", "train_local", "predict_proba",
        "get_weights", "set_weights", "F_KINDS", "PlatformModel", "fit_f_platform",
        "out_of_fold_f_scores",
        "Combiner", "PDEstimates", "GatedCombiner", "fit_gated_combiner", "platform_scores"}
