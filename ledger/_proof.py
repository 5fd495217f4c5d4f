"""Tree heads, inclusion proofs and consistency proofs from stored subtree hashes.

Every hash an RFC 9162 proof needs is either a perfect subtree (stored in
``ledger_tree_nodes`` when it was completed) or a right-border subtree that is
the right-fold of a few perfect ones. So a proof for any tree size ``n`` up to
the current size is assembled from O(log n) stored nodes, read in **one**
query, without touching the entries. Proofs are in the order and shape that
:func:`ledger.verify_inclusion` and :func:`ledger.verify_consistency` expect
(transparency-dev/merkle ``proof/proof.go`` layout).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from ._errors import LogCorrupted, OutOfRange
from ._hasher import EMPTY_ROOT, hash_children
from ._log import compact_range
from ._models import LogHeadRow, TreeNodeRow

__all__ = [
    "TreeHead",
    "InclusionProof",
    "ConsistencyProof",
    "tree_head",
    "inclusion_proof",
    "consistency_proof",
    "current_head",
    "inclusion_ranges",
    "consistency_ranges",
]

NodeKey = tuple[int, int]  # (level, index) of a perfect subtree

_NODE_SQL: dict[tuple[str, int], str] = {}


def _node_sql(paramstyle: str, count: int) -> str:
    """``SELECT`` of ``count`` nodes by primary key, as driver SQL (cached per shape).

    Written as an OR of point lookups, which SQLite (multi-index OR) and
    PostgreSQL (bitmap OR) both answer from the primary key; SQLite scans the
    whole table for a row-value ``IN`` list. Going straight to the driver skips
    SQLAlchemy's statement compilation, which would otherwise dominate (the
    statement's shape changes with the proof's length).
    """
    key = (paramstyle, count)
    sql = _NODE_SQL.get(key)
    if sql is None:
        mark = "?" if paramstyle == "qmark" else "%s"
        term = f'(level = {mark} AND "index" = {mark})'
        where = " OR ".join([term] * count)
        sql = f'SELECT level, "index", hash FROM {TreeNodeRow.__tablename__} WHERE {where}'
        _NODE_SQL[key] = sql
    return sql


@dataclass(frozen=True, slots=True)
class TreeHead:
    """The log's root hash at ``size`` entries."""

    size: int
    root: bytes


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Proof that leaf ``index`` (hash ``leaf_hash``) is in the tree of ``size`` with ``root``."""

    index: int
    size: int
    leaf_hash: bytes
    root: bytes
    hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """Proof that the tree of ``size2`` (``root2``) extends the tree of ``size1`` (``root1``)."""

    size1: int
    size2: int
    root1: bytes
    root2: bytes
    hashes: tuple[bytes, ...]


def _range_nodes(begin: int, end: int) -> list[NodeKey]:
    """Perfect subtrees tiling ``[begin, end)``, largest first; ``begin`` is suitably aligned."""
    nodes: list[NodeKey] = []
    width = end - begin
    for level in range(width.bit_length() - 1, -1, -1):
        if width & (1 << level):
            nodes.append((level, begin >> level))
            begin += 1 << level
    return nodes


def inclusion_ranges(index: int, size: int, start_level: int = 0) -> list[list[NodeKey]]:
    """Proof components for leaf ``index`` in a tree of ``size``, from ``start_level`` up.

    Each component is the list of perfect subtrees whose right-fold is that
    component's hash (one node, except for a truncated right sibling).
    """
    inner = (index ^ (size - 1)).bit_length()
    parts: list[list[NodeKey]] = []
    for level in range(start_level, inner):
        sibling = (index >> level) ^ 1
        begin = sibling << level
        if begin + (1 << level) <= size:
            parts.append([(level, sibling)])  # a whole perfect subtree: the common case
        else:
            parts.append(_range_nodes(begin, size))
    for level in range(max(inner, start_level), size.bit_length()):
        if (index >> level) & 1:
            parts.append([(level, (index >> level) ^ 1)])
    return parts


def consistency_ranges(size1: int, size2: int) -> list[list[NodeKey]]:
    """Proof components for the consistency of sizes ``0 < size1 < size2``."""
    shift = (size1 & -size1).bit_length() - 1
    parts: list[list[NodeKey]] = []
    if size1 != 1 << shift:
        # The verifier does not know this subtree's hash unless it is the whole old tree.
        parts.append([(shift, (size1 - 1) >> shift)])
    parts.extend(inclusion_ranges(size1 - 1, size2, start_level=shift))
    return parts


def _fold(nodes: Sequence[NodeKey], hashes: dict[NodeKey, bytes]) -> bytes:
    """Right-fold perfect subtrees into the hash of the range they tile."""
    acc = hashes[nodes[-1]]
    for key in reversed(nodes[:-1]):
        acc = hash_children(hashes[key], acc)
    return acc


def current_head(session: Session) -> TreeHead:
    """The log's current size and root (size 0 and the empty root before the first append)."""
    row = session.get(LogHeadRow, 1)
    if row is None:
        return TreeHead(0, EMPTY_ROOT)
    return TreeHead(row.size, row.root)


