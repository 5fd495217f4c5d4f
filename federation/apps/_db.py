"""The ServerApp's connection to the platform database (consent state and the ledger).

The ServerApp runs in its own process in deployment, so it opens the database
from the URL in its run config, with the one engine recipe (:func:`ledger.make_engine`)
the gateway uses too.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from ledger import make_engine, make_sessionmaker

__all__ = ["open_sessions"]


def open_sessions(url: str) -> tuple[Engine, sessionmaker[Session]]:
    """An engine and session factory for the platform database at ``url``."""
    engine = make_engine(url)
    return engine, make_sessionmaker(engine)
