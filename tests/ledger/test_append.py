"""Appending to the log: sequence numbers, tree nodes and the head root."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ledger import (
    EMPTY_ROOT,
    append_entries,
    append_entry,
    append_many,
    canonical_json,
    hash_children,
    hash_leaf,
)
from ledger._models import LogEntryRow, LogHeadRow


def _reference_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 MTH by the recursive definition (split at the largest power of two < n)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hash_children(_reference_root(leaves[:k]), _reference_root(leaves[k:]))


def test_head_root_matches_recursive_definition(sessions: sessionmaker[Session]) -> None:
    """After each append the stored head root equals the RFC 9162 MTH of all leaves."""
    leaves: list[bytes] = []
    for i in range(37):
        with sessions() as s, s.begin():
            entry = append_entry(s, "test.append", {"i": i})
        assert entry.seq == i
        assert entry.leaf_hash == hash_leaf(entry.leaf_data)
        leaves.append(entry.leaf_hash)
        with sessions() as s:
            head = s.get(LogHeadRow, 1)
            assert head is not None
            assert head.size == i + 1
            assert head.root == _reference_root(leaves)


def test_batch_equals_singles(sessions: sessionmaker[Session]) -> None:
    """A batched append yields consecutive sequence numbers and the same root as the leaves."""
    with sessions() as s, s.begin():
        entries = append_entries(s, [("test.batch", {"i": i}) for i in range(100)])
    assert [e.seq for e in entries] == list(range(100))
    with sessions() as s:
        head = s.get(LogHeadRow, 1)
        assert head is not None
        assert head.root == _reference_root([e.leaf_hash for e in entries])


def test_encoded_batch_writes_the_leaves_of_singles(sessions: sessionmaker[Session]) -> None:
    """``append_many`` of canonical bodies (mixed kinds) stores the leaves of ``append_entry``."""
    at = datetime(2026, 6, 1, 9, 0, 0, 123456, tzinfo=UTC)
    items = [(("test.a", "test.kind-é")[i % 2], {"i": i, "s": f'x"\\é{i}', "l": [i, None]})
             for i in range(13)]
    with sessions() as s, s.begin():
        append_entry(s, "test.first", {"n": 0}, at=at)  # the batch starts mid-tree
        first = append_many(s, [(k, canonical_json(b)) for k, b in items], at=at)
        stored = s.execute(select(LogEntryRow.kind, LogEntryRow.leaf_data)
                           .order_by(LogEntryRow.seq)).all()
        head = s.get(LogHeadRow, 1)
        assert head is not None
        batch = (head.root, [(k, bytes(d)) for k, d in stored])
        s.rollback()
    with sessions() as s, s.begin():
        append_entry(s, "test.first", {"n": 0}, at=at)
        singles = [append_entry(s, k, b, at=at) for k, b in items]
    with sessions() as s:
        head = s.get(LogHeadRow, 1)
        assert head is not None
        rows = s.execute(select(LogEntryRow.kind, LogEntryRow.leaf_data)
                         .order_by(LogEntryRow.seq)).all()
        assert batch == (head.root, [(k, bytes(d)) for k, d in rows])
    assert first == singles[0].seq == 1


def test_rollback_leaves_no_entry(sessions: sessionmaker[Session]) -> None:
    """An append in a transaction that rolls back leaves no entry and no gap."""
    with sessions() as s, s.begin():
        append_entry(s, "test.keep", {"n": 0})
    with sessions() as s:
        s.begin()
        append_entry(s, "test.lost", {"n": 1})
        s.rollback()
    with sessions() as s, s.begin():
        e = append_entry(s, "test.keep", {"n": 2})
    assert e.seq == 1


def test_concurrent_writers_no_gaps(sessions: sessionmaker[Session]) -> None:
    """Eight threads appending at once produce seq 0..N-1 exactly once each."""
    per_thread, threads = 25, 8
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(per_thread):
                with sessions() as s, s.begin():
                    append_entry(s, "test.concurrent", {"t": t, "i": i})
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert errors == []
    with sessions() as s:
        seqs = s.execute(select(LogEntryRow.seq).order_by(LogEntryRow.seq)).scalars().all()
        assert seqs == list(range(per_thread * threads))
        assert s.execute(select(func.count()).select_from(LogEntryRow)).scalar_one() == 200
        head = s.get(LogHeadRow, 1)
        assert head is not None
        leaves = s.execute(select(LogEntryRow.leaf_hash).order_by(LogEntryRow.seq)).scalars().all()
        assert head.root == _reference_root(list(leaves))
