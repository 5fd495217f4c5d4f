"""Every package's tables, in dependency order: what schema creation and migrations cover.

Its own module so that :mod:`gateway.db` (schema creation) and
:mod:`gateway.migrate` (Alembic) both read it without importing each other.
"""

from __future__ import annotations

from sqlalchemy import MetaData

__all__ = ["all_metadata"]


def all_metadata() -> list[MetaData]:
    """Every package's MetaData, in dependency order (ledger first)."""
    import consent
    import ledger

    from .credit import metadata as credit_meta

    return [ledger.metadata, consent.metadata, credit_meta]
