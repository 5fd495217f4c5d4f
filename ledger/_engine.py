"""fedgate's one database engine recipe: SQLite (embedded default) and PostgreSQL (deployment).

Every package opens the platform database through :func:`make_engine` (the
gateway, the ServerApp's own process, benchmarks and tests), so the settings
cannot drift apart; it lives here, below ``consent`` and ``federation``, because
the log's gap-free appends depend on it.

SQLite note: pysqlite's default deferred transactions take the write lock only
at the first write, so two appenders that both read the log head first can
deadlock. We disable pysqlite's own transaction handling and issue
``BEGIN IMMEDIATE`` ourselves (the recipe in SQLAlchemy's SQLite dialect docs),
which serialises writers at ``begin`` and makes ``append_entry`` gap-free.

Reads that need no lock (export, verification, proofs) go through
:func:`make_read_sessionmaker`: a plain deferred ``BEGIN`` on SQLite, which in
WAL mode reads one snapshot without ever taking the write lock, and a
``REPEATABLE READ READ ONLY`` transaction on PostgreSQL, so every statement of
the session sees the same snapshot and writers are never blocked.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.engine import create_engine as sa_create_engine
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["READ_ONLY_OPTION", "make_engine", "make_read_sessionmaker", "make_sessionmaker"]

READ_ONLY_OPTION = "fedgate_read_only"
"""Execution option that makes the SQLite ``begin`` hook emit a deferred ``BEGIN``."""


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with fedgate's durability settings for the URL's backend."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa_create_engine(url, connect_args={"timeout": 60}, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            if parsed.database not in (None, "", ":memory:"):
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Readers must not take the write lock, or an export would stall every appender.
            read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa_create_engine(url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def make_read_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reads that see one snapshot and never block writers.

    Parameters
    ----------
    engine : Engine
        An engine from :func:`make_engine`; the returned sessions share its pool.

    Returns
    -------
    sessionmaker[Session]
        On SQLite, transactions start with a deferred ``BEGIN`` (a WAL read
        snapshot, no write lock); on PostgreSQL they are ``REPEATABLE READ`` and
        read only, so the database refuses any write made through them.
    """
    if engine.dialect.name == "sqlite":
        bound = engine.execution_options(**{READ_ONLY_OPTION: True})
    else:
        bound = engine.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
    return sessionmaker(bind=bound, expire_on_commit=False)
