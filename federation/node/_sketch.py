"""Bin-edge statistics that cannot be differenced: DP histograms on a public grid.

A k-anonymous quantile sketch sends bucket means; Σ weight × mean is the exact
column total, so two sketches over cohorts that differ by one merchant give
that merchant's values back. The node therefore never sends a statistic of
its own choosing. It sends, per feature, the counts of its rows in the cells
of a **public grid** (:data:`PUBLIC_GRID`, the same at every node and in the
spec: 0 and ±10^(k/32) for k covering 1e-4 … 1e12, 32 cells per decade), plus the
count of missing values, each with Gaussian noise from the node's CSPRNG:

* one merchant is one row, so adding or removing it changes one count per
  feature: the L2 sensitivity of the whole release is ``sqrt(F)`` for ``F``
  features, and the noise has standard deviation ``z · sqrt(F)`` with ``z`` the
  policy's ``sketch-noise-multiplier``;
* the release is the Gaussian mechanism with noise multiplier ``z`` (RDP
  ``α / (2 z²)``), recorded in the job's accounting at the node and charged to
  every merchant's lifetime ε before it leaves (:mod:`federation.dp`);
* counts are rounded (post-processing, free), and only cells whose noisy count
  exceeds three noise deviations leave (post-processing too), as points at the
  cell's upper grid value
  in the :class:`~federation.features.QuantileSketch` wire format — so the
  platform merges them and reads quantile edges off them as before, and every
  edge it can derive is a grid value.

An encoder a node accepts must use grid values as edges and at most
``max-bins - 1`` edges per feature (:func:`encoder_problem`): a crafted
encoder with thousands of edges (a raw-value oracle through scoring) is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..features import BinEncoder, QuantileSketch
from ..features import _column_values as column_values  # noqa: PLC2701 - same package
from ..features import _ColumnSketch as ColumnSketch  # noqa: PLC2701
from ..standardise import StandardEncoder, standard_problem

__all__ = ["PUBLIC_GRID", "dp_sketch", "encoder_problem", "snap_edges", "SKETCH_SIZE"]

_PER_DECADE = 32
_LOW, _HIGH = -4, 12
_POS = 10.0 ** (np.arange(_LOW * _PER_DECADE, _HIGH * _PER_DECADE + 1) / _PER_DECADE)
PUBLIC_GRID: np.ndarray = np.concatenate([-_POS[::-1], [0.0], _POS])
"""Public, data-independent cell boundaries (sorted); every sketch point and edge is one."""

SKETCH_SIZE = int(PUBLIC_GRID.size)
_KEEP_DEVIATIONS = 3.0
"""The point budget a DP sketch declares (one point per grid cell at most)."""


def _cell_points(x: np.ndarray) -> np.ndarray:
    """Grid index of each finite value: the smallest grid value >= x (clamped to the grid)."""
    idx = np.searchsorted(PUBLIC_GRID, x, side="left")
    return np.minimum(idx, PUBLIC_GRID.size - 1)


def dp_sketch(
    df: pd.DataFrame, columns: Sequence[str], *, noise_multiplier: float, rng: np.random.Generator
) -> QuantileSketch:
    """A Gaussian-noised grid histogram per column, in the quantile-sketch wire format.

    Parameters
    ----------
    df : pandas.DataFrame
        The cohort's rows (one per merchant).
    columns : Sequence[str]
    noise_multiplier : float
        ``z``: noise standard deviation per unit of L2 sensitivity (``sqrt(F)``).
    rng : numpy.random.Generator
        The node's CSPRNG-seeded generator.
    """
    if noise_multiplier <= 0:
        raise ValueError("noise_multiplier must be > 0")
    std = noise_multiplier * float(np.sqrt(max(len(columns), 1)))
    out: dict[str, ColumnSketch] = {}
    for col in columns:
        x = column_values(df, col)
        finite = x[np.isfinite(x)]
        counts = np.bincount(_cell_points(finite), minlength=PUBLIC_GRID.size).astype(np.float64)
        noisy = np.rint(counts + rng.normal(0.0, std, size=counts.size))
        missing = float(max(0.0, np.rint(x.size - finite.size + rng.normal(0.0, std))))
        # Post-processing (free): keep cells whose noisy count clears 3 noise deviations.
        # Without it, the half of the ~1,000 empty cells that draw positive noise would add
        # mass all along the grid and drag the quantile edges to values no row holds.
        keep = noisy > _KEEP_DEVIATIONS * std
        out[col] = ColumnSketch(PUBLIC_GRID[keep].copy(), noisy[keep], missing, 0.0)
    return QuantileSketch(out, SKETCH_SIZE)


def snap_edges(edges: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Edges moved up to the nearest grid value (deduplicated): a grid encoder for tests/tools."""
    return {
        c: np.unique(PUBLIC_GRID[_cell_points(np.asarray(e, dtype=np.float64))])
        for c, e in edges.items()
    }


def encoder_problem(
    encoder: BinEncoder | StandardEncoder, features: Sequence[str], max_bins: int
) -> str | None:
    """Why the node refuses ``encoder`` (a code), or ``None``.

    The encoder must cover exactly the job's ``features``, use only grid values
    as edges and at most ``max_bins - 1`` of them per feature (a standardiser:
    :func:`federation.standardise.standard_problem`).
    """
    if isinstance(encoder, StandardEncoder):
        return standard_problem(encoder, features, max_bins)
    if list(encoder.columns) != list(features):
        return "ENCODER_COLUMNS"
    grid = set(PUBLIC_GRID.tolist())
    for edges in encoder.edges.values():
        if edges.size > max_bins - 1:
            return "ENCODER_TOO_FINE"
        if not set(edges.tolist()) <= grid:
            return "ENCODER_OFF_GRID"
    return None
