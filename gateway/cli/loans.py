"""``fedgate loans …``: import loan events from the lending system.

The file is read whole and imported in one transaction: a repeat is a no-op, a
conflicting repeat or a bad row is refused with its line number and nothing of the
file is kept (:func:`gateway.credit.import_events`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import credit
from ._common import console, fail, session
from .credit import policy_in_force

app = typer.Typer(no_args_is_help=True)

__all__ = ["app"]


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="JSON Lines (.jsonl) or CSV (.csv) of events.")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="jsonl or csv; default from the extension.")
    ] = None,
) -> None:
    """Import loan events idempotently (drawdown, repayment, write_off, line_change, recovery)."""
    kind = fmt or ("csv" if file.suffix.lower() == ".csv" else "jsonl")
    try:
        data = file.read_bytes()
    except OSError as exc:
        fail("BAD_FILE", f"cannot read {file}: {exc.strerror or exc}")
    try:
        with session() as s:
            _, pol = policy_in_force(s)
            r = credit.import_bytes(
                s,
                data,
                fmt=kind,
                source=file.name,
                default_rate_bp=pol.pricing.rate_bp,
                currency=pol.currency,
            )
    except credit.CreditError as exc:
        fail(exc.code, str(exc))
    if r.already_imported:
        console.print(f"{file.name}: already imported (import {r.import_id[:16]}…); nothing to do")
        return
    console.print(
        f"{file.name}: {r.rows} rows, {r.added} added, {r.repeated} already known, "
        f"{r.new_loans} new loans (import {r.import_id[:16]}…)"
    )
