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
