"""Database wiring: read-only sessions see one snapshot and never block writers."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from gateway.db import create_schema, make_engine, make_read_sessionmaker, make_sessionmaker
from ledger import append_entries, tree_head


def _append(sessions: sessionmaker[Session], count: int) -> None:
    with sessions() as s, s.begin():
        append_entries(s, [("test.db", {"i": i}) for i in range(count)])


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[tuple[Path, Engine]]:
    """A SQLite file with the schema, and an engine on it (the lock tests are SQLite's own)."""
    path = tmp_path / "locks.db"
    engine = make_engine(f"sqlite:///{path}")
    create_schema(engine)
    yield path, engine
    engine.dispose()


def test_read_session_keeps_its_snapshot(engine: Engine, sessions: sessionmaker[Session]) -> None:
    """A commit made while a read session is open stays invisible to it until it ends."""
    _append(sessions, 3)
    reads = make_read_sessionmaker(engine)

    with reads() as r, r.begin():
        before = tree_head(r).size
        _append(sessions, 2)
        during = tree_head(r).size
    with reads() as r, r.begin():
        after = tree_head(r).size

    assert (before, during, after) == (3, 3, 5)


def test_postgres_read_session_is_repeatable_read_and_read_only(pg_schema_url: str) -> None:
    """On PostgreSQL the read session runs REPEATABLE READ READ ONLY; a write is refused."""
    engine = make_engine(pg_schema_url)
    reads = make_read_sessionmaker(engine)

    with reads() as r, r.begin():
        level = r.execute(text("SHOW transaction_isolation")).scalar_one()
        read_only = r.execute(text("SHOW transaction_read_only")).scalar_one()
    with pytest.raises(DBAPIError) as info, reads() as r, r.begin():
        r.execute(text("CREATE TABLE read_only_probe (x int)"))
    with engine.connect() as conn:
        plain = conn.execute(text("SHOW transaction_read_only")).scalar_one()
    engine.dispose()

    assert (level, read_only, plain) == ("repeatable read", "on", "off")
    assert "read-only" in str(info.value)


def test_sqlite_read_session_does_not_take_the_write_lock(
    sqlite_file: tuple[Path, Engine],
) -> None:
    """While a read session is open on SQLite, a writer can still BEGIN IMMEDIATE at once."""
    path, engine = sqlite_file
    _append(make_sessionmaker(engine), 1)
    reads = make_read_sessionmaker(engine)
    writer = sqlite3.connect(path, timeout=0, isolation_level=None)

    with reads() as r, r.begin():
        tree_head(r)
        writer.execute("BEGIN IMMEDIATE")  # "database is locked" if the reader held the lock
        writer.execute("ROLLBACK")
    writer.close()


def test_sqlite_write_session_still_takes_the_write_lock(
    sqlite_file: tuple[Path, Engine],
) -> None:
    """Ordinary sessions keep BEGIN IMMEDIATE, so appenders stay serialised."""
    path, engine = sqlite_file
    sessions = make_sessionmaker(engine)
    writer = sqlite3.connect(path, timeout=0, isolation_level=None)

    with sessions() as s, s.begin(), pytest.raises(sqlite3.OperationalError):
        s.execute(text("SELECT 1"))
        writer.execute("BEGIN IMMEDIATE")
    writer.close()
