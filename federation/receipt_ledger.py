"""A node's usage receipt, verified and written to the ledger as ``data.used``.

:mod:`federation.receipts` defines what a node signs; this module is what the
platform does with it after a reply: check that the receipt answers the request
it was sent (:class:`ExpectedReceipt`), then append it to the ledger and, in the
same transaction, count the consent uses it proves (:func:`consent.count_round_uses`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session, sessionmaker

from consent import count_round_uses
from ledger import append_entry

from ._errors import ReceiptInvalid
from .receipts import verify_receipt

__all__ = ["DATA_USED", "ExpectedReceipt", "record_receipt"]

DATA_USED = "data.used"
"""Ledger kind of one verified usage receipt."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpectedReceipt:
    """What a receipt must say to count: the request it answers."""

    job_id: str
    round: int
    data_provider: str
    action: str
    manifest_root: str
    manifest_merchants: int | None = None  # entries of that manifest, when known


def record_receipt(
    sessions: sessionmaker[Session],
    token: bytes,
    public_key: Ed25519PublicKey,
    expected: ExpectedReceipt,
    *,
    uses: Sequence[str] = (),
) -> dict[str, Any]:
    """Verify a node's receipt and append it to the ledger as ``data.used`` (own transaction).

    Parameters
    ----------
    sessions : sessionmaker[Session]
    token : bytes
        The node's signed receipt.
    public_key : Ed25519PublicKey
        The node's key.
    expected : ExpectedReceipt
        The request the receipt must answer.
    uses : Sequence[str], default ()
        Consent ids of the request's manifest whose use this receipt proves; counted
        with :func:`consent.count_round_uses` in the same transaction as ``data.used``.

    Returns
    -------
    dict[str, Any]
        The ledger entry body plus its ``ledger_seq``.

    Raises
    ------
    ReceiptInvalid
        Bad signature or format (``RECEIPT_SIGNATURE`` / ``RECEIPT_MALFORMED``), or a
        receipt for another request (``RECEIPT_MISMATCH``); nothing is written.
    """
    receipt = verify_receipt(token, public_key)
    got = (
        receipt.job_id,
        receipt.round,
        receipt.data_provider,
        receipt.action,
        receipt.manifest_root,
    )
    want = (
        expected.job_id,
        expected.round,
        expected.data_provider,
        expected.action,
        expected.manifest_root,
    )
    if got != want:
        raise ReceiptInvalid(f"receipt is for {got}, expected {want}", code="RECEIPT_MISMATCH")
    # Used is a part of read, and read a part of the manifest (counts; the hashes are the
    # node's signed word for which merchants).
    limit = expected.manifest_merchants
    if (
        receipt.merchants_used > receipt.merchants_read
        or receipt.rows_used > receipt.rows_read
        or (limit is not None and receipt.merchants_read > limit)
    ):
        raise ReceiptInvalid(
            f"receipt used {receipt.merchants_used} merchants / {receipt.rows_used} rows of "
            f"{receipt.merchants_read} / {receipt.rows_read} read, manifest of {limit}",
            code="RECEIPT_MISMATCH",
        )
    body = {**receipt.to_body(), "receipt": token.decode("ascii")}
    with sessions() as session, session.begin():
        entry = append_entry(session, DATA_USED, body)
        if uses:
            count_round_uses(
                session,
                uses,
                at=datetime.now(UTC),
                job_id=receipt.job_id,
                round=receipt.round,
                data_provider=receipt.data_provider,
                manifest_root=receipt.manifest_root,
            )
    return {**body, "ledger_seq": entry.seq}
