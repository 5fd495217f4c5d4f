"""Alembic environment: one migration history for every package's tables.

The URL comes from ``config.attributes["url"]`` (set by :func:`gateway.migrate.upgrade`)
or, when run through the ``alembic`` command, from ``Settings``.
"""

from __future__ import annotations

from alembic import context

from gateway.db import all_metadata, make_engine
from gateway.settings import Settings

config = context.config
target_metadata = all_metadata()


def _url() -> str:
    url = config.attributes.get("url")
    return str(url) if url else Settings().resolved_database_url


def run_migrations_offline() -> None:
    """Emit SQL without a connection (``alembic upgrade head --sql``)."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations over a live connection (the normal path)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
