"""``fedgate settle --period`` and ``fedgate statements ISV --period``.

``settle`` closes the month (daily interest from each loan's balance history),
posts data-usage fees, interest shares and share claw-backs, nets claw-backs owed
against the payout, and instructs (``--clear``: and
clears) each ISV's payout; re-running it posts only what is new, so nothing is
paid twice. ``statements`` prints one ISV's statement as JSON or CSV.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import ledger

from .. import credit
from ._common import console, fail, session
from .credit import policy_in_force

__all__ = ["settle", "statements"]


def settle(
    period: Annotated[str, typer.Option("--period", help="The month, YYYY-MM.")],
    clear: Annotated[
        bool, typer.Option("--clear", help="Also record the payouts as cleared by the bank.")
    ] = False,
) -> None:
    """Close a month and settle every ISV's fees and interest shares for it."""
    try:
        p = credit.parse_period(period)
        with session() as s:
            version, pol = policy_in_force(s)
            done = credit.settle_period(s, p, policy_version=version, policy=pol, clear=clear)
            close = credit.close_period(s, p, currency=pol.currency, policy_version=version)
    except (credit.CreditError, ledger.BookError) as exc:
        fail(exc.code, str(exc))
    console.print(
        f"period {close.period}: {close.loans} loans accrued, interest {close.interest} fen "
        f"(on uplift {close.uplift_interest} fen); policy v{version}"
    )
    table = Table(
        "ISV",
        "fee (fen)",
        "share (fen)",
        "claw-back",
        "netted",
        "instructed",
        "cleared",
        "new this run",
        title=f"Settlement {p}",
    )
    for x in done:
        table.add_row(
            x.isv,
            str(x.fee),
            str(x.share),
            str(x.clawback),
            str(x.netted),
            str(x.instructed),
            str(x.cleared),
            str(x.newly_instructed),
        )
    console.print(table)


def statements(
    isv: Annotated[str, typer.Argument(help="ISV id.")],
    period: Annotated[str, typer.Option("--period", help="The month, YYYY-MM.")],
    fmt: Annotated[str, typer.Option("--format", help="json or csv.")] = "json",
    out: Annotated[Path | None, typer.Option("--out", help="Write here instead of stdout.")] = None,
) -> None:
    """Print one ISV's statement for a period: receipts, loans, totals tied to the book."""
    if fmt not in ("json", "csv"):
        fail("BAD_FORMAT", f"--format must be json or csv, got {fmt!r}")
    try:
        p = credit.parse_period(period)
        with session() as s:
            _, pol = policy_in_force(s)
            doc = credit.statement(s, isv, p, pol)
    except credit.CreditError as exc:
        fail(exc.code, str(exc))
    text = credit.statement_csv(doc) if fmt == "csv" else json.dumps(doc, indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}")
