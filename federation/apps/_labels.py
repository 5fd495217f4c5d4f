"""The platform's training labels, looked up for a whole manifest at once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..schema import MERCHANT_ID

__all__ = ["LabelLookup"]

_LABEL_BATCH = 1 << 16  # platform-table rows converted at a time


class LabelLookup:
    """Merchant id → training label, compact enough for millions of merchants.

    Sorted fixed-width UTF-8 ids (``numpy`` bytes) and one ``int8`` per label —
    about ``max id length + 1`` bytes per merchant, against ~100 B for a dict —
    looked up for a whole manifest at once with :func:`numpy.searchsorted`.

    Parameters
    ----------
    ids : numpy.ndarray
        Merchant ids as a ``numpy`` bytes (``S``) array.
    labels : numpy.ndarray
        0/1 labels aligned with ``ids``.
    """

    def __init__(self, ids: np.ndarray, labels: np.ndarray) -> None:
        order = np.argsort(ids, kind="stable")
        self._ids = ids[order]
        self._labels = labels[order].astype(np.int8)

    def __len__(self) -> int:
        return int(self._ids.size)

    @classmethod
    def from_table(cls, path: Path, label: str) -> LabelLookup:
        """Read ``merchant_id`` and ``label`` (rows without a label skipped), batch by batch."""
        ids: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        if path.suffix.lower() == ".csv":
            batches: Iterator[pd.DataFrame] = pd.read_csv(
                path, usecols=[MERCHANT_ID, label], dtype={MERCHANT_ID: str},
                chunksize=_LABEL_BATCH,
            )
            for chunk in batches:
                chunk = chunk.dropna(subset=[label])
                ids.append(np.char.encode(chunk[MERCHANT_ID].to_numpy(dtype=str), "utf-8"))
                labels.append(chunk[label].to_numpy().astype(np.int8))
        else:
            import pyarrow as pa
            import pyarrow.compute as pc
            import pyarrow.dataset as pads

            dataset = pads.dataset(path, format="parquet")
            for batch in dataset.to_batches(columns=[MERCHANT_ID, label], batch_size=_LABEL_BATCH):
                keep = pc.is_valid(batch.column(1))
                mids = pc.filter(batch.column(0), keep).cast(pa.string()).cast(pa.binary())
                ids.append(np.asarray(mids.to_numpy(zero_copy_only=False), dtype=np.bytes_))
                labels.append(
                    np.asarray(pc.filter(batch.column(1), keep).to_numpy(zero_copy_only=False))
                    .astype(np.int8)
                )
            pa.default_memory_pool().release_unused()  # the scan's buffers, not kept
        if not ids:
            return cls(np.empty(0, dtype="S1"), np.empty(0, dtype=np.int8))
        return cls(np.concatenate(ids), np.concatenate(labels))

    def lookup(self, merchant_ids: Sequence[str]) -> np.ndarray:
        """Labels aligned with ``merchant_ids``; ``-1`` where the platform has none."""
        if not merchant_ids or self._ids.size == 0:
            return np.full(len(merchant_ids), -1, dtype=np.int8)
        query = np.char.encode(np.asarray(merchant_ids, dtype=str), "utf-8")
        pos = np.searchsorted(self._ids, query)
        pos = np.minimum(pos, self._ids.size - 1)
        found = self._ids[pos] == query
        return np.where(found, self._labels[pos], np.int8(-1)).astype(np.int8)
