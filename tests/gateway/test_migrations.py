"""Alembic migrations produce exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import CheckConstraint, MetaData, create_engine, inspect, text
from sqlalchemy.engine import Connection
from typer.testing import CliRunner

from gateway.cli import app
from gateway.db import all_metadata, create_schema, make_engine
from gateway.migrate import head_revision, upgrade
from ledger._book_models import BOOK_TRIGGERS
from tests.conftest import BACKENDS, DEFAULT_PG_URL
from tests.utils.cli import cli_settings

_TRIGGER_NAME = re.compile(r"CREATE (?:OR REPLACE )?TRIGGER (?:IF NOT EXISTS )?(\w+)")


def _combined_metadata() -> MetaData:
    combined = MetaData()
    for meta in all_metadata():
        for table in meta.tables.values():
            table.to_metadata(combined)
    return combined


@pytest.fixture(params=BACKENDS)
def new_empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """A factory of URLs to databases with no tables at all, all on one backend."""
    base = os.environ.get("FEDGATE_TEST_POSTGRES_URL", DEFAULT_PG_URL)
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    schemas: list[str] = []

    def new() -> str:
        name = f"m_{uuid.uuid4().hex[:12]}"
        if request.param == "sqlite":
            return f"sqlite:///{tmp_path / f'{name}.db'}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        schemas.append(name)
        sep = "&" if "?" in base else "?"
        return f"{base}{sep}options={quote(f'-csearch_path={name}')}"

    yield new
    with admin.connect() as conn:
        for name in schemas:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    admin.dispose()


@pytest.fixture
def empty_db_url(new_empty_db: Callable[[], str]) -> str:
    """A URL to a database with no tables at all."""
    return new_empty_db()


@pytest.fixture
def cli(empty_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """A CLI runner on the empty database; CLI caches reset and its engine closed after."""
    with cli_settings(monkeypatch, empty_db_url, tmp_path / "data"):
        yield CliRunner()


def _with_connection(url: str, read: Callable[[Connection], object]) -> object:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return read(conn)
    finally:
        engine.dispose()


def _version(url: str) -> object:
    return _with_connection(
        url, lambda conn: conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    )


def _diff(url: str) -> object:
    return _with_connection(
        url, lambda conn: compare_metadata(MigrationContext.configure(conn), _combined_metadata())
    )


def _check_constraints(conn: Connection) -> dict[str, set[tuple[str | None, str]]]:
    """``{table: {(name, sql text)}}`` of every fedgate table, as the database reports them."""
    inspector = inspect(conn)
    return {
        table.name: {(c["name"], c["sqltext"]) for c in inspector.get_check_constraints(table.name)}
        for table in _combined_metadata().sorted_tables
    }


def _triggers(conn: Connection) -> set[tuple[str, str]]:
    """``{(table, trigger)}`` in this database (on PostgreSQL: this schema only)."""
    if conn.dialect.name == "sqlite":
        query = "SELECT tbl_name, name FROM sqlite_master WHERE type = 'trigger'"
    else:
        query = (
            "SELECT c.relname, t.tgname FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE NOT t.tgisinternal AND n.nspname = current_schema()"
        )
    return {(row[0], row[1]) for row in conn.execute(text(query))}


def test_upgrade_head_matches_models(empty_db_url: str) -> None:
    """`alembic upgrade head` on an empty database yields the models' schema, no diff."""
    upgrade(empty_db_url)

    diff = _diff(empty_db_url)

    assert diff == []


def test_upgrade_is_idempotent(empty_db_url: str) -> None:
    """Running the upgrade twice is a no-op the second time."""
    upgrade(empty_db_url)
    upgrade(empty_db_url)

    version = _version(empty_db_url)

    assert version == head_revision()


def test_check_constraints_match_models(new_empty_db: Callable[[], str]) -> None:
    """Every CHECK constraint of the models exists after the migration, by name and by text.

    compare_metadata ignores CHECK constraints, so names are compared with the
    models and the text with a ``create_all`` database on the same backend
    (each backend normalises the SQL its own way).
    """
    migrated, reference = new_empty_db(), new_empty_db()
    upgrade(migrated)
    engine = make_engine(reference)
    create_schema(engine)
    engine.dispose()
    wanted = {
        table.name: {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
        for table in _combined_metadata().sorted_tables
    }

    got = _with_connection(migrated, _check_constraints)
    expected = _with_connection(reference, _check_constraints)

    assert isinstance(got, dict)
    assert {table: {name for name, _ in checks} for table, checks in got.items()} == wanted
    assert got == expected


def test_upgrade_installs_exactly_the_models_triggers(new_empty_db: Callable[[], str]) -> None:
    """The migration creates the same triggers as create_all, by name, and no others."""
    migrated, reference = new_empty_db(), new_empty_db()
    upgrade(migrated)
    engine = make_engine(reference)
    create_schema(engine)
    dialect = engine.dialect.name
    engine.dispose()
    book = {m[1] for ddl in BOOK_TRIGGERS[dialect] if (m := _TRIGGER_NAME.match(ddl))}

    got = _with_connection(migrated, _triggers)
    expected = _with_connection(reference, _triggers)

    assert got == expected
    assert isinstance(got, set)
    assert {name for table, name in got if table == "book_transfers"} == book


def test_db_upgrade_after_another_command_is_a_no_op(cli: CliRunner, empty_db_url: str) -> None:
    """The CLI sets a new database up through Alembic, so `db upgrade` afterwards succeeds."""
    head = cli.invoke(app, ["ledger", "head"])
    upgraded = cli.invoke(app, ["db", "upgrade"])

    assert head.exit_code == 0, head.output
    assert upgraded.exit_code == 0, upgraded.output
    assert _version(empty_db_url) == head_revision()
    assert _diff(empty_db_url) == []


def test_db_upgrade_adopts_a_create_all_schema(cli: CliRunner, empty_db_url: str) -> None:
    """Tables made by plain create_all, with no revision recorded, are stamped, not re-created."""
    engine = make_engine(empty_db_url)
    for meta in all_metadata():
        meta.create_all(engine)
    engine.dispose()

    upgraded = cli.invoke(app, ["db", "upgrade"])
    again = cli.invoke(app, ["db", "upgrade"])

    assert upgraded.exit_code == 0, upgraded.output
    assert again.exit_code == 0, again.output
    assert _version(empty_db_url) == head_revision()


def test_create_schema_records_the_head(empty_db_url: str) -> None:
    """A create_schema database records the head revision, so a later upgrade does nothing."""
    engine = make_engine(empty_db_url)
    create_schema(engine)
    engine.dispose()

    upgrade(empty_db_url)

    assert _version(empty_db_url) == head_revision()
