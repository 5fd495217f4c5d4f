"""The node's own SQLite files (approval register, privacy ledger): opened and written one way.

Both are read and written by every process that serves the node (simulation actors,
``subprocess`` ClientApps, the ``fedgate node`` CLI) at once, so each write is one
``BEGIN IMMEDIATE`` transaction (the writer lock taken up front, not on the first
write, so two read-modify-writes cannot interleave) and each file is in WAL mode with
``synchronous=FULL`` (a committed approval or ε charge survives a power cut).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["connect", "is_sqlite_file", "write_transaction"]

_MAGIC = b"SQLite format 3\x00"


def is_sqlite_file(path: Path) -> bool:
    """Does ``path`` start with SQLite's header (an empty or absent file does not)?"""
    try:
        with path.open("rb") as fh:
            return fh.read(len(_MAGIC)) == _MAGIC
    except FileNotFoundError:
        return False


def connect(path: Path | str, *, schema: str | None) -> sqlite3.Connection:
    """A connection with the settings above; ``schema`` (idempotent DDL) run first if given."""
    # isolation_level=None: we issue BEGIN (IMMEDIATE) ourselves, as ledger._engine does.
    conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=60000")
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    if schema is not None:
        conn.executescript(schema)
    return conn


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on ``conn``: committed if the body returns, rolled back if it
    raises; the connection is closed either way."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()
