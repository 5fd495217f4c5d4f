"""Federated feature statistics: a k-anonymous mergeable quantile sketch and a bin encoder.

Bin edges must come from statistics that nodes send, never from pooled rows,
and a statistic that leaves a node must never be one row's value. Each node
summarises every numeric column as a :class:`QuantileSketch`: the sorted
non-missing values are cut into consecutive buckets of at least ``min_rows``
rows (:data:`DEFAULT_MIN_BUCKET_ROWS`, and at least ``n / size`` rows), and each
bucket leaves as one point, the **mean** of its values, weighted by its row
count. Runs of tied values are never split across buckets while a bucket can
close at a run boundary, so a value held by a whole bucket (a count or flag
column's 0) leaves exactly, as the mean of at least ``min_rows`` equal values.
A column with fewer than ``min_rows`` non-missing values sends no points at
all, only its counts. Points are therefore k-anonymous aggregates (k =
``min_rows``): none is an individual row's value.

The server concatenates the nodes' points (:meth:`QuantileSketch.merge`),
compresses them back to ``size`` points, and reads bin edges off the merged
weighted distribution. A bucket mean lies inside its bucket's value range, so
the rank error of an edge is at most one bucket (``max(min_rows, n / size)``
rows of a node) plus ``1 / size`` per merge, far below the width of a decile
bin. Not covered: two sketches of cohorts that differ by one merchant could be
differenced (k-anonymity is not differential privacy).

:class:`BinEncoder` turns a frame into one-hot bins per feature (``len(edges) + 1``
value bins and one missing-value bin), the input the ``g_erp`` models learn on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._errors import DataError
from .onehot import OneHotRows

__all__ = ["DEFAULT_MIN_BUCKET_ROWS", "DEFAULT_SKETCH_SIZE", "QuantileSketch", "BinEncoder"]

DEFAULT_SKETCH_SIZE = 256
"""Points kept per column; rank error of the merged edges is about 1 / 256."""

DEFAULT_MIN_BUCKET_ROWS = 20
"""k: rows every sketch point aggregates at least; fewer non-missing rows send no points."""

_KEY = re.compile(r"^(\d{4}):(.+):(values|weights|missing|suppressed|edges)$")
_PARTS = frozenset({"values", "weights", "missing", "suppressed"})
# The sketch-level point budget travels too: merge() compresses to it, so inferring
# it from the points received would make a wire merge differ from an in-process one.
_SIZE_KEY = "size"


def _column_values(df: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64 with NaN for missing (works for nullable Int64 too)."""
    if column not in df.columns:
        raise DataError(
            f"column {column!r} is not in the frame", code="MISSING_COLUMNS", column=column
        )
    try:
        return np.asarray(df[column].to_numpy(dtype=np.float64, na_value=np.nan))
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"column {column!r} is not numeric: {exc}", code="WRONG_TYPE", column=column
        ) from exc


