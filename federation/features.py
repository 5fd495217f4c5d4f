"""Federated feature statistics: a mergeable quantile sketch and a scorecard-style bin encoder.

Bin edges must come from statistics that nodes send, never from pooled rows.
Each node summarises every numeric column as a :class:`QuantileSketch` — ``k``
weighted points at the local quantile levels ``(j + 1/2) / k`` (each carrying
``n / k`` rows) plus the count of missing values — and sends it as plain numeric
arrays. The server concatenates the nodes' points (:meth:`QuantileSketch.merge`),
compresses them back to ``k`` points, and reads bin edges off the merged weighted
distribution. The rank error of an edge is about ``1 / k`` per merge level, far
below the width of a decile bin.

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

__all__ = ["DEFAULT_SKETCH_SIZE", "QuantileSketch", "BinEncoder"]

DEFAULT_SKETCH_SIZE = 256
"""Points kept per column; rank error of the merged edges is about 1 / 256."""

_KEY = re.compile(r"^(\d{4}):(.+):(values|weights|missing|edges)$")


def _column_values(df: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64 with NaN for missing (works for nullable Int64 too)."""
    if column not in df.columns:
        raise DataError(f"column {column!r} is not in the frame", code="MISSING_COLUMNS",
                        column=column)
    try:
        return np.asarray(df[column].to_numpy(dtype=np.float64, na_value=np.nan))
    except (TypeError, ValueError) as exc:
        raise DataError(f"column {column!r} is not numeric: {exc}", code="WRONG_TYPE",
                        column=column) from exc


def _weighted_points(values: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """Compress weighted points to ``k`` points at mid-rank quantile levels."""
    total = float(weights.sum())
    if values.size == 0 or total <= 0.0:
        return np.empty(0), np.empty(0)
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    levels = (np.arange(k) + 0.5) / k * total
    return _step_quantile(v, w, levels), np.full(k, total / k)


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


class QuantileSketch:
    """Per-column weighted quantile points; mergeable across nodes.

    Parameters
    ----------
    columns : Mapping[str, _ColumnSketch]
        Use :meth:`from_frame`, :meth:`from_arrays` or :meth:`merge` to build one.
    size : int, default DEFAULT_SKETCH_SIZE
        Points kept per column.
    """

    def __init__(self, columns: Mapping[str, _ColumnSketch], size: int = DEFAULT_SKETCH_SIZE
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
        return float(c.weights.sum()) + c.missing

    @classmethod
    def from_frame(cls, df: pd.DataFrame, columns: Sequence[str], *,
                   size: int = DEFAULT_SKETCH_SIZE) -> QuantileSketch:
        """Sketch ``columns`` of a local frame.

        Parameters
        ----------
        df : pandas.DataFrame
            The node's rows (already filtered to the consented cohort).
        columns : Sequence[str]
            Numeric columns to sketch.
        size : int, default DEFAULT_SKETCH_SIZE
            Points per column.
        """
        out: dict[str, _ColumnSketch] = {}
        for col in columns:
            x = _column_values(df, col)
            finite = x[np.isfinite(x)]
            v, w = _weighted_points(finite, np.ones(finite.size), size)
            out[col] = _ColumnSketch(v, w, float(x.size - finite.size))
        return cls(out, size)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Numeric arrays only (keys ``NNNN:column:values|weights|missing``), for an ArrayRecord."""
        arrays: dict[str, np.ndarray] = {}
        for i, (col, c) in enumerate(self._columns.items()):
            arrays[f"{i:04d}:{col}:values"] = c.values.astype(np.float64)
            arrays[f"{i:04d}:{col}:weights"] = c.weights.astype(np.float64)
            arrays[f"{i:04d}:{col}:missing"] = np.array([c.missing], dtype=np.float64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> QuantileSketch:
        """Rebuild a sketch from :meth:`to_arrays` output; raises ``DataError`` on bad keys."""
        parts: dict[tuple[int, str], dict[str, np.ndarray]] = {}
        for key, arr in arrays.items():
            m = _KEY.match(key)
            if m is None or m.group(3) == "edges":
                raise DataError(f"unexpected sketch array key {key!r}", code="BAD_SKETCH")
            parts.setdefault((int(m.group(1)), m.group(2)), {})[m.group(3)] = np.asarray(
                arr, dtype=np.float64)
        columns: dict[str, _ColumnSketch] = {}
        size = 2
        for (_, col), p in sorted(parts.items()):
            if set(p) != {"values", "weights", "missing"} or p["values"].shape != p[
                    "weights"].shape or p["missing"].size != 1:
                raise DataError(f"incomplete sketch arrays for column {col!r}",
                                code="BAD_SKETCH", column=col)
            if not (np.isfinite(p["values"]).all() and (p["weights"] >= 0).all()):
                raise DataError(f"non-finite values or negative weights for {col!r}",
                                code="BAD_SKETCH", column=col)
            order = np.argsort(p["values"], kind="stable")  # quantiles() needs sorted points
            columns[col] = _ColumnSketch(p["values"][order], p["weights"][order],
                                         float(p["missing"][0]))
            size = max(size, p["values"].size)
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
            v, w = _weighted_points(np.concatenate([p.values for p in parts]),
                                    np.concatenate([p.weights for p in parts]), size)
            merged[col] = _ColumnSketch(v, w, sum(p.missing for p in parts))
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
                f"{col}[>{e[-1]:g}]" if len(e) else f"{col}[all]", f"{col}[missing]"]
        return names

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """One-hot bins, float32 ``(n_rows, n_outputs)``; ``DataError`` on a missing column."""
        out = np.zeros((len(df), self.n_outputs), dtype=np.float32)
        rows = np.arange(len(df))
        for i, (col, e) in enumerate(self.edges.items()):
            x = _column_values(df, col)
            idx = np.searchsorted(e, x, side="left")
            idx[np.isnan(x)] = len(e) + 1
            out[rows, self._offsets[i] + idx] = 1.0
        return out

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
