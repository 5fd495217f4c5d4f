"""Appending to the transparency log inside the caller's transaction.

Other packages record a state change and its log entry atomically by passing
their own SQLAlchemy ``Session``::

    with session.begin():
        session.add(consent_row)
        append_entry(session, "consent.granted", {"consent_id": ...})

The entry's leaf data is the canonical JSON of ``{"seq", "kind", "at", "body"}``
so the sequence number, kind and time are covered by the hash as well as the body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ._canonical import canonical_json
from ._errors import LogCorrupted
from ._hasher import EMPTY_ROOT, hash_children, hash_leaf
from ._models import LogEntryRow, LogHeadRow, TreeNodeRow

# The Core tables: bulk inserts skip the ORM's unit of work (much faster per row).
_ENTRIES = cast(Table, LogEntryRow.__table__)
_NODES = cast(Table, TreeNodeRow.__table__)

__all__ = ["Entry", "append_entry", "append_entries", "compact_range", "format_time"]


@dataclass(frozen=True, slots=True)
class Entry:
    """A committed log entry as the caller sees it."""

    seq: int
    kind: str
    at: datetime
    body: Mapping[str, Any]
    leaf_data: bytes
    leaf_hash: bytes


def format_time(at: datetime) -> str:
    """RFC 3339 UTC with microseconds and a ``Z``: the one time format inside leaves."""
    if at.tzinfo is None:
        raise ValueError("log timestamps must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def leaf_bytes(seq: int, kind: str, at: datetime | str, body: Mapping[str, Any]) -> bytes:
    """The exact bytes hashed into leaf ``seq``; ``at`` may come pre-formatted."""
    stamp = at if isinstance(at, str) else format_time(at)
    return canonical_json({"seq": seq, "kind": kind, "at": stamp, "body": dict(body)})


def compact_range(size: int) -> list[tuple[int, int]]:
    """(level, index) of the perfect subtrees that tile leaves [0, size), left to right."""
    nodes: list[tuple[int, int]] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size & (1 << level):
            nodes.append((level, start >> level))
            start += 1 << level
    return nodes


def _lock_head(session: Session) -> LogHeadRow:
    """Lock the head row for this transaction, creating it on first use.

    The first-use insert is ``ON CONFLICT DO NOTHING`` so concurrent first
    appenders do not collide on the primary key; all of them then queue on the lock.
    """
    stmt = select(LogHeadRow).where(LogHeadRow.id == 1).with_for_update()
    head = session.execute(stmt).scalar_one_or_none()
    if head is None:
        dialect = session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        session.execute(
            insert(LogHeadRow).values(id=1, size=0, root=EMPTY_ROOT).on_conflict_do_nothing()
        )
        head = session.execute(stmt).scalar_one()
    return head


# PostgreSQL: one statement per table with array parameters. psycopg's
# executemany sends one INSERT per row, which costs more than hashing the leaves;
# bytes travel as hex text because psycopg's text-mode bytea escaping is slow.
_PG_ENTRIES_SQL = (
    f"INSERT INTO {LogEntryRow.__tablename__} (seq, kind, recorded_at, leaf_data, leaf_hash) "
    "SELECT s, k, %s, decode(d, 'hex'), decode(h, 'hex') "
    "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[]) AS u(s, k, d, h)"
)
_PG_NODES_SQL = (
    f'INSERT INTO {TreeNodeRow.__tablename__} (level, "index", hash) '
    "SELECT l, i, decode(h, 'hex') FROM unnest(%s::int[], %s::bigint[], %s::text[]) AS u(l, i, h)"
)


def _insert_rows(
    session: Session,
    rows: list[dict[str, Any]],
    nodes: list[dict[str, Any]],
    when: datetime,
) -> None:
    """Insert new entry and node rows in the fastest way the backend offers."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            _PG_ENTRIES_SQL,
            (
                when,
                [r["seq"] for r in rows],
                [r["kind"] for r in rows],
                [r["leaf_data"].hex() for r in rows],
                [r["leaf_hash"].hex() for r in rows],
            ),
        )
        conn.exec_driver_sql(
            _PG_NODES_SQL,
            (
                [n["level"] for n in nodes],
                [n["index"] for n in nodes],
                [n["hash"].hex() for n in nodes],
            ),
        )
        return
    conn.execute(_ENTRIES.insert(), rows)
    conn.execute(_NODES.insert(), nodes)


def append_entries(
    session: Session,
    items: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    at: datetime | None = None,
) -> list[Entry]:
    """Append ``(kind, body)`` items as consecutive entries in the caller's transaction.

    Parameters
    ----------
    session : Session
        An open session; the entries commit or roll back with the caller's work.
    items : Sequence[tuple[str, Mapping]]
        Entry kinds (``consent.granted``, ``transfer.posted``, …) and JSON bodies.
    at : datetime | None, default now (UTC)
        Recorded time of every entry in the batch.

    Returns
    -------
    list[Entry]
        The entries with their sequence numbers and leaf hashes.
    """
    if not items:
        return []
    for kind, _ in items:
        if not kind or len(kind) > 64:
            raise ValueError(f"entry kind must be 1-64 characters, got {kind!r}")
    when = at or datetime.now(UTC)
    stamp = format_time(when)  # once per batch: every entry shares the time
    head = _lock_head(session)
    size = head.size

    # The right frontier (compact range) holds every left sibling a new leaf can need.
    frontier_keys = compact_range(size)
    stored: dict[tuple[int, int], bytes] = {}
    if frontier_keys:
        rows = session.execute(
            select(TreeNodeRow.level, TreeNodeRow.index, TreeNodeRow.hash).where(
                TreeNodeRow.level.in_({lv for lv, _ in frontier_keys}),
                TreeNodeRow.index.in_({ix for _, ix in frontier_keys}),
            )
        ).all()
        stored = {(r[0], r[1]): r[2] for r in rows}
    frontier: list[tuple[int, int, bytes]] = [
        (lv, ix, stored[(lv, ix)]) for lv, ix in frontier_keys
    ]

    entries: list[Entry] = []
    new_nodes: list[dict[str, Any]] = []
    new_rows: list[dict[str, Any]] = []
    for kind, body in items:
        seq = size
        data = leaf_bytes(seq, kind, stamp, body)
        leaf = hash_leaf(data)
        new_rows.append(
            {"seq": seq, "kind": kind, "recorded_at": when, "leaf_data": data, "leaf_hash": leaf}
        )
        level, index, node = 0, seq, leaf
        new_nodes.append({"level": 0, "index": seq, "hash": leaf})
        while index & 1:
            left_level, left_index, left = frontier.pop()
            if left_level != level or left_index != index - 1:
                raise LogCorrupted(f"stored frontier out of order at {left_level}/{left_index}")
            node = hash_children(left, node)
            level, index = level + 1, index >> 1
            new_nodes.append({"level": level, "index": index, "hash": node})
        frontier.append((level, index, node))
        size += 1
        entries.append(Entry(seq, kind, when, dict(body), data, leaf))

    _insert_rows(session, new_rows, new_nodes, when)
    root = frontier[-1][2]
    for _, _, node in reversed(frontier[:-1]):
        root = hash_children(node, root)
    head.size = size
    head.root = root
    session.flush()
    return entries


def append_entry(
    session: Session, kind: str, body: Mapping[str, Any], *, at: datetime | None = None
) -> Entry:
    """Append one entry in the caller's transaction; see :func:`append_entries`."""
    return append_entries(session, [(kind, body)], at=at)[0]
