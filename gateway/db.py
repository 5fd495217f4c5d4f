"""The platform database from the gateway's side: its tables, schema creation, sessions.

The engine recipe itself (SQLite ``BEGIN IMMEDIATE``, WAL, ``synchronous=FULL``,
read-only snapshots; PostgreSQL pre-ping and read-only ``REPEATABLE READ``) is
:mod:`ledger._engine`, the one every package uses; it is re-exported here for
the gateway's callers. Every package's tables are :func:`gateway.metadata.all_metadata`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from ledger import READ_ONLY_OPTION, make_engine, make_read_sessionmaker, make_sessionmaker

from .metadata import all_metadata

__all__ = [
    "READ_ONLY_OPTION",
    "all_metadata",
    "create_schema",
    "make_engine",
    "make_read_sessionmaker",
    "make_sessionmaker",
    "session_scope",
]


def create_schema(engine: Engine) -> None:
    """Create every missing table directly and record the Alembic head if no revision is.

    Used by tests, the demo and the benchmarks. Stamping the head (which the
    migration tests pin to the same schema as the models) lets a later
    ``fedgate db upgrade`` see an up-to-date database instead of trying to
    create the tables a second time. A database that already records a
    revision keeps it.
    """
    from .migrate import stamp_head_if_unversioned

    with engine.begin() as conn:
        for meta in all_metadata():
            meta.create_all(conn)
        stamp_head_if_unversioned(conn)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    with factory() as session, session.begin():
        yield session
