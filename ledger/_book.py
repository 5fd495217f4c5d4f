"""The double-entry book: accounts, idempotent transfers, linked batches, balances.

Every function takes the caller's ``Session`` and works inside the caller's
transaction; the caller commits. A posting writes the transfer row **and** its
``transfer.posted`` log entry under one savepoint, so either both are stored or
neither is, and a refused request leaves the database exactly as it was even
when the caller goes on to commit other work.

Balance convention
------------------
Each transfer is one row with a debit leg and a credit leg of the same amount
and currency, so Σdebits = Σcredits per currency holds by construction (see
:mod:`ledger._book_models` for what the database enforces itself). An
account's balance is derived from its postings, in its *normal* direction:

========================  ==========  ==================================
kind                      normal      balance
========================  ==========  ==================================
asset, expense            debit       Σ debits − Σ credits
liability, income, equity credit      Σ credits − Σ debits
========================  ==========  ==================================

So a positive balance is the ordinary state of every account, and
``allow_negative=False`` means "never below zero in its normal direction"
(cash cannot be overdrawn; an ISV cannot be paid more than it is owed).

Concurrency
-----------
Idempotency and the no-negative rule are race-free on both backends. Every
posting appends to the log, and the log serialises appenders on its head row
(``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so
after the append the transfer table cannot change under us: the id is looked up
again and the no-negative accounts are locked (head first, then accounts in
code order, the same order for every poster, so no deadlock) and their balances
read. A unique-key violation on insert is still caught and answered by
re-reading, in case a caller runs with a stricter isolation level.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ._book_models import AccountRow, TransferRow
from ._book_types import (
    _IDENT,
    ACCOUNT_OPENED,
    Account,
    AccountKind,
    Transfer,
    TransferRequest,
    TrialBalance,
    TrialBalanceRow,
    _utc,
)
from ._errors import AccountRejected, MoneyError
from ._log import append_entry
from ._money import Money
from ._transfers import (
    _signed,
    _totals,
    get_transfer,
    post_linked,
    post_transfer,
    transfers_of,
)

__all__ = [
    "Account",
    "AccountKind",
    "Transfer",
    "TransferRequest",
    "TrialBalance",
    "TrialBalanceRow",
    "balance",
    "get_account",
    "get_transfer",
    "list_accounts",
    "open_account",
    "post_linked",
    "post_transfer",
    "transfers_of",
    "trial_balance",
]

# -- accounts -------------------------------------------------------------------------


def _account(row: AccountRow) -> Account:
    return Account(
        code=row.code,
        name=row.name,
        kind=AccountKind(row.kind),
        currency=row.currency,
        allow_negative=row.allow_negative,
        opened_at=_utc(row.opened_at),
    )


def open_account(
    session: Session,
    code: str,
    name: str,
    kind: AccountKind | str,
    currency: str,
    *,
    allow_negative: bool = True,
) -> Account:
    """Open an account and log ``account.opened`` in the caller's transaction.

    Parameters
    ----------
    session : Session
        The caller's session; the caller commits.
    code : str
        Unique code, 1–128 of ``[A-Za-z0-9_.:/@#+-]`` (``isv:acme:payable``).
    name : str
        Human-readable name, 1–255 characters.
    kind : AccountKind | str
        ``asset``, ``liability``, ``equity``, ``income`` or ``expense``.
    currency : str
        ISO 4217 code; every transfer touching the account must use it.
    allow_negative : bool, default True
        False refuses any transfer that would take the balance below zero.

    Raises
    ------
    AccountRejected
        ``INVALID_ACCOUNT`` for a bad code, name, kind or currency;
        ``DUPLICATE_ACCOUNT`` if ``code`` exists. Nothing is written.
    """
    if not isinstance(code, str) or not _IDENT.fullmatch(code):
        raise AccountRejected(f"invalid account code {code!r}", code="INVALID_ACCOUNT")
    if not isinstance(name, str) or not 1 <= len(name) <= 255:
        raise AccountRejected("account name must be 1-255 characters", code="INVALID_ACCOUNT")
    try:
        kind = AccountKind(kind)
    except ValueError as exc:
        raise AccountRejected(f"unknown account kind {kind!r}", code="INVALID_ACCOUNT") from exc
    try:
        Money.zero(currency)
    except MoneyError as exc:
        raise AccountRejected(str(exc), code="INVALID_ACCOUNT") from exc
    now = datetime.now(UTC)
    row = AccountRow(
        code=code,
        name=name,
        kind=kind.value,
        currency=currency,
        allow_negative=allow_negative,
        opened_at=now,
    )
    body = {
        "code": code,
        "name": name,
        "kind": kind.value,
        "currency": currency,
        "allow_negative": allow_negative,
    }
    duplicate = AccountRejected(f"account {code!r} already exists", code="DUPLICATE_ACCOUNT")
    if session.get(AccountRow, code) is not None:
        raise duplicate
    savepoint = session.begin_nested()
    try:
        # Log first: holding the log head before the insert gives every writer
        # the same lock order (head, then rows), whatever it appended earlier.
        append_entry(session, ACCOUNT_OPENED, body, at=now)
        if session.execute(select(AccountRow.code).where(AccountRow.code == code)).first():
            raise duplicate
        session.add(row)
        session.flush()
    except IntegrityError as exc:
        savepoint.rollback()
        # Only a primary-key race makes a duplicate. Any other violation (a CHECK,
        # a too-long value) means validation above let a bad row through: a bug,
        # so it surfaces as the database error instead of a misleading code.
        if session.get(AccountRow, code, populate_existing=True) is not None:
            raise duplicate from exc
        raise
    except BaseException:
        if savepoint.is_active:
            savepoint.rollback()
        raise
    savepoint.commit()
    return _account(row)


def get_account(session: Session, code: str) -> Account:
    """The account ``code``; ``AccountRejected(code="UNKNOWN_ACCOUNT")`` if there is none."""
    row = session.get(AccountRow, code)
    if row is None:
        raise AccountRejected(f"no account {code!r}", code="UNKNOWN_ACCOUNT")
    return _account(row)


def list_accounts(session: Session) -> list[Account]:
    """Every account, ordered by code."""
    rows = session.execute(select(AccountRow).order_by(AccountRow.code)).scalars()
    return [_account(r) for r in rows]


# -- balances -------------------------------------------------------------------------


def balance(session: Session, account: str) -> Money:
    """The account's balance in its normal direction, derived from its postings.

    Raises ``AccountRejected(code="UNKNOWN_ACCOUNT")`` if there is no such account.
    """
    acct = get_account(session, account)
    return Money(_signed(acct.kind, *_totals(session, account)), acct.currency)


def _grouped(session: Session, column: Any) -> dict[str, int]:
    rows = session.execute(select(column, func.sum(TransferRow.amount)).group_by(column)).all()
    return {str(code): int(total) for code, total in rows}


def trial_balance(session: Session) -> TrialBalance:
    """Every account's Σdebits, Σcredits and balance, with totals per currency."""
    debits = _grouped(session, TransferRow.debit_account)
    credits = _grouped(session, TransferRow.credit_account)
    rows: list[TrialBalanceRow] = []
    total_dr: dict[str, int] = {}
    total_cr: dict[str, int] = {}
    for acct in list_accounts(session):
        dr, cr = debits.get(acct.code, 0), credits.get(acct.code, 0)
        rows.append(
            TrialBalanceRow(
                account=acct.code,
                kind=acct.kind,
                debits=Money(dr, acct.currency),
                credits=Money(cr, acct.currency),
                balance=Money(_signed(acct.kind, dr, cr), acct.currency),
            )
        )
        total_dr[acct.currency] = total_dr.get(acct.currency, 0) + dr
        total_cr[acct.currency] = total_cr.get(acct.currency, 0) + cr
    return TrialBalance(rows=tuple(rows), debits=total_dr, credits=total_cr)
