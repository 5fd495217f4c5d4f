"""Point the ``fedgate`` CLI at a test database and data directory for one test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.cli import _common


@contextmanager
def cli_settings(monkeypatch: pytest.MonkeyPatch, db_url: str, data_dir: Path) -> Iterator[None]:
    """Set the CLI's environment, reset its cached settings and sessions around the test.

    The engine a test's commands opened is disposed afterwards, so a PostgreSQL
    connection never outlives the test that made it (its schema is truncated next).
    """
    monkeypatch.setenv("FEDGATE_DATABASE_URL", db_url)
    monkeypatch.setenv("FEDGATE_DATA_DIR", str(data_dir))
    _common.settings.cache_clear()
    _common.sessions.cache_clear()
    try:
        yield
    finally:
        if _common.sessions.cache_info().currsize:
            _common.sessions().kw["bind"].dispose()
        _common.settings.cache_clear()
        _common.sessions.cache_clear()
