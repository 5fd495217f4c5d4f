"""``fedgate db …`` commands: schema migrations."""

from __future__ import annotations

import typer

from ..migrate import upgrade
from ._common import console, settings

app = typer.Typer(no_args_is_help=True)


@app.command("upgrade")
def upgrade_cmd(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply Alembic migrations to the configured database (deployment path)."""
    cfg = settings()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(cfg.resolved_database_url, revision)
    console.print(f"database at revision [bold]{revision}[/]")
