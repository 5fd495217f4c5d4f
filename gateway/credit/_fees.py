"""Data-usage fees from the signed usage receipts already on the ledger.

What is billed: each ``data.used`` entry (a node's signed receipt, verified when it
was recorded) whose ``action`` is in the policy's ``billed_actions`` (default
``train``, ``query.score`` and ``query.signals``) and whose ``issued_at`` falls in the
period. The fee is ``fee_per_merchant_round × merchants_used`` — merchants the node says
it *used* (trained on, scored, or released ERP signals of: each feeds a credit
decision), not merchants it merely *read*: rows read but filtered out
(below a cohort, outside a window) earned the platform nothing. ``evaluate`` (the
node's own held-out check) and ``query.sketch`` (bin edges for everyone) are not
billed by default. No rounding: the fee is an exact integer product.

Transfer id: ``fee:<SHA-256 of the receipt JWS>``, so a receipt is paid once however
often settlement runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

import ledger

from ._period import Period

__all__ = ["DATA_USED", "BilledReceipt", "billable_receipts", "fee_requests"]

DATA_USED = "data.used"
_ENTRIES = cast(Table, ledger.metadata.tables["ledger_entries"])


@dataclass(frozen=True, slots=True)
class BilledReceipt:
    """One receipt the platform pays for."""

    receipt_hash: str
    log_seq: int
    isv: str
    job_id: str
    round: int
    action: str
    merchants_used: int
    rows_read: int
    fee: int


def billable_receipts(
    session: Session, period: Period, *, actions: Sequence[str], fee_per_merchant_round: int
) -> list[BilledReceipt]:
    """The period's billed receipts, in log order (see the module docstring)."""
    out: list[BilledReceipt] = []
    rows = session.execute(
        select(_ENTRIES.c.seq, _ENTRIES.c.leaf_data)
        .where(_ENTRIES.c.kind == DATA_USED)
        .order_by(_ENTRIES.c.seq)
    )
    for seq, leaf in rows:
        body: dict[str, Any] = ledger.parse_canonical(bytes(leaf))["body"]
        issued = str(body.get("issued_at", ""))
        if not issued.startswith(str(period)) or body.get("action") not in actions:
            continue
        token = str(body.get("receipt", ""))
        used = int(body.get("merchants_used", 0))
        out.append(
            BilledReceipt(
                receipt_hash=hashlib.sha256(token.encode("ascii")).hexdigest(),
                log_seq=int(seq),
                isv=str(body["data_provider"]),
                job_id=str(body["job_id"]),
                round=int(body["round"]),
                action=str(body["action"]),
                merchants_used=used,
                rows_read=int(body.get("rows_read", 0)),
                fee=used * fee_per_merchant_round,
            )
        )
    return out


def fee_requests(
    receipts: Sequence[BilledReceipt], *, period: Period, currency: str, rate: int
) -> list[ledger.TransferRequest]:
    """One ``fee:<receipt hash>`` transfer per receipt with a positive fee."""
    return [
        ledger.data_usage_fee(
            f"fee:{r.receipt_hash}",
            r.isv,
            ledger.Money(r.fee, currency),
            {
                "period": str(period),
                "job": r.job_id,
                "round": r.round,
                "action": r.action,
                "merchants_used": r.merchants_used,
                "rate": rate,
                "log_seq": r.log_seq,
            },
        )
        for r in receipts
        if r.fee > 0
    ]
