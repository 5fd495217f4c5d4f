"""``fedgate retention sweep``: delete scores and ERP-derived PDs past their consents' data life."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from .. import retention
from ._common import console, fail, sessions, settings

__all__ = ["app", "sweep"]

app = typer.Typer(no_args_is_help=True)


@app.command("sweep")
def sweep(
    jobs_dir: Annotated[
        Path | None, typer.Option("--jobs-dir", help="Job output folders (default <data>/jobs).")
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="The sweep's moment, RFC 3339 (default now).")
    ] = None,
) -> None:
    """Remove scores and ERP-derived PDs older than their consents' data_life_days (ledgered)."""
    moment = None
    if at is not None:
        try:
            moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            fail("BAD_TIME", f"--at must be an RFC 3339 time, got {at!r}")
        if moment.tzinfo is None:
            fail("BAD_TIME", "--at must carry a time zone (e.g. Z)")
    folder = jobs_dir if jobs_dir is not None else settings().data_dir / "jobs"
    with sessions()() as s:
        report = retention.sweep(s, jobs_dir=folder, at=moment)
    where = "nothing to remove" if report.ledger_seq is None else f"ledger #{report.ledger_seq}"
    console.print(
        f"retention sweep at {report.at.isoformat()}: {report.scores_removed} score rows in "
        f"{report.files_rewritten} file(s), {report.decisions_cleared} line decision PD(s), "
        f"{report.merchants} merchant(s); {where}"
    )
