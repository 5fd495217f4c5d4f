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

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ._book_models import AccountRow, TransferRow
from ._canonical import canonical_json
from ._errors import AccountRejected, MoneyError, TransferRejected
from ._log import append_entries, append_entry
from ._money import Money

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

TRANSFER_POSTED = "transfer.posted"
ACCOUNT_OPENED = "account.opened"
MAX_AMOUNT = 2**53 - 1
"""Largest amount: JSON (RFC 8785) carries integers exactly only up to 2**53 − 1."""
MAX_METADATA_BYTES = 8192
MAX_BATCH = 1000

_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/@#+\-]{0,127}")


class AccountKind(StrEnum):
    """What an account records; decides its normal side (see the module docstring)."""

    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    INCOME = "income"
    EXPENSE = "expense"

    @property
    def debit_normal(self) -> bool:
        """True for asset and expense accounts, whose balance grows with debits."""
        return self in (AccountKind.ASSET, AccountKind.EXPENSE)


@dataclass(frozen=True, slots=True)
class Account:
    """An account as stored."""

    code: str
    name: str
    kind: AccountKind
    currency: str
    allow_negative: bool
    opened_at: datetime


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """A request to move ``amount`` from ``credit`` to ``debit``.

    Parameters
    ----------
    id : str
        Client-chosen idempotency key, 1–128 of ``[A-Za-z0-9_.:/@#+-]``.
    debit : str
        Code of the account debited.
    credit : str
        Code of the account credited; must differ from ``debit``.
    amount : Money
        Positive minor units; its currency must be both accounts' currency.
    metadata : Mapping[str, Any], default {}
        JSON facts about the posting (job, round, merchant, loan); part of the
        request body, so a retry must repeat it exactly.
    """

    id: str
    debit: str
    credit: str
    amount: Money
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Transfer:
    """A posted transfer, with the log entry that records it."""

    id: str
    debit: str
    credit: str
    amount: Money
    metadata: Mapping[str, Any]
    link_id: str | None
    request_digest: bytes
    log_seq: int
    posted_at: datetime


@dataclass(frozen=True, slots=True)
class TrialBalanceRow:
    """One account's postings totals and balance."""

    account: str
    kind: AccountKind
    debits: Money
    credits: Money
    balance: Money


@dataclass(frozen=True, slots=True)
class TrialBalance:
    """Every account's totals, and Σdebits / Σcredits per currency."""

    rows: tuple[TrialBalanceRow, ...]
    debits: Mapping[str, int]
    credits: Mapping[str, int]

    @property
    def balanced(self) -> bool:
        """True when Σdebits = Σcredits in every currency."""
        currencies = set(self.debits) | set(self.credits)
        return all(self.debits.get(c, 0) == self.credits.get(c, 0) for c in currencies)


# -- accounts -------------------------------------------------------------------------


