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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ._canonical import canonical_json
from ._errors import LogCorrupted
from ._hasher import EMPTY_ROOT, hash_children, hash_leaf
from ._models import LogEntryRow, LogHeadRow, TreeNodeRow

# The Core tables: bulk inserts skip the ORM's unit of work (much faster per row).
_ENTRIES = cast(Table, LogEntryRow.__table__)
_NODES = cast(Table, TreeNodeRow.__table__)

__all__ = [
    "Entry",
    "append_encoded",
    "append_entry",
    "append_entries",
    "append_many",
    "compact_range",
    "format_time",
]


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


def copy_text(value: str) -> str:
    """``value`` escaped for PostgreSQL's COPY text format (backslash, tab, newlines)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return value


def pg_copy(session: Session, table: str, columns: str, lines: Sequence[str]) -> None:
    """``COPY table (columns) FROM STDIN`` of prepared text-format lines.

    Runs on the session's connection, so in the caller's transaction; table and
    column names are trusted, never user input. Each line is tab-separated and
    ends in a newline; text values go through :func:`copy_text`, NULL is ``\\N``
    and bytea is ``\\\\x`` followed by hex. A few large writes are several times
    faster than psycopg's ``write_row`` (a Python call per value) or array
    parameters (a quoting check per element). A constraint violation raises
    :class:`sqlalchemy.exc.IntegrityError`, as the SQLite path does.
    """
    import psycopg

    raw = session.connection().connection.driver_connection
    assert raw is not None, "the session's connection is closed"
    sql = f"COPY {table} ({columns}) FROM STDIN"
    try:
        with raw.cursor() as cur, cur.copy(sql) as copy:
            for start in range(0, len(lines), 8192):
                copy.write("".join(lines[start : start + 8192]))
    except psycopg.errors.IntegrityError as exc:
        raise IntegrityError(sql, None, exc) from exc


def _insert_rows(
    session: Session,
    rows: list[dict[str, Any]],
    nodes: list[dict[str, Any]],
    when: datetime,
) -> None:
    """Insert new entry and node rows in the fastest way the backend offers."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        stamp = when.isoformat()
        kinds = {k: copy_text(k) for k in {r["kind"] for r in rows}}
        pg_copy(
            session,
            LogEntryRow.__tablename__,
            "seq, kind, recorded_at, leaf_data, leaf_hash",
            [
                f"{r['seq']}\t{kinds[r['kind']]}\t{stamp}"
                f"\t\\\\x{r['leaf_data'].hex()}\t\\\\x{r['leaf_hash'].hex()}\n"
                for r in rows
            ],
        )
        pg_copy(
            session,
            TreeNodeRow.__tablename__,
            'level, "index", hash',
            [f"{n['level']}\t{n['index']}\t\\\\x{n['hash'].hex()}\n" for n in nodes],
        )
        return
    # SQLite: the driver's executemany on plain tuples (the Core insert spends more time
    # processing parameters than SQLite spends writing); the one timestamp goes through
    # the column type's bind processor, so rows read back as the ORM's.
    dialect = conn.dialect
    process = _ENTRIES.c.recorded_at.type.dialect_impl(dialect).bind_processor(dialect)
    recorded = process(when) if process else when
    conn.exec_driver_sql(
        f"INSERT INTO {LogEntryRow.__tablename__} (seq, kind, recorded_at, leaf_data, leaf_hash) "
        "VALUES (?, ?, ?, ?, ?)",
        [(r["seq"], r["kind"], recorded, r["leaf_data"], r["leaf_hash"]) for r in rows],
    )
    conn.exec_driver_sql(
        f'INSERT INTO {TreeNodeRow.__tablename__} (level, "index", hash) VALUES (?, ?, ?)',
        [(n["level"], n["index"], n["hash"]) for n in nodes],
    )


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
    when = at or datetime.now(UTC)
    kinds = [kind for kind, _ in items]
    first, datas, leaves = _append(
        session,
        kinds,
        lambda i, seq, stamp: leaf_bytes(seq, kinds[i], stamp, items[i][1]),
        when,
    )
    return [
        Entry(first + i, kind, when, dict(body), datas[i], leaves[i])
        for i, (kind, body) in enumerate(items)
    ]


def append_encoded(
    session: Session, kind: str, bodies: Sequence[bytes], *, at: datetime | None = None
) -> int:
    """Append entries of one ``kind`` whose bodies are already canonical JSON bytes.

    The bulk path of :func:`ledger.post_many`; see :func:`append_many`. Returns the
    sequence number of the first entry; the rest follow it.
    """
    if not bodies:
        raise ValueError("append_encoded needs at least one body")
    return append_many(session, [(kind, body) for body in bodies], at=at)


def append_many(
    session: Session,
    entries: Sequence[tuple[str, bytes]],
    *,
    at: datetime | None = None,
) -> int:
    """Append ``(kind, body)`` entries whose bodies are already canonical JSON bytes.

    One head lock, one Merkle frontier read and root, one insert per table for the
    whole batch, in the caller's transaction. Each leaf is spliced from the body's
    bytes (RFC 8785 is compositional, so the leaf equals :func:`leaf_bytes` of the
    parsed body; tests hold the two together) instead of serialising every body
    again. The caller guarantees that every body is canonical (``canonical_json``
    of an object). Returns the sequence number of the first entry; the rest follow
    it in order. All entries share the recorded time ``at`` (default now, UTC).
    """
    if not entries:
        raise ValueError("append_many needs at least one entry")
    kinds = [kind for kind, _ in entries]
    tails = {k: b',"kind":' + _json_text(k) + b',"seq":' for k in set(kinds)}
    when = at or datetime.now(UTC)
    start = b'{"at":"' + format_time(when).encode("ascii") + b'","body":'
    first, _, _ = _append(
        session,
        kinds,
        lambda i, seq, _stamp: b"%s%s%s%d}" % (start, entries[i][1], tails[kinds[i]], seq),
        when,
    )
    return first


def _json_text(value: str) -> bytes:
    return canonical_json([value])[1:-1]


def _append(
    session: Session,
    kinds: Sequence[str],
    encode: Callable[[int, int, str], bytes],
    when: datetime,
) -> tuple[int, list[bytes], list[bytes]]:
    """Lock the head, hash ``encode(i, seq, stamp)`` for each item, store entries and nodes.

    Returns the first sequence number, the leaf data and the leaf hashes. The Merkle
    bookkeeping (frontier read, new nodes, root) is done once for the whole batch.
    """
    for kind in set(kinds):
        if not kind or len(kind) > 64:
            raise ValueError(f"entry kind must be 1-64 characters, got {kind!r}")
    stamp = format_time(when)  # once per batch: every entry shares the time
    head = _lock_head(session)
    size = first = head.size

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

    datas: list[bytes] = []
    leaves: list[bytes] = []
    new_nodes: list[dict[str, Any]] = []
    new_rows: list[dict[str, Any]] = []
    for i, kind in enumerate(kinds):
        seq = size
        data = encode(i, seq, stamp)
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
        datas.append(data)
        leaves.append(leaf)

    _insert_rows(session, new_rows, new_nodes, when)
    root = frontier[-1][2]
    for _, _, node in reversed(frontier[:-1]):
        root = hash_children(node, root)
    head.size = size
    head.root = root
    session.flush()
    return first, datas, leaves


def append_entry(
    session: Session, kind: str, body: Mapping[str, Any], *, at: datetime | None = None
) -> Entry:
    """Append one entry in the caller's transaction; see :func:`append_entries`."""
    return append_entries(session, [(kind, body)], at=at)[0]
