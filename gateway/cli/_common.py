"""What every CLI command shares: settings, the database, keys, and error exits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import NoReturn

import typer
from alembic.util import CommandError
from rich.console import Console
from rich.markup import escape
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..db import make_engine, make_read_sessionmaker, make_sessionmaker
from ..migrate import ensure_schema
from ..settings import Settings

console = Console()
err_console = Console(stderr=True)

__all__ = [
    "console",
    "err_console",
    "fail",
    "read_session",
    "settings",
    "sessions",
    "session",
]


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process settings, read once from the environment."""
    return Settings()


def _safe_url(url: str) -> str:
    """The URL as it may be printed: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"


@lru_cache(maxsize=1)
def sessions() -> sessionmaker[Session]:
    """A session factory over the configured database, migrated to the head revision.

    The schema goes through Alembic (or adopts a ``create_all`` schema by
    stamping it), so ``fedgate db upgrade`` afterwards finds nothing to do.
    """
    cfg = settings()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    url = cfg.resolved_database_url
    try:
        ensure_schema(url)
        engine = make_engine(url)
    except (SQLAlchemyError, CommandError) as exc:
        fail("DATABASE_UNAVAILABLE", f"cannot prepare the database at {_safe_url(url)}: {exc}")
    return make_sessionmaker(engine)


@lru_cache(maxsize=1)
def _read_sessions(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """Read-only sessions on the same engine; keyed by the factory so a reset never goes stale."""
    return make_read_sessionmaker(factory.kw["bind"])


@contextmanager
def session() -> Iterator[Session]:
    """One transaction on the configured database."""
    with sessions()() as s, s.begin():
        yield s


@contextmanager
def read_session() -> Iterator[Session]:
    """One read-only snapshot of the configured database; it never blocks writers."""
    with _read_sessions(sessions())() as s, s.begin():
        yield s


def fail(code: str, message: str, exit_code: int = 1) -> NoReturn:
    """Print ``error[CODE]: message`` to stderr and exit non-zero."""
    # Messages quote user input and database errors: brackets in them are text, not markup.
    err_console.print(f"[bold red]error[{escape(code)}][/]: {escape(message)}", highlight=False)
    raise typer.Exit(exit_code)
