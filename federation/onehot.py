"""A one-hot bin matrix kept as its codes: the node's training rows at 14 bytes, not 1.8 kB.

:meth:`federation.features.BinEncoder.transform` returns a dense float32 matrix with
one 1.0 per feature per row (``n_outputs`` ≈ 14 features × (bins + 2) columns): about
1.8 kB a row at 32 bins, 4 GiB for an ISV holding 2.2 × 10⁶ merchants, held by the
node's process for the whole round. :class:`OneHotRows` keeps only each row's
``k`` column codes (``uint16``) and builds dense rows for the slice asked for, so
training, evaluation and scoring touch one batch of dense rows at a time.

Row ``i`` of the dense matrix is ``1.0`` at ``codes[i, j]`` for every feature ``j``
and ``0.0`` elsewhere; :meth:`OneHotRows.dense` builds exactly that, so a batch is
bit-for-bit the rows ``BinEncoder.transform(df)[idx]`` (a test pins it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["OneHotRows"]


class OneHotRows:
    """A ``(n, n_outputs)`` 0/1 float32 matrix stored as ``(n, k)`` column codes.

    Parameters
    ----------
    codes : numpy.ndarray
        ``(n, k)`` integer column indices in ``[0, n_outputs)``, one per feature.
    n_outputs : int
        Columns of the dense matrix.

    Supports what the node's training and prediction read from a dense ``X``:
    ``len``, ``shape``, ``ndim``, ``dtype`` and ``X[rows]`` for a slice, an integer
    array or a boolean mask (dense float32 rows, a new array).
    """

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, codes: np.ndarray, n_outputs: int) -> None:
        codes = np.asarray(codes)
        if codes.ndim != 2:
            raise ValueError(f"codes must be 2-D, got shape {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= n_outputs):
            raise ValueError(f"codes must lie in [0, {n_outputs})")
        # uint16 holds any encoder here (n_outputs = Σ (edges + 2) < 65,536).
        self.codes = codes.astype(np.uint16 if n_outputs <= 0xFFFF else np.int64, copy=False)
        self.n_outputs = int(n_outputs)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, n_outputs)``, as the dense matrix's."""
        return (self.codes.shape[0], self.n_outputs)

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def __getitem__(self, rows: Any) -> np.ndarray:
        """Dense float32 rows ``rows`` (slice, integer array or boolean mask)."""
        return self.dense(self.codes[rows])

    def dense(self, codes: np.ndarray) -> np.ndarray:
        """The dense rows of ``codes`` (``(m, k)``): one 1.0 per code."""
        codes = np.atleast_2d(codes)
        out = np.zeros((codes.shape[0], self.n_outputs), dtype=np.float32)
        np.put_along_axis(out, codes.astype(np.intp, copy=False), np.float32(1.0), axis=1)
        return out

    def toarray(self) -> np.ndarray:
        """The whole dense matrix (tests and small inputs only)."""
        return self.dense(self.codes)
