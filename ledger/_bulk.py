"""Posting many transfers at once: one lock, one log append, one insert per table.

:func:`post_many` is the book's bulk path for month closes and settlements
(10⁵ transfers and more in one transaction). It writes exactly what
:func:`ledger.post_transfer` writes — one ``book_transfers`` row and one
``transfer.posted`` log entry per transfer, with the same body, digest and leaf
bytes — so the reconciliation and the offline audit read bulk-posted entries
like any others. What it saves is per-transfer overhead: the log head is locked
once, the Merkle frontier is read and the root computed once per batch, each
body is serialised once (its leaf is spliced from those bytes), and rows go in
with one statement per table (PostgreSQL ``unnest`` arrays, SQLite
``executemany``) instead of the ORM's unit of work.

Idempotency is per transfer id, which is what a re-run needs: an id already in
the book with the same body is skipped (counted as ``repeated``), an id already
in the book with another body refuses the whole batch
(``IDEMPOTENCY_CONFLICT``). Every check of :func:`ledger.post_linked` applies
to every new transfer, in request order; any refusal leaves the database
exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from ._book_models import TransferRow
from ._book_types import _IDENT, TRANSFER_POSTED, TransferRequest
from ._log import _lock_head, append_encoded, copy_text, pg_copy
from ._transfers import (
    _accounts_of,
    _check_funds,
    _encode,
    _reject,
)

__all__ = ["BulkPosting", "MAX_BULK", "post_many"]

MAX_BULK = 1_000_000
"""Most transfers in one :func:`post_many` call."""
_TRANSFERS = cast(Table, TransferRow.__table__)


@dataclass(frozen=True, slots=True)
class BulkPosting:
    """What one :func:`post_many` call did.

    ``first_seq`` is the log sequence number of the first new transfer's entry (the
    others follow it in request order), ``None`` when nothing was new.
    """

    posted: int
    repeated: int
    first_seq: int | None


def _body_bytes(request: TransferRequest, metadata: bytes, link: bytes) -> bytes:
    """``canonical_json(_book._body(…))`` spliced from checked parts (a test holds them equal).

    Ids and account codes match ``_IDENT``, so JSON escapes nothing in them; the keys are
    in RFC 8785 order.
    """
    return (
        b'{"amount":%d,"credit":"%s","currency":"%s","debit":"%s","id":"%s","link":%s,'
        % (
            request.amount.amount,
            request.credit.encode("ascii"),
            request.amount.currency.encode("ascii"),
            request.debit.encode("ascii"),
            request.id.encode("ascii"),
            link,
        )
        + b'"metadata":%s}' % metadata
    )


def _stored_digests(session: Session, ids: Sequence[str]) -> dict[str, bytes]:
    """Request digests of the ids already in the book: one query, the ids as one parameter.

    Ids match ``_IDENT`` (no comma, nothing JSON escapes), so a comma-joined string
    (PostgreSQL) or a JSON array (SQLite ``json_each``) carries them exactly; either is
    far cheaper than thousands of bound parameters.
    """
    conn = session.connection()
    table = TransferRow.__tablename__
    if conn.dialect.name == "postgresql":
        sql = f"SELECT id, request_digest FROM {table} WHERE id = ANY(string_to_array(%s, ','))"
        param: str = ",".join(ids)
    else:
        sql = f"SELECT id, request_digest FROM {table} WHERE id IN (SELECT value FROM json_each(?))"
        param = json.dumps(list(ids))
    return {rid: bytes(digest) for rid, digest in conn.exec_driver_sql(sql, (param,))}


def _insert(
    session: Session,
    rows: list[tuple[TransferRequest, dict[str, Any], bytes, int]],
    currency: str,
    link_id: str | None,
    posted_at: datetime,
) -> None:
    """Insert the transfer rows; ``rows`` are (request, metadata, digest, log seq)."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        link = "\\N" if link_id is None else link_id  # COPY's NULL
        head = f"\t{currency}\t{link}\t"
        stamp = posted_at.isoformat()
        pg_copy(
            session,
            TransferRow.__tablename__,
            "id, debit_account, credit_account, amount, currency, link_id, metadata, "
            "request_digest, log_seq, posted_at",
            [
                f"{r.id}\t{r.debit}\t{r.credit}\t{r.amount.amount}{head}"
                f"{copy_text(json.dumps(m))}\t\\\\x{d.hex()}\t{s}\t{stamp}\n"
                for r, m, d, s in rows
            ],
        )
        return
    # SQLite: the driver's executemany on plain tuples; the one timestamp and the JSON
    # go through the column types' own bind processors, so rows read back as the ORM's.
    dialect = conn.dialect
    process = _TRANSFERS.c.posted_at.type.dialect_impl(dialect).bind_processor(dialect)
    when = process(posted_at) if process else posted_at
    conn.exec_driver_sql(
        f"INSERT INTO {TransferRow.__tablename__} (id, debit_account, credit_account, amount, "
        "currency, link_id, metadata, request_digest, log_seq, posted_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (r.id, r.debit, r.credit, r.amount.amount, currency, link_id, json.dumps(m), d, s, when)
            for r, m, d, s in rows
        ],
    )


