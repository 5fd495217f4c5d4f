"""Shared fixtures: every database test runs against SQLite and PostgreSQL.

PostgreSQL comes from ``FEDGATE_TEST_POSTGRES_URL`` (``.ci/run`` sets it; the
default is the local ``test`` database). Each pytest process works in its own
schema so concurrent runs never see each other's rows. An unreachable
PostgreSQL is an error, never a skip: the suite is only green on both databases.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

from gateway.db import all_metadata, create_schema, make_engine, make_sessionmaker  # noqa: E402

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _pg_base_url() -> str:
    return os.environ.get("FEDGATE_TEST_POSTGRES_URL", DEFAULT_PG_URL)


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose connections live in a fresh schema for this pytest process."""
    base = _pg_base_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001 - report any connection failure the same way
        admin.dispose()
        pytest.fail(
            f"PostgreSQL unreachable at {base}: {exc}. Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
            "or set FEDGATE_TEST_POSTGRES_URL."
        )
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="session")
def _pg_engine(pg_schema_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_schema_url)
    create_schema(engine)
    yield engine
    engine.dispose()


def _truncate_all(engine: Engine) -> None:
    tables = [t.name for meta in all_metadata() for t in meta.sorted_tables]
    if tables:
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty fedgate schema, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fedgate.db'}"
        engine = make_engine(url)
        create_schema(engine)
        engine.dispose()
        yield url
    else:
        pg_engine: Engine = request.getfixturevalue("_pg_engine")
        _truncate_all(pg_engine)
        yield request.getfixturevalue("pg_schema_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on :func:`db_url` (both backends)."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """A session factory on :func:`engine` (both backends)."""
    return make_sessionmaker(engine)
