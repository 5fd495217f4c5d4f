"""Alembic migrations produce exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, text

from gateway.db import all_metadata, make_engine
from gateway.migrate import upgrade
from tests.conftest import BACKENDS, DEFAULT_PG_URL


def _combined_metadata() -> MetaData:
    combined = MetaData()
    for meta in all_metadata():
        for table in meta.tables.values():
            table.to_metadata(combined)
    return combined


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to a database with no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    base = os.environ.get("FEDGATE_TEST_POSTGRES_URL", DEFAULT_PG_URL)
    schema = f"m_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def test_upgrade_head_matches_models(empty_db_url: str) -> None:
    """`alembic upgrade head` on an empty database yields the models' schema, no diff."""
    upgrade(empty_db_url)

    engine = make_engine(empty_db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), _combined_metadata())
    engine.dispose()

    assert diff == []


def test_upgrade_is_idempotent(empty_db_url: str) -> None:
    """Running the upgrade twice is a no-op the second time."""
    upgrade(empty_db_url)
    upgrade(empty_db_url)

    engine = make_engine(empty_db_url)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()

    assert version


def test_upgrade_installs_append_only_triggers(empty_db_url: str) -> None:
    """The book's append-only triggers exist after a migration, not only after create_all."""
    upgrade(empty_db_url)

    engine = make_engine(empty_db_url)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        else:
            query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
        names = set(conn.execute(text(query)).scalars())
    engine.dispose()

    assert any(name.startswith("book_transfers") for name in names)
