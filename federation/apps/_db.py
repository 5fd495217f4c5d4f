"""The ServerApp's connection to the platform database (consent state and the ledger).

The ServerApp runs in its own process in deployment, so it opens the database
from the URL in its run config. SQLite gets the same settings as the gateway's
engine (``BEGIN IMMEDIATE`` so log appends never deadlock, WAL, a busy timeout).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, create_engine, make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["open_sessions"]


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        if parsed.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def open_sessions(url: str) -> tuple[Engine, sessionmaker[Session]]:
    """An engine and session factory for the platform database at ``url``."""
    engine = _engine(url)
    return engine, sessionmaker(bind=engine, expire_on_commit=False)
