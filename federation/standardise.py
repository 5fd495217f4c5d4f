"""Standardisation from the nodes' DP grid histograms: the ``standardise`` preprocessing.

A spec's ``[preprocessing] scaling = "standardise"`` replaces quantile bins by
one standardised value per feature plus a missing-value indicator. Mean and
standard deviation come from the merged sketch the nodes already release in
round 0 (:func:`federation.node.dp_sketch`: Gaussian-noised counts on the public
grid, charged to every merchant's ε at the node): the centre is the merged
median and the scale the interquartile range / 1.349 (robust standardisation;
a mean would be dragged by the rare empty cell whose noise clears the
threshold, and by money's heavy tail). Reading quantiles off those noisy
counts is post-processing, so standardisation costs no ε beyond the sketch,
and no node ever sends an exact mean or variance of its cohort.

What a node computes from a row is bounded as for bins. :meth:`StandardEncoder.transform`
first moves ``x`` to its public grid cell (the cell a DP sketch counts it in),
clips ``z = (cell - mean) / scale`` to ``[-CLIP, CLIP]`` and rounds it to one
of ``levels`` evenly spaced values (plus 0 for missing, with its indicator). A
score therefore depends on a row's value only through its grid cell and
through at most ``levels`` values per feature, like a bin encoder whose edges
are grid values, whatever mean and scale a server sends. The node refuses an
encoder with more levels than its policy's ``max-bins``, or with a mean or
scale that is not a public grid value (:func:`standard_problem`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ._errors import DataError
from .features import BinEncoder, QuantileSketch
from .features import _column_values as column_values  # noqa: PLC2701 - same package

__all__ = [
    "CLIP",
    "SCALINGS",
    "StandardEncoder",
    "encoder_from_arrays",
    "make_encoder",
    "standard_problem",
]

SCALINGS = ("bins", "standardise")
"""The preprocessing a spec may name: quantile bins (default) or standardisation."""

CLIP = 4.0
"""Standardised values are clipped to ``[-CLIP, CLIP]`` before rounding to a level."""

_KEY = re.compile(r"^(\d{4}):(.+):standard$")
_IQR_PER_SIGMA = 1.349  # interquartile range of a normal distribution, in standard deviations


def _grid() -> np.ndarray:
    from .node import PUBLIC_GRID

    return PUBLIC_GRID


def _cells(x: np.ndarray) -> np.ndarray:
    """Each value moved up to its public grid cell's value (clamped to the grid)."""
    grid = _grid()
    return grid[np.minimum(np.searchsorted(grid, x, side="left"), grid.size - 1)]


def _snap(x: float) -> float:
    """The smallest public grid value >= ``x`` (clamped to the grid)."""
    grid = _grid()
    return float(grid[min(int(np.searchsorted(grid, x, side="left")), grid.size - 1)])


