"""``fedgate db …`` commands: schema migrations."""

from __future__ import annotations

import typer
from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError

from ..migrate import ensure_schema, upgrade
from ._common import console, fail, settings

app = typer.Typer(no_args_is_help=True)


@app.command("upgrade")
def upgrade_cmd(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply Alembic migrations to the configured database (deployment path).

    Upgrading to ``head`` also adopts a database whose tables were created
    without a recorded revision (by the demo or an older fedgate) by stamping it.
    """
    cfg = settings()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        if revision == "head":
            ensure_schema(cfg.resolved_database_url)
        else:
            upgrade(cfg.resolved_database_url, revision)
    except (SQLAlchemyError, CommandError) as exc:
        fail("MIGRATION_FAILED", f"cannot upgrade to {revision}: {exc}")
    console.print(f"database at revision [bold]{revision}[/]")
