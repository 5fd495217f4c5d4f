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
a time through :func:`parse_entries` (the same grammar, window and order checks)
and adds the one check a batch cannot make: order across batch boundaries. Any
refusal is re-worded by :func:`parse_entries` over the whole file, so a bad line
is named exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, overload

import numpy as np

from ._entries_parse import _bulk_entries, parse_entries
from ._entry_line import ManifestEntry
from ._errors import ManifestRejected

__all__ = ["BATCH", "EntryTable", "parse_entry_table"]

BATCH = 1 << 16
"""Entries parsed, or rebuilt when iterated, at a time (≈ 60 MB of transient objects)."""

_TEXT = ("merchant_id", "consent_id", "artefact_hash")  # fixed-width ASCII columns
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
        text: list[list[np.ndarray[Any, Any]]] = [[] for _ in _TEXT]
        shared: list[list[Any]] = [[] for _ in _SHARED]
        interned: dict[Any, Any] = {}
        for batch in batches:
            for parts, name in zip(text, _TEXT, strict=True):
                parts.append(np.array([getattr(e, name) for e in batch], dtype="S"))
            for column, name in zip(shared, _SHARED, strict=True):
                # (type, value) keys: 1 == True and a date never equals a datetime, but
                # keeping types apart costs nothing and makes that obvious.
                column.extend(
                    interned.setdefault((type(v), v), v)
                    for v in (getattr(e, name) for e in batch)
                )
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
        table = EntryTable.from_batches(_batches(path, now, max_skew))
    except (ManifestRejected, _OutOfOrder):
        table = None
    if table is None or len(table) != count:
        entries = parse_entries(path.read_bytes(), count, now, max_skew)  # words the refusal
        return EntryTable.from_batches([entries])  # its per-line walk may accept
    return table


class _OutOfOrder(Exception):
    """A batch's first merchant does not follow the previous batch's last."""


def _batches(
    path: Path, now: datetime, max_skew: timedelta
) -> Iterator[tuple[ManifestEntry, ...]]:
    previous = ""
    with path.open("rb") as lines:
        while batch := list(islice(lines, BATCH)):
            blob = b"".join(batch)
            blob = blob[:-1] if blob.endswith(b"\n") else blob
            entries = parse_entries(blob, len(batch), now, max_skew)
            if entries and entries[0].merchant_id <= previous:
                raise _OutOfOrder
            previous = entries[-1].merchant_id if entries else previous
            yield entries