class StandardEncoder:
    """Per feature: a standardised value rounded to ``levels`` steps, and a missing indicator.

    Parameters
    ----------
    params : Mapping[str, tuple[float, float]]
        Column -> ``(mean, scale)``; ``scale > 0``.
    levels : int, default 20
        Distinct standardised values per feature (at least 2), evenly spaced over
        ``[-CLIP, CLIP]``.
    """

    def __init__(self, params: Mapping[str, tuple[float, float]], levels: int = 20) -> None:
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        self.params: dict[str, tuple[float, float]] = {}
        for col, (mean, scale) in params.items():
            if not (np.isfinite(mean) and np.isfinite(scale) and scale > 0):
                raise ValueError(f"standardisation of {col!r} needs a finite mean and scale > 0")
            self.params[col] = (float(mean), float(scale))
        self.levels = int(levels)
        self.n_outputs: int = 2 * len(self.params)

    @property
    def columns(self) -> list[str]:
        """Input columns, in output order."""
        return list(self.params)

    def output_names(self) -> list[str]:
        """``col[z]`` and ``col[missing]`` per column."""
        return [n for c in self.params for n in (f"{c}[z]", f"{c}[missing]")]

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """float32 ``(n_rows, 2 × columns)``: rounded clipped z (0 if missing), missing flag."""
        out = np.zeros((len(df), self.n_outputs), dtype=np.float32)
        step = 2 * CLIP / (self.levels - 1)
        for i, (col, (mean, scale)) in enumerate(self.params.items()):
            x = column_values(df, col)
            missing = np.isnan(x)
            cell = _cells(np.where(missing, mean, x))
            z = np.clip((cell - mean) / scale, -CLIP, CLIP)
            z = np.round((z + CLIP) / step) * step - CLIP
            out[:, 2 * i] = np.where(missing, 0.0, z)
            out[:, 2 * i + 1] = missing
        return out

    def transform_rows(self, df: pd.DataFrame) -> np.ndarray:
        """What the node trains on: :meth:`transform` itself.

        The bin encoder's one-hot rows are kept as codes (:mod:`federation.onehot`);
        these rows are already two float32 cells per column, so they stay dense.
        """
        return self.transform(df)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``NNNN:column:standard`` = ``[mean, scale, levels]`` per column."""
        return {
            f"{i:04d}:{col}:standard": np.array([m, s, self.levels], dtype=np.float64)
            for i, (col, (m, s)) in enumerate(self.params.items())
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> StandardEncoder:
        """Rebuild from :meth:`to_arrays`; ``DataError`` (``BAD_SKETCH``) on anything else."""
        parts: list[tuple[int, str, np.ndarray]] = []
        for key, arr in arrays.items():
            m = _KEY.match(key)
            a = np.asarray(arr, dtype=np.float64).ravel()
            if m is None or a.size != 3:
                raise DataError(f"unexpected standardiser array {key!r}", code="BAD_SKETCH")
            parts.append((int(m.group(1)), m.group(2), a))
        levels = {float(a[2]) for _, _, a in parts}
        if len(levels) > 1 or not all(v == int(v) for v in levels):
            raise DataError("a standardiser needs one whole number of levels", code="BAD_SKETCH")
        try:
            return cls({c: (float(a[0]), float(a[1])) for _, c, a in sorted(parts)},
                       levels=int(levels.pop()) if levels else 2)
        except ValueError as exc:
            raise DataError(f"bad standardiser: {exc}", code="BAD_SKETCH") from exc

    @classmethod
    def from_sketch(cls, sketch: QuantileSketch, levels: int = 20) -> StandardEncoder:
        """Centre and scale of each column read off a (merged DP) sketch.

        Robust moments, post-processing only: centre = the median, scale = the
        interquartile range / 1.349 (the standard deviation for normal data), both
        quantiles of the sketch's noisy grid counts and snapped up to a public grid
        value. Quantiles, unlike a mean, are not moved by the few empty grid cells
        whose noise clears the sketch's threshold, nor by a heavy money tail. A
        column with no points or no spread gets scale 1.
        """
        params: dict[str, tuple[float, float]] = {}
        for col in sketch.columns:
            q1, median, q3 = sketch.quantiles(col, [0.25, 0.5, 0.75])
            if not np.isfinite(median):
                params[col] = (0.0, 1.0)
                continue
            spread = (q3 - q1) / _IQR_PER_SIGMA
            params[col] = (_snap(float(median)), _snap(float(spread)) if spread > 0 else 1.0)
        return cls(params, levels=levels)


def make_encoder(
    sketch: QuantileSketch, *, scaling: str, n_bins: int
) -> BinEncoder | StandardEncoder:
    """The job's encoder from the merged sketch: quantile bins or standardisation.

    ``n_bins`` is the number of bins, or the number of standardised levels.
    """
    if scaling == "bins":
        return BinEncoder(sketch.bin_edges(n_bins))
    if scaling == "standardise":
        return StandardEncoder.from_sketch(sketch, levels=n_bins)
    raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")


def encoder_from_arrays(arrays: Mapping[str, np.ndarray]) -> BinEncoder | StandardEncoder:
    """Either encoder from its wire arrays (a standardiser's keys end in ``:standard``)."""
    if arrays and all(k.endswith(":standard") for k in arrays):
        return StandardEncoder.from_arrays(arrays)
    return BinEncoder.from_arrays(arrays)


def standard_problem(
    encoder: StandardEncoder, features: Sequence[str], max_bins: int
) -> str | None:
    """Why a node refuses a standardiser (a code), or ``None``.

    It must cover exactly the job's ``features``, use at most ``max_bins`` levels,
    and only public grid values as means and scales (a server cannot choose
    them to single out one merchant's value).
    """
    if list(encoder.columns) != list(features):
        return "ENCODER_COLUMNS"
    if encoder.levels > max_bins:
        return "ENCODER_TOO_FINE"
    grid = set(_grid().tolist())
    for mean, scale in encoder.params.values():
        if mean not in grid or scale not in grid:
            return "ENCODER_OFF_GRID"
    return None
