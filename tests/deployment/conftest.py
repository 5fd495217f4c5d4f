"""Fixtures of the deployment tests: a running platform on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.deploy import LocalFederation


@pytest.fixture(scope="function")
def fed(tmp_path: Path) -> Iterator[LocalFederation]:
    """A running platform (certs, SuperLink, proxy, signed release); torn down after."""
    federation = LocalFederation(tmp_path / "fed").up()
    try:
        yield federation
    finally:
        assert federation.down() == []
