"""Schema migrations with Alembic, callable from the CLI and from tests."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from .metadata import all_metadata

__all__ = [
    "VERSION_TABLE",
    "alembic_config",
    "current_revision",
    "ensure_schema",
    "head_revision",
    "stamp_head_if_unversioned",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"


def alembic_config(url: str) -> Config:
    """An Alembic config for fedgate's single migration environment, bound to ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = url
    return cfg


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    """The migration scripts, parsed once per process (tests stamp many databases)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg)


def head_revision() -> str:
    """The latest revision id of fedgate's migration history."""
    head = _scripts().get_current_head()
    if head is None:
        raise RuntimeError("fedgate's migration history has no head revision")
    return head


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (default: the latest)."""
    command.upgrade(alembic_config(url), revision)


def current_revision(connection: Connection) -> str | None:
    """The revision the database records, or None when it records none."""
    return MigrationContext.configure(connection).get_current_revision()


def stamp_head_if_unversioned(connection: Connection) -> None:
    """Record the head revision on a database that records none yet (after ``create_all``)."""
    context = MigrationContext.configure(connection)
    if context.get_current_revision() is None:
        context.stamp(_scripts(), "head")


def _fedgate_tables() -> set[str]:
    return {table.name for meta in all_metadata() for table in meta.tables.values()}


def ensure_schema(url: str) -> None:
    """Bring the database at ``url`` to the head revision, whatever state it is in.

    An empty or versioned database is upgraded by Alembic. A database whose
    fedgate tables were made by ``create_all`` without recording a revision
    (the demo, or an older fedgate CLI) is adopted instead: missing tables are
    created and the head is stamped, since migrating it would try to create its
    existing tables again.

    Parameters
    ----------
    url : str
        SQLAlchemy URL of the database.
    """
    from .db import create_schema, make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
        if VERSION_TABLE not in tables and tables & _fedgate_tables():
            create_schema(engine)
            return
    finally:
        engine.dispose()
    upgrade(url)
