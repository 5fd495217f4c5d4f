"""A cohort's entries held as columns: how a node keeps a streamed 10^6-entry manifest.

A parsed :class:`ManifestEntry` costs about 0.9 kB of a node process's memory
(three strings, two datetimes, the object; 10^6 of them parsed at once left
910 MB of RSS behind), so a node holding a million merchants spent most of
its memory on the manifest that names them. :class:`EntryTable` holds the same
entries as columns: merchant ids, consent ids and artefact hashes as fixed-width
ASCII arrays, and the times, dates, labels and terms as lists of shared objects
(a cohort has few distinct windows, ranges and labels) — about 0.14 kB an entry.

It is a read-only ``Sequence[ManifestEntry]``: an entry is rebuilt when it is
read, so every consumer of ``CohortManifest.entries`` works unchanged, a batch
of :data:`BATCH` entries at a time when iterated.

:func:`parse_entry_table` reads a node's spool of verified entry lines a batch at
a time through the column parser behind :func:`parse_entries` (the same grammar,
window and order checks, straight to columns without building entries) and adds
the one check a batch cannot make: order across batch boundaries. Any refusal is
re-worded by :func:`parse_entries` over the whole file, so a bad line is named
exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, overload

import numpy as np

from ._entries_parse import _BadEntries, _bulk_entries, _gc_paused, parse_columns, parse_entries
from ._entry_line import ManifestEntry

__all__ = ["BATCH", "EntryTable", "parse_entry_table"]

BATCH = 1 << 16
"""Entries parsed, or rebuilt when iterated, at a time (≈ 60 MB of transient objects)."""

# ManifestEntry's fields, in order: the first three kept as fixed-width ASCII arrays.
_TEXT = ("merchant_id", "consent_id", "artefact_hash")
_SHARED = ("consent_start", "consent_expiry", "data_from", "data_to", "label", "data_life_days")


def _decoded(column: np.ndarray[Any, Any]) -> list[str]:
    return list(map(bytes.decode, column.tolist()))


class EntryTable(Sequence[ManifestEntry]):
    """Manifest entries stored column by column (see the module docstring).

    Build it with :meth:`from_batches` or :func:`parse_entry_table`; entries keep
    their order. Equal to any sequence holding equal entries in the same order.
    """

    __slots__ = ("_text", "_shared", "_n")

    def __init__(
        self, text: Sequence[np.ndarray[Any, Any]], shared: Sequence[list[Any]]
    ) -> None:
        self._text = tuple(text)
        self._shared = tuple(shared)
        self._n = len(self._text[0])
        if any(len(c) != self._n for c in self._text) or any(
            len(c) != self._n for c in self._shared
        ):
            raise ValueError("entry columns differ in length")

    @classmethod
    def from_batches(cls, batches: Iterable[Sequence[ManifestEntry]]) -> EntryTable:
        """Columns of every entry of ``batches`` in order (equal values stored once)."""
        return cls._from_columns(
            [[getattr(e, name) for e in batch] for name in (*_TEXT, *_SHARED)]
            for batch in batches
        )

    @classmethod
    def _from_columns(cls, batches: Iterable[Sequence[Sequence[Any]]]) -> EntryTable:
        """From batches of the nine field columns (:class:`ManifestEntry` order)."""
        text: list[list[np.ndarray[Any, Any]]] = [[] for _ in _TEXT]
        shared: list[list[Any]] = [[] for _ in _SHARED]
        # One memo per column (each holds one type, or ints and None), so equal values
        # across batches become one object; map() keeps the per-value step in C.
        memos: list[dict[Any, Any]] = [{} for _ in _SHARED]
        for columns in batches:
            for parts, column in zip(text, columns[: len(_TEXT)], strict=True):
                parts.append(np.array(column, dtype="S"))
            for out, memo, column in zip(shared, memos, columns[len(_TEXT) :], strict=True):
                out.extend(map(memo.setdefault, column, column))
        return cls(
            [np.concatenate(p) if p else np.array([], dtype="S1") for p in text], shared
        )

    def __len__(self) -> int:
        return self._n

    def _rows(self, lo: int, hi: int) -> tuple[ManifestEntry, ...]:
        columns = [_decoded(c[lo:hi]) for c in self._text] + [c[lo:hi] for c in self._shared]
        return _bulk_entries(columns) if hi > lo else ()

    @overload
    def __getitem__(self, index: int) -> ManifestEntry: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[ManifestEntry, ...]: ...

    def __getitem__(self, index: int | slice) -> ManifestEntry | tuple[ManifestEntry, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(self._n)))
        i = index + self._n if index < 0 else index
        if not 0 <= i < self._n:
            raise IndexError("entry index out of range")
        return self._rows(i, i + 1)[0]

    def __iter__(self) -> Iterator[ManifestEntry]:
        for lo in range(0, self._n, BATCH):
            yield from self._rows(lo, min(lo + BATCH, self._n))

    def merchant_ids(self) -> list[str]:
        """Every entry's merchant id, in order (without rebuilding the entries)."""
        return _decoded(self._text[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or len(other) != self._n:
            return False
        return all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        # Consistent with __eq__ (equal sequences have equal lengths and end merchants).
        ends = (self._text[0][0], self._text[0][-1]) if self._n else ()
        return hash((self._n, *ends))

    def __repr__(self) -> str:
        return f"EntryTable({self._n} entries)"


def parse_entry_table(
    path: Path, count: int, now: datetime, max_skew: timedelta
) -> EntryTable:
    """:func:`parse_entries` over a file of entry lines, kept as an :class:`EntryTable`.

    The lines are read :data:`BATCH` at a time, so the whole cohort never exists as
    entry objects. Accepts exactly what :func:`parse_entries` accepts over the whole
    file.

    Raises
    ------
    ManifestRejected
        ``ENTRY_INVALID``, worded by :func:`parse_entries` over the whole file.
    """
    try:
        table = EntryTable._from_columns(_batches(path, count, now, max_skew))
    except (_BadEntries, _OutOfOrder):
        table = None
    if table is None or len(table) != count:
        entries = parse_entries(path.read_bytes(), count, now, max_skew)  # words the refusal
        return EntryTable.from_batches([entries])  # its per-line walk may accept
    return table


class _OutOfOrder(Exception):
    """A batch's first merchant does not follow the previous batch's last."""


def _batches(
    path: Path, count: int, now: datetime, max_skew: timedelta
) -> Iterator[tuple[Sequence[Any], ...]]:
    """The file's field columns, :data:`BATCH` lines at a time (``_BadEntries`` on any fault)."""
    previous = ""
    with path.open("rb") as lines:
        while batch := list(islice(lines, BATCH)):
            blob = b"".join(batch)
            blob = blob[:-1] if blob.endswith(b"\n") else blob
            with _gc_paused():
                columns = parse_columns(blob, len(batch), now, max_skew)
            merchants = columns[0]
            if merchants and merchants[0] <= previous:
                raise _OutOfOrder
            previous = merchants[-1] if merchants else previous
            yield columns
