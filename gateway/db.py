"""Engines and sessions for SQLite (embedded default) and PostgreSQL (deployment).

SQLite note: pysqlite's default deferred transactions take the write lock only
at the first write, so two appenders that both read the log head first can
deadlock. We disable pysqlite's own transaction handling and issue
``BEGIN IMMEDIATE`` ourselves (the recipe in SQLAlchemy's SQLite dialect docs),
which serialises writers at ``begin`` and makes ``append_entry`` gap-free.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.engine import create_engine as sa_create_engine
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["make_engine", "make_sessionmaker", "all_metadata", "create_schema", "session_scope"]


def all_metadata() -> list[MetaData]:
    """Every package's MetaData, in dependency order (ledger first)."""
    import consent
    import ledger

    metas = [ledger.metadata]
    consent_meta = getattr(consent, "metadata", None)
    if consent_meta is not None:
        metas.append(consent_meta)
    return metas


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
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa_create_engine(url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def create_schema(engine: Engine) -> None:
    """Create every table directly (tests, demo). Deployment uses ``alembic upgrade head``."""
    for meta in all_metadata():
        meta.create_all(engine)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    with factory() as session, session.begin():
        yield session
