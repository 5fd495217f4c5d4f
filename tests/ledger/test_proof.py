"""Tree heads and proofs assembled from stored nodes agree with the RFC 9162 definition."""

from __future__ import annotations

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from ledger import (
    EMPTY_ROOT,
    InvalidProof,
    LogCorrupted,
    OutOfRange,
    RootMismatch,
    append_entries,
    consistency_proof,
    inclusion_proof,
    tree_head,
    verify_consistency,
    verify_inclusion,
)
from ledger._models import TreeNodeRow
from tests.ledger.test_append import _reference_root

_SIZE = 21


def _fill(sessions: sessionmaker[Session], count: int) -> list[bytes]:
    with sessions() as s, s.begin():
        entries = append_entries(s, [("test.proof", {"i": i}) for i in range(count)])
    return [e.leaf_hash for e in entries]


def test_tree_head_every_size(sessions: sessionmaker[Session]) -> None:
    """The root at every size 0..n equals the recursive MTH of that prefix."""
    leaves = _fill(sessions, _SIZE)

    with sessions() as s:
        heads = [tree_head(s, n) for n in range(_SIZE + 1)]
        current = tree_head(s)

    assert heads[0].root == EMPTY_ROOT
    assert [h.root for h in heads] == [_reference_root(leaves[:n]) for n in range(_SIZE + 1)]
    assert current == heads[-1]


def test_inclusion_every_index_and_size(sessions: sessionmaker[Session]) -> None:
    """Every (index, size) proof verifies against the reference root, and fails for a wrong leaf."""
    leaves = _fill(sessions, _SIZE)

    with sessions() as s:
        proofs = [inclusion_proof(s, i, n) for n in range(1, _SIZE + 1) for i in range(n)]

    for p in proofs:
        assert p.leaf_hash == leaves[p.index]
        assert p.root == _reference_root(leaves[: p.size])
        verify_inclusion(p.leaf_hash, p.index, p.size, p.hashes, p.root)
        other = leaves[(p.index + 1) % _SIZE] if p.size > 1 else bytes(32)
        with pytest.raises(RootMismatch):
            verify_inclusion(other, p.index, p.size, p.hashes, p.root)


def test_consistency_every_pair(sessions: sessionmaker[Session]) -> None:
    """Every (size1, size2) proof verifies, and a flipped bit in any hash is rejected."""
    leaves = _fill(sessions, _SIZE)

    with sessions() as s:
        proofs = [consistency_proof(s, m, n) for n in range(1, _SIZE + 1) for m in range(1, n + 1)]

    for p in proofs:
        assert p.root1 == _reference_root(leaves[: p.size1])
        assert p.root2 == _reference_root(leaves[: p.size2])
        verify_consistency(p.size1, p.size2, p.hashes, p.root1, p.root2)
        for k in range(len(p.hashes)):
            bad = list(p.hashes)
            bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
            with pytest.raises((RootMismatch, InvalidProof)):
                verify_consistency(p.size1, p.size2, bad, p.root1, p.root2)


def test_proof_beyond_log_is_out_of_range(sessions: sessionmaker[Session]) -> None:
    """Sizes or indices beyond the log raise OutOfRange with its code."""
    _fill(sessions, 5)

    with sessions() as s:
        for call in (
            lambda: tree_head(s, 6),
            lambda: inclusion_proof(s, 5, 5),
            lambda: inclusion_proof(s, 0, 9),
            lambda: consistency_proof(s, 3, 7),
            lambda: consistency_proof(s, 4, 3),
        ):
            with pytest.raises(OutOfRange) as info:
                call()
            assert info.value.code == "OUT_OF_RANGE"


def test_missing_node_is_reported_as_corruption(sessions: sessionmaker[Session]) -> None:
    """A deleted interior node makes proof generation fail with LogCorrupted, not a wrong proof."""
    _fill(sessions, 8)
    with sessions() as s, s.begin():
        s.execute(delete(TreeNodeRow).where(TreeNodeRow.level == 2, TreeNodeRow.index == 1))

    with sessions() as s, pytest.raises(LogCorrupted) as info:
        inclusion_proof(s, 0, 8)

    assert info.value.code == "LOG_CORRUPTED"
