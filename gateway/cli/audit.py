"""``fedgate audit …`` commands: offline verification, no database needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import ledger

from ._common import fail
from .ledger import _print_report

app = typer.Typer(no_args_is_help=True)


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="Export written by `fedgate ledger export`.")],
    vkey: Annotated[
        str | None,
        typer.Option(help="The log's verifier key as you know it (default: the file's own)."),
    ] = None,
    canonical: Annotated[
        bool, typer.Option(help="Also check every leaf is RFC 8785 canonical JSON (slower).")
    ] = False,
) -> None:
    """Recompute every leaf and root, check every checkpoint; exit 0 only if all holds."""
    if not file.is_file():
        fail("NO_FILE", f"{file} does not exist", exit_code=2)
    try:
        report = ledger.audit_export(file, vkey=vkey, canonical=canonical)
    except ledger.LogError as exc:
        fail(exc.code, str(exc), exit_code=2)
    _print_report(report, file)
    if report.failure is not None:
        f = report.failure
        fail(f.code, f"first bad index {f.index}: {f.message}")
