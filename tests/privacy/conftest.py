"""One small world per module: three ISVs, a few dozen merchants each, approvals at the nodes."""

from __future__ import annotations

import pytest

from ..federation._flworld import World, make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A world shared by a module's attacks (each attack uses its own node state)."""
    return make_world(tmp_path_factory.mktemp("privacy-world"))
