"""What every CLI command shares: settings, the database, keys, and error exits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import NoReturn

import typer
from rich.console import Console
from sqlalchemy.orm import Session, sessionmaker

from ..db import create_schema, make_engine, make_sessionmaker
from ..settings import Settings

console = Console()
err_console = Console(stderr=True)

__all__ = ["console", "err_console", "fail", "settings", "sessions", "session"]


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process settings, read once from the environment."""
    return Settings()


@lru_cache(maxsize=1)
def sessions() -> sessionmaker[Session]:
    """A session factory over the configured database, schema created if missing."""
    cfg = settings()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(cfg.resolved_database_url)
    create_schema(engine)
    return make_sessionmaker(engine)


@contextmanager
def session() -> Iterator[Session]:
    """One transaction on the configured database."""
    with sessions()() as s, s.begin():
        yield s


def fail(code: str, message: str, exit_code: int = 1) -> NoReturn:
    """Print ``error[CODE]: message`` to stderr and exit non-zero."""
    err_console.print(f"[bold red]error[{code}][/]: {message}", highlight=False)
    raise typer.Exit(exit_code)