def _read_nodes(session: Session, keys: Iterable[NodeKey], size: int) -> dict[NodeKey, bytes]:
    """Fetch the given perfect subtrees in one query; all lie within the first ``size`` leaves."""
    wanted = set(keys)
    if not wanted:
        return {}
    conn = session.connection()
    sql = _node_sql(str(conn.dialect.paramstyle), len(wanted))
    rows = conn.exec_driver_sql(sql, tuple(v for key in wanted for v in key)).all()
    found: dict[NodeKey, bytes] = {(r[0], r[1]): bytes(r[2]) for r in rows}
    if len(found) != len(wanted):
        # Only now pay for reading the head: a caller error or a damaged table?
        head = current_head(session)
        if size > head.size:
            raise OutOfRange(f"tree size {size} is beyond the log's size {head.size}")
        missing = sorted(wanted - found.keys())
        raise LogCorrupted(f"stored tree nodes missing (level, index): {missing[:5]}")
    return found


def _resolve_size(session: Session, size: int | None) -> int:
    if size is None:
        return current_head(session).size
    if size < 0:
        raise OutOfRange(f"tree size must be non-negative, got {size}")
    return size


def tree_head(session: Session, size: int | None = None) -> TreeHead:
    """Root of the log at ``size`` entries, from at most O(log n) stored nodes.

    Parameters
    ----------
    session : Session
        Any session on the ledger's database.
    size : int | None, default the current size
        Tree size, ``0 <= size <=`` current size.

    Raises
    ------
    OutOfRange
        If ``size`` is negative or beyond the log.
    LogCorrupted
        If a stored node that must exist is missing.
    """
    if size is None:
        return current_head(session)
    size = _resolve_size(session, size)
    if size == 0:
        return TreeHead(0, EMPTY_ROOT)
    tiles = compact_range(size)
    return TreeHead(size, _fold(tiles, _read_nodes(session, tiles, size)))


def inclusion_proof(session: Session, index: int, size: int | None = None) -> InclusionProof:
    """RFC 9162 inclusion proof for entry ``index`` in the tree of ``size`` entries.

    One query reads the proof's nodes, the leaf hash and the root's tiles. With
    ``size=None`` one more reads the current head.

    Raises
    ------
    OutOfRange
        If ``index`` is not in ``[0, size)`` or ``size`` is beyond the log.
    LogCorrupted
        If a stored node that must exist is missing.
    """
    size = _resolve_size(session, size)
    if not 0 <= index < size:
        raise OutOfRange(f"entry index {index} is not in a tree of size {size}")
    parts = inclusion_ranges(index, size)
    tiles = compact_range(size)
    keys = [key for part in parts for key in part] + tiles + [(0, index)]
    hashes = _read_nodes(session, keys, size)
    return InclusionProof(
        index=index,
        size=size,
        leaf_hash=hashes[(0, index)],
        root=_fold(tiles, hashes),
        hashes=tuple(_fold(part, hashes) for part in parts),
    )


def consistency_proof(session: Session, size1: int, size2: int | None = None) -> ConsistencyProof:
    """RFC 9162 consistency proof from the tree of ``size1`` to the tree of ``size2``.

    Equal sizes give an empty proof; ``size1 = 0`` gives an empty proof too (the
    empty tree is a prefix of every tree, and nothing needs proving).

    Raises
    ------
    OutOfRange
        If ``size1 > size2`` or ``size2`` is beyond the log.
    LogCorrupted
        If a stored node that must exist is missing.
    """
    size2 = _resolve_size(session, size2)
    if not 0 <= size1 <= size2:
        raise OutOfRange(f"need 0 <= size1 <= size2, got size1={size1}, size2={size2}")
    parts = consistency_ranges(size1, size2) if 0 < size1 < size2 else []
    tiles1 = compact_range(size1)
    tiles2 = compact_range(size2)
    keys = [key for part in parts for key in part] + tiles1 + tiles2
    hashes = _read_nodes(session, keys, size2)
    return ConsistencyProof(
        size1=size1,
        size2=size2,
        root1=_fold(tiles1, hashes) if size1 else EMPTY_ROOT,
        root2=_fold(tiles2, hashes) if size2 else EMPTY_ROOT,
        hashes=tuple(_fold(part, hashes) for part in parts),
    )