def post_many(
    session: Session,
    requests: Sequence[TransferRequest],
    *,
    link_id: str | None = None,
    at: datetime | None = None,
) -> BulkPosting:
    """Post many transfers in the caller's transaction: all new ones, or none.

    Parameters
    ----------
    session : Session
        The caller's session; the caller commits.
    requests : Sequence[TransferRequest]
        1–1,000,000 requests with distinct ids, all in one currency, applied in
        order (a no-negative account must stay at or above zero after every step).
    link_id : str | None, default None
        Stored on every new transfer and part of each request body, so a re-run
        must pass the same value to be recognised as a repeat.
    at : datetime | None, default now (UTC)
        Posting time of every new transfer and its log entry.

    Returns
    -------
    BulkPosting
        How many transfers were posted and how many were already in the book
        with the same body (those are not written again).

    Raises
    ------
    TransferRejected
        Any code of :func:`ledger.post_transfer` (``transfer_id`` names the
        first refused request; ``IDEMPOTENCY_CONFLICT`` for an id already posted
        with another body), or ``INVALID_BATCH`` for an empty or oversized batch,
        repeated ids, mixed currencies or a bad ``link_id``. Nothing is written.
    """
    if not requests or len(requests) > MAX_BULK:
        raise _reject("INVALID_BATCH", f"a bulk posting holds 1-{MAX_BULK:,} transfers", None)
    if link_id is not None and (not isinstance(link_id, str) or not _IDENT.fullmatch(link_id)):
        raise _reject("INVALID_BATCH", f"invalid link id {link_id!r}", None)
    ids = [r.id for r in requests]
    if len(set(ids)) != len(ids):
        raise _reject("INVALID_BATCH", "transfer ids repeat within the batch", None)
    encoded = [_encode(r) for r in requests]
    metas = [m for m, _ in encoded]
    currency = requests[0].amount.currency
    if any(r.amount.currency != currency for r in requests):
        raise _reject("INVALID_BATCH", "a bulk posting holds one currency", None)
    link = b"null" if link_id is None else b'"%s"' % link_id.encode("ascii")
    bodies = [_body_bytes(r, data, link) for r, (_, data) in zip(requests, encoded, strict=True)]
    digests = [hashlib.sha256(b).digest() for b in bodies]

    posted_at = at or datetime.now(UTC)
    savepoint = session.begin_nested()
    try:
        # The log head first: while we hold it no other posting can commit, so the
        # id lookup below cannot go stale (same lock order as post_linked).
        _lock_head(session)
        stored = _stored_digests(session, ids)
        new: list[int] = []
        for i, (rid, digest) in enumerate(zip(ids, digests, strict=True)):
            old = stored.get(rid)
            if old is None:
                new.append(i)
            elif old != digest:
                raise _reject(
                    "IDEMPOTENCY_CONFLICT",
                    f"transfer id {rid!r} was already used for a different request",
                    rid,
                )
        if not new:
            savepoint.rollback()
            return BulkPosting(0, len(requests), None)
        fresh = [requests[i] for i in new]
        accounts = _accounts_of(session, fresh)
        _check_funds(session, fresh, accounts)
        first = append_encoded(session, TRANSFER_POSTED, [bodies[i] for i in new], at=posted_at)
        _insert(
            session,
            [(requests[i], metas[i], digests[i], first + k) for k, i in enumerate(new)],
            currency,
            link_id,
            posted_at,
        )
        session.flush()
    except BaseException:
        if savepoint.is_active:
            savepoint.rollback()
        raise
    savepoint.commit()
    return BulkPosting(len(new), len(requests) - len(new), first)
