"""federation.deploy's public surface is declared once: ``__all__`` matches what it exports."""

from __future__ import annotations

import federation.deploy as deploy


def test_all_lists_exactly_the_public_names() -> None:
    """Every name in ``__all__`` exists, and every public attribute is listed."""
    public = {n for n in vars(deploy) if not n.startswith("_")} - {"annotations"}
    modules = {n for n in public if type(getattr(deploy, n)).__name__ == "module"}
    assert set(deploy.__all__) == public - modules
    assert len(deploy.__all__) == len(set(deploy.__all__))
