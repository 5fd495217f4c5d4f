"""Standardisation read off the nodes' DP grid histograms, and what a node accepts of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation import DataError, SpecError
from federation.features import BinEncoder, QuantileSketch
from federation.node import PUBLIC_GRID, dp_sketch, encoder_problem
from federation.specs import get_spec, load_spec_file, spec_from_run_config, spec_to_run_config
from federation.standardise import (
    CLIP,
    StandardEncoder,
    encoder_from_arrays,
    make_encoder,
    standard_problem,
)


def _frame(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.lognormal(10, 0.5, n)  # money-like, heavy right tail
    y = rng.normal(0.2, 0.05, n)  # a ratio, partly negative-free
    y[: n // 10] = np.nan
    return pd.DataFrame({"x": x, "y": y})


def test_moments_come_from_the_dp_sketch_within_grid_resolution() -> None:
    """Median and IQR/1.349 read off noisy grid counts land within a few grid cells of truth."""
    df = _frame()
    sketch = dp_sketch(df, ["x", "y"], noise_multiplier=8.0, rng=np.random.default_rng(1))
    enc = make_encoder(QuantileSketch.merge([sketch]), scaling="standardise", n_bins=20)
    assert isinstance(enc, StandardEncoder) and enc.columns == ["x", "y"]
    for col in ("x", "y"):
        mean, scale = enc.params[col]
        q1, true_mean, q3 = df[col].quantile([0.25, 0.5, 0.75])
        true_std = (q3 - q1) / 1.349
        assert abs(mean / true_mean - 1) < 0.1 and abs(scale / true_std - 1) < 0.2
        assert mean in set(PUBLIC_GRID.tolist()) and scale in set(PUBLIC_GRID.tolist())
    assert standard_problem(enc, ["x", "y"], max_bins=20) is None
    # The bins default is untouched.
    assert isinstance(make_encoder(QuantileSketch.merge([sketch]), scaling="bins", n_bins=5),
                      BinEncoder)


def test_transform_has_levels_values_and_a_missing_indicator() -> None:
    """Rounded, clipped z per feature (at most ``levels`` values) and 0 + flag when missing."""
    df = _frame()
    enc = StandardEncoder({"x": (float(PUBLIC_GRID[600]), float(PUBLIC_GRID[560])),
                           "y": (0.0, 1.0)}, levels=9)
    out = enc.transform(df)
    assert out.shape == (len(df), 4) and enc.output_names()[1] == "x[missing]"
    assert len(np.unique(out[:, 0])) <= 9 and np.abs(out[:, 0]).max() <= CLIP
    missing = df["y"].isna().to_numpy()
    assert (out[missing, 2] == 0).all() and (out[:, 3] == missing).all()
    back = encoder_from_arrays(enc.to_arrays())
    assert isinstance(back, StandardEncoder) and back.params == enc.params and back.levels == 9
    with pytest.raises(DataError):
        StandardEncoder.from_arrays({"0000:x:standard": np.array([1.0, -1.0, 9.0])})


def test_a_crafted_standardiser_reads_no_more_than_a_grid_cell() -> None:
    """The curious platform centres a tiny scale on one merchant's value to read it finely.

    The node moves every value to its public grid cell first, so two values in one
    cell give the same input whatever the encoder. Positive control: without that
    step the crafted encoder separates them.
    """
    cell = int(np.searchsorted(PUBLIC_GRID, 123_456.0))
    lo, hi = PUBLIC_GRID[cell - 1], PUBLIC_GRID[cell]
    a, b = lo + (hi - lo) * 0.3, lo + (hi - lo) * 0.6  # two merchants, one grid cell
    df = pd.DataFrame({"x": [a, b]})
    tiny = float(PUBLIC_GRID[PUBLIC_GRID > 0][0])  # the smallest positive grid value
    crafted = StandardEncoder({"x": (float(a), tiny)}, levels=20)
    out = crafted.transform(df)
    assert out[0, 0] == out[1, 0]
    leaky = np.clip((df["x"].to_numpy() - a) / tiny, -CLIP, CLIP)  # no cell step
    assert leaky[0] != leaky[1]
    # The node refuses off-grid parameters and more levels than its policy's max-bins.
    assert standard_problem(crafted, ["x"], max_bins=20) == "ENCODER_OFF_GRID"
    fine = StandardEncoder({"x": (float(lo), tiny)}, levels=500)
    assert encoder_problem(fine, ["x"], max_bins=20) == "ENCODER_TOO_FINE"
    assert encoder_problem(fine, ["y"], max_bins=1000) == "ENCODER_COLUMNS"


def test_spec_scaling_option(tmp_path: Path) -> None:
    """``[preprocessing] scaling`` parses, survives the run config, rejects other values."""
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\nlabel = "y"\ncategories = ["margins"]\n\n'
                    '[preprocessing]\nbins = 12\nscaling = "standardise"\n', "utf-8")
    spec = load_spec_file(path)
    assert spec.scaling == "standardise" and spec.n_bins == 12
    assert spec_from_run_config(spec_to_run_config(spec)).scaling == "standardise"
    assert spec_from_run_config({"spec": "pd-erp", "scaling": "standardise"}).scaling == (
        "standardise")
    assert get_spec("pd-erp").scaling == "bins"
    path.write_text('name = "s"\nlabel = "y"\ncategories = ["margins"]\n\n'
                    '[preprocessing]\nscaling = "zscore"\n', "utf-8")
    with pytest.raises(SpecError):
        load_spec_file(path)


def test_a_node_trains_and_evaluates_on_a_standardiser(tmp_path: Path) -> None:
    """The real ClientApp takes a standardiser from the message, trains and evaluates on it;
    the same model with a too-fine standardiser is refused by the node's policy."""
    from dataclasses import replace

    from flwr.app import Array, ArrayRecord, RecordDict

    from federation.apps import ERR, build_client_app, job_record
    from federation.apps._keys import ARRAYS_KEY, ENCODER_KEY, JOB_KEY, METRICS_KEY
    from federation.models import build_g_erp, get_weights
    from federation.schema import erp_fields_for

    from ._flworld import incoming, make_world, node_context, signed_manifest

    world = make_world(tmp_path / "world")
    cats = ("margins", "cash_and_debt")
    spec = replace(get_spec("pd-erp"), categories=cats, batch_size=16, scaling="standardise")
    cols = erp_fields_for(cats)
    sketch = dp_sketch(world.erp["isv0"], cols, noise_multiplier=0.5,
                       rng=np.random.default_rng(0))
    tab = pd.read_parquet(world.labels_path)
    labels = dict(zip(tab["merchant_id"], tab["default_12m"].astype(int), strict=True))

    def message(enc: StandardEncoder, action: str, job: str) -> object:
        token = signed_manifest(world, "isv0", job_id=job, round=1, categories=cats,
                                labels=labels)
        model = build_g_erp(spec.arch, enc.n_outputs)
        return incoming(RecordDict({
            JOB_KEY: job_record(spec=spec, job_id=job, round=1, manifest=token),
            ARRAYS_KEY: ArrayRecord({str(i): Array(w) for i, w in enumerate(get_weights(model))}),
            ENCODER_KEY: ArrayRecord({k: Array(v) for k, v in enc.to_arrays().items()}),
        }), action)

    enc = make_encoder(QuantileSketch.merge([sketch]), scaling="standardise", n_bins=10)
    assert isinstance(enc, StandardEncoder)
    node = world.node("isv0")
    train = message(enc, "train", "job-std-train")
    reply = build_client_app()(train, node_context(node))
    assert not reply.has_error(), reply.error if reply.has_error() else None
    assert reply.content.array_records[ARRAYS_KEY]["0"].numpy().shape[-1] == 2 * len(cols)
    # Evaluation only of a model the node received in a job it trained in (its register).
    reply = build_client_app()(incoming(train.content, "evaluate"), node_context(node))
    assert not reply.has_error(), reply.error if reply.has_error() else None
    assert 0.0 <= reply.content.metric_records[METRICS_KEY]["auc"] <= 1.0
    fine = StandardEncoder(enc.params, levels=500)
    reply = build_client_app()(message(fine, "train", "job-std-fine"), node_context(node))
    assert reply.has_error() and reply.error.code == ERR.POLICY_REFUSED
    assert "ENCODER_TOO_FINE" in reply.error.reason
