"""The node's one-hot rows kept as codes train, evaluate and score exactly as the dense matrix.

Issue 11 (scale): a dense one-hot matrix costs ~1.8 kB per merchant at the node. The
node now keeps :class:`federation.onehot.OneHotRows`; these tests pin that nothing a
node computes changes: the same dense rows, the same DP-SGD and plain-SGD weights for
the same generator, the same predictions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from federation.dp import train_dp_sgd, train_plain_sgd
from federation.features import BinEncoder
from federation.models import build_g_erp, get_weights, predict_proba, set_weights, train_local
from federation.onehot import OneHotRows
from federation.specs import DPBudget


def _frame(n: int, seed: int = 0) -> tuple[pd.DataFrame, BinEncoder, np.ndarray]:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({c: rng.normal(size=n) for c in ("a", "b", "c")})
    df.loc[rng.random(n) < 0.1, "b"] = np.nan  # the missing-value bin
    enc = BinEncoder({c: np.quantile(df[c].dropna(), [0.2, 0.4, 0.6, 0.8]) for c in df})
    y = (df["a"].fillna(0) + rng.normal(scale=0.5, size=n) > 0.5).astype(np.float32).to_numpy()
    return df, enc, y


def test_rows_are_the_dense_matrix() -> None:
    df, enc, _ = _frame(500)
    dense, rows = enc.transform(df), enc.transform_rows(df)
    assert rows.shape == dense.shape and len(rows) == 500 and rows.ndim == 2
    assert np.array_equal(rows.toarray(), dense)
    idx = np.array([7, 3, 3, 499, 0])
    assert np.array_equal(rows[idx], dense[idx])
    assert np.array_equal(rows[10:20], dense[10:20])
    assert np.array_equal(rows[dense[:, 0] == 1.0], dense[dense[:, 0] == 1.0])
    assert rows[idx].dtype == np.float32
    # What it is for: the codes are a small fraction of the dense matrix's bytes.
    assert rows.codes.nbytes * 10 <= dense.nbytes


def test_codes_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError):
        OneHotRows(np.array([[0, 5]]), 5)
    with pytest.raises(ValueError):
        OneHotRows(np.array([0, 1]), 5)


def _twin(arch: str, n_inputs: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(3)
    a = build_g_erp(arch, n_inputs)
    b = build_g_erp(arch, n_inputs)
    set_weights(b, get_weights(a))
    return a, b


@pytest.mark.parametrize("arch", ["logistic", "mlp"])
def test_dp_sgd_on_codes_gives_the_same_weights(arch: str) -> None:
    df, enc, y = _frame(600)
    a, b = _twin(arch, enc.n_outputs)
    common = dict(epochs=2, batch_size=64, lr=0.5, budget=DPBudget(epsilon=3.0), history=(),
                  rounds_left=3, noise_multiplier=1.1)
    ra = train_dp_sgd(a, enc.transform(df), y, generator=torch.Generator().manual_seed(9),
                      **common)  # type: ignore[arg-type]
    rb = train_dp_sgd(b, enc.transform_rows(df), y, generator=torch.Generator().manual_seed(9),
                      **common)  # type: ignore[arg-type]
    assert ra.steps == rb.steps and ra.loss == rb.loss
    for wa, wb in zip(get_weights(a), get_weights(b), strict=True):
        assert np.array_equal(wa, wb)
    # And training moved the weights at all (so the equality is not of two untouched models).
    _, fresh = _twin(arch, enc.n_outputs)
    assert any(not np.array_equal(wa, wf)
               for wa, wf in zip(get_weights(a), get_weights(fresh), strict=True))


def test_plain_sgd_and_local_training_on_codes_give_the_same_weights() -> None:
    df, enc, y = _frame(600, seed=1)
    for train in (
        lambda m, X: train_plain_sgd(m, X, y, epochs=2, batch_size=50, lr=0.3, seed=4),
        lambda m, X: train_local(m, X, y, epochs=2, batch_size=50, lr=0.05, seed=4),
    ):
        a, b = _twin("mlp", enc.n_outputs)
        assert train(a, enc.transform(df)) == train(b, enc.transform_rows(df))
        for wa, wb in zip(get_weights(a), get_weights(b), strict=True):
            assert np.array_equal(wa, wb)


def test_predictions_on_codes_are_the_same() -> None:
    df, enc, _ = _frame(1000, seed=2)
    model, _ = _twin("mlp", enc.n_outputs)
    assert np.array_equal(predict_proba(model, enc.transform(df)),
                          predict_proba(model, enc.transform_rows(df)))