def _weighted_points(
    values: np.ndarray, weights: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Compress weighted points to ``k`` points at mid-rank quantile levels."""
    total = float(weights.sum())
    if values.size == 0 or total <= 0.0:
        return np.empty(0), np.empty(0)
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    levels = (np.arange(k) + 0.5) / k * total
    return _step_quantile(v, w, levels), np.full(k, total / k)


def _bucket_means(
    sorted_values: np.ndarray, size: int, min_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """k-anonymous points: means of consecutive sorted buckets of at least ``min_rows`` rows.

    A bucket closes at the end of a run of tied values once it holds ``target =
    max(min_rows, ceil(n / size))`` rows; a run of ``target`` rows or more gets its
    own bucket (its exact value, shared by at least ``min_rows`` rows) after the
    open bucket is closed, or merged backwards if that bucket is still short. A
    short last bucket joins the one before. Fewer than ``min_rows`` values give
    no points.
    """
    n = sorted_values.size
    if n < min_rows or n == 0:
        return np.empty(0), np.empty(0)
    target = max(min_rows, -(-n // size))
    # Run boundaries: indices where the sorted value changes, plus the end.
    change = np.flatnonzero(np.diff(sorted_values)) + 1
    run_ends = np.append(change, n)
    cuts: list[int] = []  # exclusive end index of each bucket
    start = 0  # start of the open bucket
    run_start = 0
    for end in run_ends.tolist():
        run = end - run_start
        if run >= target and run_start > start:
            # A big tie: close the open bucket before it so the tie's value stays exact; a
            # short open bucket folds into the previous one (or, if none, into the tie).
            if run_start - start >= min_rows:
                cuts.append(run_start)
                start = run_start
            elif cuts:
                cuts[-1] = run_start
                start = run_start
        if end - start >= target:
            cuts.append(end)
            start = end
        run_start = end
    if start < n:  # a short tail joins the previous bucket
        if cuts and n - start < min_rows:
            cuts[-1] = n
        else:
            cuts.append(n)
    bounds = np.array([0] + cuts)
    counts = np.diff(bounds)
    sums = np.add.reduceat(sorted_values, bounds[:-1])
    lo, hi = sorted_values[bounds[:-1]], sorted_values[bounds[1:] - 1]
    # Rounding must not move a mean out of its bucket, nor a pure tie off its value (an
    # edge one ulp below a tied value would move the whole tie into the next bin).
    means = np.clip(sums / counts, lo, hi)
    return np.where(lo == hi, lo, means), counts.astype(np.float64)


def _step_quantile(v: np.ndarray, w: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Inverse weighted CDF: the first sorted value whose cumulative weight reaches each level.

    A step function (not interpolation) keeps tied values exact, so count and
    flag columns get edges on values that occur.
    """
    idx = np.searchsorted(np.cumsum(w), levels, side="left")
    return v[np.minimum(idx, v.size - 1)]


@dataclass(frozen=True, slots=True)
class _ColumnSketch:
    values: np.ndarray
    weights: np.ndarray
    missing: float
    suppressed: float = 0.0  # non-missing rows sent as a count only (fewer than min_rows)


def _wire_size(arr: np.ndarray | None) -> int:
    """The ``size`` array of a wire sketch as an int; ``DataError`` (``BAD_SKETCH``) if invalid."""
    if arr is None:
        raise DataError(f"sketch arrays lack the {_SIZE_KEY!r} array", code="BAD_SKETCH")
    a = np.asarray(arr, dtype=np.float64).ravel()
    if a.size != 1 or not np.isfinite(a[0]) or a[0] != np.floor(a[0]) or a[0] < 2:
        raise DataError(
            f"sketch {_SIZE_KEY!r} must be one integer >= 2, got {a.tolist()}", code="BAD_SKETCH"
        )
    return int(a[0])


class QuantileSketch:
    """Per-column weighted quantile points; mergeable across nodes.

    Parameters
    ----------
    columns : Mapping[str, _ColumnSketch]
        Use :meth:`from_frame`, :meth:`from_arrays` or :meth:`merge` to build one.
    size : int, default DEFAULT_SKETCH_SIZE
        Points kept per column.
    """

    def __init__(
        self, columns: Mapping[str, _ColumnSketch], size: int = DEFAULT_SKETCH_SIZE
    ) -> None:
        if size < 2:
            raise ValueError(f"size must be >= 2, got {size}")
        self._columns = dict(columns)
        self.size = size

    @property
    def columns(self) -> list[str]:
        """The sketched column names, in order."""
        return list(self._columns)

    def count(self, column: str) -> float:
        """Rows seen for ``column`` (non-missing plus missing)."""
        c = self._columns[column]
        return float(c.weights.sum()) + c.suppressed + c.missing

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        columns: Sequence[str],
        *,
        size: int = DEFAULT_SKETCH_SIZE,
        min_rows: int = DEFAULT_MIN_BUCKET_ROWS,
    ) -> QuantileSketch:
        """Sketch ``columns`` of a local frame; every point aggregates ``min_rows`` rows or more.

        Parameters
        ----------
        df : pandas.DataFrame
            The node's rows (already filtered to the consented cohort).
        columns : Sequence[str]
            Numeric columns to sketch.
        size : int, default DEFAULT_SKETCH_SIZE
            Most points per column.
        min_rows : int, default DEFAULT_MIN_BUCKET_ROWS
            k: the fewest rows behind one point; a column with fewer non-missing
            values sends only its counts.
        """
        if min_rows < 1:
            raise ValueError(f"min_rows must be >= 1, got {min_rows}")
        out: dict[str, _ColumnSketch] = {}
        for col in columns:
            x = _column_values(df, col)
            finite = np.sort(x[np.isfinite(x)], kind="stable")
            v, w = _bucket_means(finite, size, min_rows)
            out[col] = _ColumnSketch(
                v, w, float(x.size - finite.size), float(finite.size - w.sum())
            )
        return cls(out, size)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Numeric arrays only, for records.

        Keys: ``size`` (the point budget, one value) and, per column,
        ``NNNN:column:values|weights|missing|suppressed``.
        """
        arrays: dict[str, np.ndarray] = {_SIZE_KEY: np.array([self.size], dtype=np.float64)}
        for i, (col, c) in enumerate(self._columns.items()):
            arrays[f"{i:04d}:{col}:values"] = c.values.astype(np.float64)
            arrays[f"{i:04d}:{col}:weights"] = c.weights.astype(np.float64)
            arrays[f"{i:04d}:{col}:missing"] = np.array([c.missing], dtype=np.float64)
            arrays[f"{i:04d}:{col}:suppressed"] = np.array([c.suppressed], dtype=np.float64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> QuantileSketch:
        """Rebuild a sketch from :meth:`to_arrays` output, losslessly.

        Raises
        ------
        DataError
            ``BAD_SKETCH`` on unexpected keys, incomplete or non-finite arrays, or a
            missing/invalid ``size`` (not one integer >= 2, or below a column's points).
        """
        size = _wire_size(arrays.get(_SIZE_KEY))
        parts: dict[tuple[int, str], dict[str, np.ndarray]] = {}
        for key, arr in arrays.items():
            if key == _SIZE_KEY:
                continue
            m = _KEY.match(key)
            if m is None or m.group(3) == "edges":
                raise DataError(f"unexpected sketch array key {key!r}", code="BAD_SKETCH")
            parts.setdefault((int(m.group(1)), m.group(2)), {})[m.group(3)] = np.asarray(
                arr, dtype=np.float64
            )
        columns: dict[str, _ColumnSketch] = {}
        for (_, col), p in sorted(parts.items()):
            if (
                set(p) != _PARTS
                or p["values"].shape != p["weights"].shape
                or p["missing"].size != 1
                or p["suppressed"].size != 1
            ):
                raise DataError(
                    f"incomplete sketch arrays for column {col!r}", code="BAD_SKETCH", column=col
                )
            if not (
                np.isfinite(p["values"]).all()
                and (p["weights"] >= 0).all()
                and p["suppressed"][0] >= 0
                and p["missing"][0] >= 0
            ):
                raise DataError(
                    f"non-finite values or negative weights for {col!r}",
                    code="BAD_SKETCH",
                    column=col,
                )
            if p["values"].size > size:
                raise DataError(
                    f"column {col!r} has {p['values'].size} points, more than size={size}",
                    code="BAD_SKETCH",
                    column=col,
                )
            order = np.argsort(p["values"], kind="stable")  # quantiles() needs sorted points
            columns[col] = _ColumnSketch(
                p["values"][order],
                p["weights"][order],
                float(p["missing"][0]),
                float(p["suppressed"][0]),
            )
        return cls(columns, size)

    @staticmethod
    def merge(sketches: Sequence[QuantileSketch]) -> QuantileSketch:
        """Merge node sketches into one over the union of their rows.

        Raises
        ------
        DataError
            ``BAD_SKETCH`` when the list is empty or the sketches cover different columns.
        """
        if not sketches:
            raise DataError("nothing to merge", code="BAD_SKETCH")
        cols = sketches[0].columns
        if any(s.columns != cols for s in sketches):
            raise DataError("sketches cover different columns", code="BAD_SKETCH")
        size = max(s.size for s in sketches)
        merged: dict[str, _ColumnSketch] = {}
        for col in cols:
            parts = [s._columns[col] for s in sketches]
            v, w = _weighted_points(
                np.concatenate([p.values for p in parts]),
                np.concatenate([p.weights for p in parts]),
                size,
            )
            merged[col] = _ColumnSketch(
                v, w, sum(p.missing for p in parts), sum(p.suppressed for p in parts)
            )
        return QuantileSketch(merged, size)

    def quantiles(self, column: str, levels: Sequence[float] | np.ndarray) -> np.ndarray:
        """Approximate quantiles of the non-missing values of ``column`` at ``levels`` in [0, 1]."""
        c = self._columns[column]
        if c.values.size == 0:
            return np.full(len(levels), np.nan)
        lv = np.asarray(levels, dtype=np.float64) * c.weights.sum()
        return _step_quantile(c.values, c.weights, lv)

    def bin_edges(self, n_bins: int) -> dict[str, np.ndarray]:
        """Interior cut points at the ``1/n_bins … (n_bins-1)/n_bins`` quantiles, deduplicated.

        A column with ties (counts, flags) gets fewer edges; an all-missing or
        constant column gets none (one value bin).
        """
        if n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {n_bins}")
        levels = np.arange(1, n_bins) / n_bins
        edges: dict[str, np.ndarray] = {}
        for col in self._columns:
            q = self.quantiles(col, levels)
            q = np.unique(q[np.isfinite(q)])
            c = self._columns[col]
            if c.values.size:
                # An edge at the maximum would leave the top bin empty.
                q = q[q < c.values.max()]
            edges[col] = q
        return edges


class BinEncoder:
    """Scorecard-style encoder: per feature, one-hot quantile bins plus a missing-value bin.

    A value ``x`` falls in bin ``searchsorted(edges, x, side="left")``, i.e. bins
    are ``(-inf, e1], (e1, e2], …, (e_m, +inf)``; NaN goes to the last (missing) bin.

    Parameters
    ----------
    edges : Mapping[str, numpy.ndarray]
        Column -> increasing interior cut points (from :meth:`QuantileSketch.bin_edges`).
    """

    def __init__(self, edges: Mapping[str, np.ndarray]) -> None:
        self.edges: dict[str, np.ndarray] = {}
        for col, e in edges.items():
            arr = np.asarray(e, dtype=np.float64).ravel()
            if not np.isfinite(arr).all() or (np.diff(arr) <= 0).any():
                raise ValueError(f"edges for {col!r} must be finite and strictly increasing")
            self.edges[col] = arr
        self._offsets = np.cumsum([0] + [len(e) + 2 for e in self.edges.values()])
        self.n_outputs: int = int(self._offsets[-1])

    @property
    def columns(self) -> list[str]:
        """Input columns, in output order."""
        return list(self.edges)

    def output_names(self) -> list[str]:
        """One name per output column: ``col[<=edge]``, ``col[>edge]``, ``col[missing]``."""
        names: list[str] = []
        for col, e in self.edges.items():
            names += [f"{col}[<={v:g}]" for v in e] + [
                f"{col}[>{e[-1]:g}]" if len(e) else f"{col}[all]",
                f"{col}[missing]",
            ]
        return names

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """One-hot bins, float32 ``(n_rows, n_outputs)``; ``DataError`` on a missing column."""
        return self.transform_rows(df).toarray()

    def transform_rows(self, df: pd.DataFrame) -> OneHotRows:
        """The same matrix as :meth:`transform`, kept as each row's column codes.

        What the node trains, evaluates and scores on: dense rows are built a batch at
        a time (:mod:`federation.onehot`), so a node's memory does not grow by 1.8 kB
        per merchant.
        """
        codes = np.empty((len(df), len(self.edges)),
                         dtype=np.uint16 if self.n_outputs <= 0xFFFF else np.int64)
        for i, (col, e) in enumerate(self.edges.items()):
            x = _column_values(df, col)
            idx = np.searchsorted(e, x, side="left")
            idx[np.isnan(x)] = len(e) + 1
            codes[:, i] = self._offsets[i] + idx
        return OneHotRows(codes, self.n_outputs)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Numeric arrays only (keys ``NNNN:column:edges``), for an ArrayRecord or a config."""
        return {f"{i:04d}:{col}:edges": e.copy() for i, (col, e) in enumerate(self.edges.items())}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> BinEncoder:
        """Rebuild from :meth:`to_arrays`; raises ``DataError`` (``BAD_SKETCH``) on bad keys."""
        parts: list[tuple[int, str, np.ndarray]] = []
        for key, arr in arrays.items():
            m = _KEY.match(key)
            if m is None or m.group(3) != "edges":
                raise DataError(f"unexpected encoder array key {key!r}", code="BAD_SKETCH")
            parts.append((int(m.group(1)), m.group(2), np.asarray(arr, dtype=np.float64)))
        return cls({col: e for _, col, e in sorted(parts, key=lambda t: t[0])})