def _utc(at: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time the book returns is aware UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


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


# -- transfers ------------------------------------------------------------------------


def _body(
    request: TransferRequest, metadata: Mapping[str, Any], link_id: str | None
) -> dict[str, Any]:
    """The ``transfer.posted`` log body; its canonical bytes are the request digest."""
    return {
        "id": request.id,
        "debit": request.debit,
        "credit": request.credit,
        "amount": request.amount.amount,
        "currency": request.amount.currency,
        "metadata": dict(metadata),
        "link": link_id,
    }


def _reject(code: str, message: str, request_id: str | None) -> TransferRejected:
    return TransferRejected(message, code=code, transfer_id=request_id)


def _normalise(request: TransferRequest) -> dict[str, Any]:
    """Check the request's shape (no database); return its metadata in JSON form."""
    return _encode(request)[0]


def _encode(request: TransferRequest) -> tuple[dict[str, Any], bytes]:
    """Check the request's shape (no database); its metadata parsed and as canonical bytes."""
    rid = request.id if isinstance(request.id, str) else None
    if rid is None or not _IDENT.fullmatch(rid):
        raise _reject("INVALID_ID", f"invalid transfer id {request.id!r}", rid)
    for side in (request.debit, request.credit):
        if not isinstance(side, str) or not _IDENT.fullmatch(side):
            raise _reject("UNKNOWN_ACCOUNT", f"invalid account code {side!r}", rid)
    if request.debit == request.credit:
        raise _reject("SAME_ACCOUNT", f"debit and credit are both {request.debit!r}", rid)
    amount = request.amount
    if not isinstance(amount, Money):
        raise _reject("INVALID_AMOUNT", f"amount must be Money, got {type(amount).__name__}", rid)
    if not 0 < amount.amount <= MAX_AMOUNT:
        raise _reject(
            "INVALID_AMOUNT", f"amount must be in 1..2**53-1 minor units, got {amount.amount}", rid
        )
    if not isinstance(request.metadata, Mapping):
        raise _reject("INVALID_METADATA", "metadata must be a JSON object", rid)
    try:
        data = canonical_json(dict(request.metadata))
    except (TypeError, ValueError) as exc:
        raise _reject("INVALID_METADATA", f"metadata is not exact JSON: {exc}", rid) from exc
    if len(data) > MAX_METADATA_BYTES:
        raise _reject("INVALID_METADATA", f"metadata exceeds {MAX_METADATA_BYTES} bytes", rid)
    # The JSON round trip makes the stored, logged and returned metadata the same value.
    parsed: dict[str, Any] = json.loads(data)
    return parsed, data


def _transfer(row: TransferRow) -> Transfer:
    return Transfer(
        id=row.id,
        debit=row.debit_account,
        credit=row.credit_account,
        amount=Money(int(row.amount), row.currency),
        metadata=row.meta,
        link_id=row.link_id,
        request_digest=row.request_digest,
        log_seq=int(row.log_seq),
        posted_at=_utc(row.posted_at),
    )


def _load(session: Session, ids: Sequence[str]) -> dict[str, Transfer]:
    rows = session.execute(
        select(TransferRow).where(TransferRow.id.in_(ids)).execution_options(populate_existing=True)
    ).scalars()
    return {r.id: _transfer(r) for r in rows}


def _replay(
    ids: Sequence[str], digests: Sequence[bytes], found: Mapping[str, Transfer]
) -> list[Transfer]:
    """The originals if every id was posted with the same body; otherwise a conflict."""
    for rid, digest in zip(ids, digests, strict=True):
        original = found.get(rid)
        if original is None:
            posted = ", ".join(repr(i) for i in ids if i in found)
            raise _reject(
                "IDEMPOTENCY_CONFLICT",
                f"transfer id {rid!r} is new, but this batch also holds ids already posted "
                f"({posted}); a retry must repeat the original batch exactly",
                rid,
            )
        if original.request_digest != digest:
            raise _reject(
                "IDEMPOTENCY_CONFLICT",
                f"transfer id {rid!r} was already used for a different request",
                rid,
            )
    return [found[rid] for rid in ids]


def _signed(kind: AccountKind, debits: int, credits: int) -> int:
    return debits - credits if kind.debit_normal else credits - debits


def _totals(session: Session, code: str) -> tuple[int, int]:
    """Σdebits and Σcredits posted to ``code`` (PostgreSQL sums bigint as numeric: int())."""
    debits = session.execute(
        select(func.coalesce(func.sum(TransferRow.amount), 0)).where(
            TransferRow.debit_account == code
        )
    ).scalar_one()
    credits = session.execute(
        select(func.coalesce(func.sum(TransferRow.amount), 0)).where(
            TransferRow.credit_account == code
        )
    ).scalar_one()
    return int(debits), int(credits)


def _check_funds(
    session: Session, requests: Sequence[TransferRequest], accounts: Mapping[str, AccountRow]
) -> None:
    """Refuse the batch if any no-negative account would go below zero at any step."""
    guarded = sorted(c for c, a in accounts.items() if not a.allow_negative)
    if not guarded:
        return
    running: dict[str, int] = {}
    for code in guarded:  # same order for every poster: no lock-order deadlock
        session.execute(select(AccountRow.code).where(AccountRow.code == code).with_for_update())
        running[code] = _signed(AccountKind(accounts[code].kind), *_totals(session, code))
    for req in requests:
        n = req.amount.amount
        for code, debited in ((req.debit, True), (req.credit, False)):
            if code not in running:
                continue
            grows = debited == AccountKind(accounts[code].kind).debit_normal
            running[code] += n if grows else -n
            if running[code] < 0:
                raise _reject(
                    "INSUFFICIENT_FUNDS",
                    f"transfer {req.id!r} would take {code!r} to "
                    f"{Money(running[code], req.amount.currency)}; it may not go negative",
                    req.id,
                )


def _accounts_of(session: Session, requests: Sequence[TransferRequest]) -> dict[str, AccountRow]:
    """The accounts the requests name; refuse an unknown one or a currency mismatch."""
    codes = {c for r in requests for c in (r.debit, r.credit)}
    accounts = {
        a.code: a
        for a in session.execute(select(AccountRow).where(AccountRow.code.in_(codes))).scalars()
    }
    for req in requests:
        for code in (req.debit, req.credit):
            acct = accounts.get(code)
            if acct is None:
                raise _reject("UNKNOWN_ACCOUNT", f"no account {code!r}", req.id)
            if acct.currency != req.amount.currency:
                raise _reject(
                    "CURRENCY_MISMATCH",
                    f"account {code!r} is in {acct.currency}, "
                    f"the transfer in {req.amount.currency}",
                    req.id,
                )
    return accounts


def _post(
    session: Session, requests: Sequence[TransferRequest], link_id: str | None
) -> list[Transfer]:
    """Validate, replay or post ``requests`` together (see :func:`post_linked`)."""
    metas = [_normalise(r) for r in requests]
    ids = [r.id for r in requests]
    bodies = [_body(r, m, link_id) for r, m in zip(requests, metas, strict=True)]
    digests = [hashlib.sha256(canonical_json(b)).digest() for b in bodies]

    # Retries take the fast path: no lock, no write.
    found = _load(session, ids)
    if found:
        return _replay(ids, digests, found)

    accounts = _accounts_of(session, requests)

    posted_at = datetime.now(UTC)
    savepoint = session.begin_nested()
    try:
        entries = append_entries(session, [(TRANSFER_POSTED, b) for b in bodies], at=posted_at)
        # We now hold the log head: no other posting can commit until we do.
        found = _load(session, ids)
        if found:
            savepoint.rollback()
            return _replay(ids, digests, found)
        _check_funds(session, requests, accounts)
        rows = [
            TransferRow(
                id=req.id,
                debit_account=req.debit,
                credit_account=req.credit,
                amount=req.amount.amount,
                currency=req.amount.currency,
                link_id=link_id,
                meta=meta,
                request_digest=digest,
                log_seq=entry.seq,
                posted_at=posted_at,
            )
            for req, meta, digest, entry in zip(requests, metas, digests, entries, strict=True)
        ]
        session.add_all(rows)
        session.flush()
    except IntegrityError:
        savepoint.rollback()
        found = _load(session, ids)
        if found:
            return _replay(ids, digests, found)
        raise
    except BaseException:
        if savepoint.is_active:
            savepoint.rollback()
        raise
    savepoint.commit()
    return [_transfer(r) for r in rows]


def post_transfer(session: Session, request: TransferRequest) -> Transfer:
    """Post one transfer and its ``transfer.posted`` log entry in the caller's transaction.

    Parameters
    ----------
    session : Session
        The caller's session; the caller commits.
    request : TransferRequest
        The transfer. Its ``id`` is the idempotency key.

    Returns
    -------
    Transfer
        The posted transfer, or the original one when the same id was already
        posted with the same body (nothing is written again).

    Raises
    ------
    TransferRejected
        ``INVALID_ID``, ``INVALID_AMOUNT``, ``INVALID_METADATA``, ``SAME_ACCOUNT``,
        ``UNKNOWN_ACCOUNT``, ``CURRENCY_MISMATCH``, ``INSUFFICIENT_FUNDS``, or
        ``IDEMPOTENCY_CONFLICT`` (same id, different body). Nothing is written.

    Examples
    --------
    >>> post_transfer(s, TransferRequest("fee:job7:r1:acme", "platform:data-usage-fee-expense",
    ...                                  "isv:acme:payable", Money(1200, "CNY")))  # doctest: +SKIP
    """
    return _post(session, [request], None)[0]


def post_linked(
    session: Session, requests: Sequence[TransferRequest], *, link_id: str | None = None
) -> list[Transfer]:
    """Post ``requests`` together or not at all; one log entry each, consecutive.

    Parameters
    ----------
    session : Session
        The caller's session; the caller commits.
    requests : Sequence[TransferRequest]
        1–1000 requests with distinct ids, applied in order (a no-negative
        account must stay at or above zero after every step, not just at the end).
    link_id : str | None, default the first request's id
        Names the batch; stored on every transfer and part of each request body.

    Returns
    -------
    list[Transfer]
        The transfers in request order; the originals if the same batch was
        posted before.

    Raises
    ------
    TransferRejected
        Any code of :func:`post_transfer` (``transfer_id`` names the first
        refused request), or ``INVALID_BATCH`` for an empty or oversized batch,
        repeated ids or a bad ``link_id``. Nothing is written.
    """
    if not requests or len(requests) > MAX_BATCH:
        raise _reject("INVALID_BATCH", f"a linked batch holds 1-{MAX_BATCH} transfers", None)
    ids = [r.id for r in requests]
    if len(set(ids)) != len(ids):
        raise _reject("INVALID_BATCH", "transfer ids repeat within the batch", None)
    link = ids[0] if link_id is None else link_id
    if not isinstance(link, str) or not _IDENT.fullmatch(link):
        raise _reject("INVALID_BATCH", f"invalid link id {link!r}", None)
    return _post(session, list(requests), link)


def get_transfer(session: Session, transfer_id: str) -> Transfer | None:
    """The posted transfer with this id, or ``None``."""
    return _load(session, [transfer_id]).get(transfer_id)


def transfers_of(session: Session, account: str) -> list[Transfer]:
    """Every transfer touching ``account``, in log order."""
    rows = session.execute(
        select(TransferRow)
        .where((TransferRow.debit_account == account) | (TransferRow.credit_account == account))
        .order_by(TransferRow.log_seq)
    ).scalars()
    return [_transfer(r) for r in rows]


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
