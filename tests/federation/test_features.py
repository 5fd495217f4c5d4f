"""Tests for the federated quantile sketch and the bin encoder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from federation._errors import DataError
from federation.features import BinEncoder, QuantileSketch


def _nodes(seed: int = 0) -> list[pd.DataFrame]:
    """Four non-IID nodes: shifted, differently scaled lognormal columns with some NaN."""
    rng = np.random.default_rng(seed)
    frames = []
    for k, n in enumerate([3000, 500, 8000, 1500]):
        a = rng.lognormal(mean=k * 0.7, sigma=1.0 + 0.2 * k, size=n)
        b = rng.poisson(lam=1 + k, size=n).astype(float)
        a[rng.random(n) < 0.05] = np.nan
        frames.append(pd.DataFrame({"a": a, "b": b}))
    return frames


def test_merged_sketch_edges_close_to_pooled_quantiles() -> None:
    """Edges from merged per-node sketches sit within 1% rank of the pooled quantiles."""
    nodes = _nodes()
    pooled = pd.concat(nodes, ignore_index=True)
    sketches = [QuantileSketch.from_frame(df, ["a", "b"]) for df in nodes]

    edges = QuantileSketch.merge(sketches).bin_edges(10)

    a = np.sort(pooled["a"].dropna().to_numpy())
    ranks = np.searchsorted(a, edges["a"]) / a.size
    assert len(edges["a"]) == 9
    np.testing.assert_allclose(ranks, np.arange(1, 10) / 10, atol=0.01)


def test_merge_counts_missing_values() -> None:
    """Merged counts add the nodes' rows, missing included."""
    nodes = _nodes()
    sketches = [QuantileSketch.from_frame(df, ["a"]) for df in nodes]

    merged = QuantileSketch.merge(sketches)

    assert merged.count("a") == pytest.approx(sum(len(df) for df in nodes))


def test_sketch_round_trips_through_arrays() -> None:
    """to_arrays/from_arrays keeps columns and edges, and uses only numeric arrays."""
    sketch = QuantileSketch.from_frame(_nodes()[0], ["a", "b"])

    arrays = sketch.to_arrays()
    again = QuantileSketch.from_arrays(arrays)

    assert all(np.issubdtype(v.dtype, np.number) for v in arrays.values())
    assert again.columns == ["a", "b"]
    np.testing.assert_array_equal(again.bin_edges(5)["a"], sketch.bin_edges(5)["a"])


def test_wire_round_trip_merges_to_the_same_edges() -> None:
    """Merging sketches rebuilt from arrays gives exactly the in-process merge's edges."""
    nodes = [df.iloc[:2000] for df in _nodes(1)]  # ~100 points each, well under size
    sketches = [QuantileSketch.from_frame(df, ["a", "b"]) for df in nodes]

    wire = [QuantileSketch.from_arrays(s.to_arrays()) for s in sketches]
    merged, merged_wire = QuantileSketch.merge(sketches), QuantileSketch.merge(wire)

    assert [s.size for s in wire] == [s.size for s in sketches]
    for col in ("a", "b"):
        np.testing.assert_array_equal(merged_wire.bin_edges(20)[col], merged.bin_edges(20)[col])


@pytest.mark.parametrize(
    ("size", "why"),
    [
        (None, "lack"),
        (np.array([2.5]), "integer"),
        (np.array([1.0]), "integer"),
        (np.array([256.0, 256.0]), "integer"),
        (np.array([3.0]), "more than size"),
    ],
)
def test_bad_wire_size_refused(size: np.ndarray | None, why: str) -> None:
    """A missing, non-integer, too small or multi-valued size is refused with BAD_SKETCH."""
    arrays = QuantileSketch.from_frame(_nodes()[0], ["a"]).to_arrays()
    del arrays["size"]
    if size is not None:
        arrays["size"] = size

    with pytest.raises(DataError) as err:
        QuantileSketch.from_arrays(arrays)

    assert err.value.code == "BAD_SKETCH" and why in str(err.value)


def test_tied_column_gets_fewer_edges() -> None:
    """A count column with heavy ties gets deduplicated edges below its maximum."""
    df = pd.DataFrame({"c": [0.0] * 80 + [1.0] * 15 + [2.0] * 5})

    edges = QuantileSketch.from_frame(df, ["c"]).bin_edges(10)["c"]

    assert set(edges.tolist()) <= {0.0, 1.0} and 0.0 in edges.tolist()


def test_bad_sketch_arrays_refused() -> None:
    """Unknown keys are refused with BAD_SKETCH."""
    with pytest.raises(DataError) as err:
        QuantileSketch.from_arrays({"rows": np.zeros(3)})

    assert err.value.code == "BAD_SKETCH"


def test_bin_encoder_one_hot_with_missing_bin() -> None:
    """Each row has exactly one 1 per feature, edges are right-closed, NaN goes to the last bin."""
    enc = BinEncoder({"a": np.array([1.0, 2.0]), "b": np.array([])})
    df = pd.DataFrame({"a": [0.5, 1.0, 1.5, 3.0, np.nan], "b": [1.0, 2.0, 3.0, np.nan, 0.0]})

    X = enc.transform(df)

    assert enc.n_outputs == 4 + 2
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X[:, :4].argmax(axis=1), [0, 0, 1, 2, 3])
    np.testing.assert_array_equal(X[:, 4:].argmax(axis=1), [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(X.sum(axis=1), np.full(5, 2.0))


def test_bin_encoder_round_trip_and_missing_column() -> None:
    """The encoder round-trips through arrays; a missing input column raises with a code."""
    enc = BinEncoder({"a": np.array([1.0, 2.0]), "b": np.array([5.0])})

    again = BinEncoder.from_arrays(enc.to_arrays())

    assert again.columns == ["a", "b"] and again.n_outputs == enc.n_outputs
    with pytest.raises(DataError) as err:
        again.transform(pd.DataFrame({"a": [1.0]}))
    assert err.value.code == "MISSING_COLUMNS"


def test_bin_encoder_rejects_unsorted_edges() -> None:
    """Edges must be strictly increasing."""
    with pytest.raises(ValueError):
        BinEncoder({"a": np.array([2.0, 1.0])})


@pytest.mark.parametrize("n", [19, 20, 41, 500, 8000])
def test_every_point_is_a_mean_of_at_least_k_rows(n: int) -> None:
    """Points weigh >= k rows, are never a row's own value, and all rows are counted."""
    rng = np.random.default_rng(n)
    x = rng.lognormal(size=n)
    x[:3] = np.nan

    sketch = QuantileSketch.from_frame(pd.DataFrame({"a": x}), ["a"], min_rows=20)
    arrays = sketch.to_arrays()

    values, weights = arrays["0000:a:values"], arrays["0000:a:weights"]
    assert (weights >= 20).all() and values.size <= (n - 3) // 20
    assert not np.isin(values, x).any()
    assert weights.sum() + arrays["0000:a:suppressed"][0] == n - 3
    assert sketch.count("a") == n
