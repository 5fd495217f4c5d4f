"""``fedgate book …`` commands: accounts, opening accounts, transfers, balances.

Thin: each command parses its options, calls ``ledger`` inside one database
transaction and prints the result. Amounts are integer minor units (fen) on
the command line as everywhere else. A refusal prints ``error[CODE]: …`` on
stderr and exits 1 with nothing stored.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Column, Table

import ledger

from ._common import console, fail, session

app = typer.Typer(no_args_is_help=True)

MAX_META_BYTES = 64 * 1024
"""Largest --meta text read; the book itself caps stored metadata at 8 KiB canonical."""


def _transfer_json(t: ledger.Transfer) -> dict[str, Any]:
    return {
        "id": t.id,
        "debit": t.debit,
        "credit": t.credit,
        "amount": t.amount.amount,
        "currency": t.amount.currency,
        "metadata": dict(t.metadata),
        "link_id": t.link_id,
        "log_seq": t.log_seq,
        "posted_at": t.posted_at.isoformat(),
    }


@app.command("accounts")
def accounts() -> None:
    """List every account with its kind, balance and currency; check Σdebits = Σcredits."""
    try:
        with session() as s:
            tb = ledger.trial_balance(s)
            flags = {a.code: a.allow_negative for a in ledger.list_accounts(s)}
    except ledger.BookError as exc:
        fail(exc.code, str(exc))
    table = Table("kind", "balance", "currency", "no-neg")
    table.columns.insert(0, Column("account", no_wrap=True))
    for row in tb.rows:
        table.add_row(
            row.account,
            row.kind.value,
            str(row.balance).split(" ")[0],
            row.balance.currency,
            "" if flags[row.account] else "yes",
        )
    console.print(table)
    for currency in sorted(set(tb.debits) | set(tb.credits)):
        dr, cr = tb.debits.get(currency, 0), tb.credits.get(currency, 0)
        mark = "balanced" if dr == cr else "NOT BALANCED"
        console.print(f"{currency}: Σdebits {dr} = Σcredits {cr} ({mark})", highlight=False)


@app.command("open")
def open_(
    code: Annotated[str, typer.Argument(help="Account code, e.g. isv:acme:payable.")],
    kind: Annotated[str, typer.Option(help="asset, liability, equity, income or expense.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code, e.g. CNY.")],
    name: Annotated[str | None, typer.Option(help="Display name (default: the code).")] = None,
    no_negative: Annotated[
        bool, typer.Option("--no-negative", help="Refuse transfers that take it below zero.")
    ] = False,
) -> None:
    """Open an account (logged as ``account.opened``)."""
    try:
        with session() as s:
            acct = ledger.open_account(
                s, code, name or code, kind, currency, allow_negative=not no_negative
            )
    except ledger.BookError as exc:
        fail(exc.code, str(exc))
    console.print(f"opened {acct.code} ({acct.kind.value}, {acct.currency})", highlight=False)


@app.command("chart")
def chart(
    currency: Annotated[str, typer.Option(help="ISO 4217 code of the book.")] = "CNY",
    isv: Annotated[
        list[str] | None, typer.Option(help="ISV id to open accounts for; repeat.")
    ] = None,
) -> None:
    """Open the standard chart of accounts (idempotent), plus payable/settled per ISV."""
    try:
        with session() as s:
            opened = ledger.open_standard_chart(s, currency)
            for isv_id in isv or []:
                opened.extend(ledger.open_isv_accounts(s, isv_id, currency))
    except ledger.BookError as exc:
        fail(exc.code, str(exc))
    for acct in opened:
        console.print(f"{acct.code} ({acct.kind.value}, {acct.currency})", highlight=False)


@app.command("transfer")
def transfer(
    transfer_id: Annotated[str, typer.Option("--id", help="Client-chosen idempotency key.")],
    debit: Annotated[str, typer.Option(help="Account debited.")],
    credit: Annotated[str, typer.Option(help="Account credited.")],
    amount: Annotated[int, typer.Option(help="Integer minor units (fen), > 0.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code, e.g. CNY.")],
    meta: Annotated[str, typer.Option(help="Metadata as a JSON object.")] = "{}",
) -> None:
    """Post one transfer; repeating the same request prints the original."""
    try:
        metadata = ledger.loads_bounded(meta, what="--meta", max_bytes=MAX_META_BYTES)
    except ledger.BoundedInputError as exc:  # not JSON, too deep or too large
        fail("INVALID_METADATA", str(exc))
    if not isinstance(metadata, dict):
        fail("INVALID_METADATA", "--meta must be a JSON object")
    try:
        request = ledger.TransferRequest(
            transfer_id, debit, credit, ledger.Money(amount, currency), metadata
        )
        with session() as s:
            posted = ledger.post_transfer(s, request)
    except ledger.BookError as exc:
        fail(exc.code, str(exc))
    typer.echo(json.dumps(_transfer_json(posted), indent=2))


@app.command("balance")
def balance(account: Annotated[str, typer.Argument(help="Account code.")]) -> None:
    """Print an account's balance in its normal direction (minor units and major units)."""
    try:
        with session() as s:
            money = ledger.balance(s, account)
    except ledger.BookError as exc:
        fail(exc.code, str(exc))
    typer.echo(f"{account}\t{money.amount}\t{money}")


@app.command("show")
def show(transfer_id: Annotated[str, typer.Argument(help="Transfer id.")]) -> None:
    """Print one transfer as JSON."""
    with session() as s:
        found = ledger.get_transfer(s, transfer_id)
    if found is None:
        fail("UNKNOWN_TRANSFER", f"no transfer {transfer_id!r}")
    typer.echo(json.dumps(_transfer_json(found), indent=2))
