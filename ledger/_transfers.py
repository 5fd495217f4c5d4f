"""Posting transfers: request checks, idempotent replay, the no-negative rule, linked batches."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ._book_models import AccountRow, TransferRow
from ._book_types import (
    _IDENT,
    MAX_AMOUNT,
    MAX_BATCH,
    MAX_METADATA_BYTES,
    TRANSFER_POSTED,
    AccountKind,
    Transfer,
    TransferRequest,
    _utc,
)
from ._canonical import canonical_json
from ._errors import TransferRejected
from ._log import append_entries
from ._money import Money


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
