"""Settling a period: fees and shares posted, payouts instructed (and cleared), statements.

:func:`settle_period` closes the month if it is still open, posts every billed
receipt's fee and every loan's interest share (ids from their sources, so a re-run
posts only what is new), and then instructs per ISV the part of what the period
owes it that was not instructed before (``settle:<isv>:<period>:<n>``, debit the
ISV's payable, credit its in-flight account, as :func:`ledger.settlement_instructed`);
with ``clear=True`` it also records the bank's confirmation
(``clear:<isv>:<period>:<n>``, :func:`ledger.settlement_cleared`). Every settlement
writes a ``credit.settlement`` ledger entry with the statement's SHA-256.

A statement (:func:`statement`) lists the receipts, the loans, the totals, and the
same totals read back from the book (``ties_to_book`` is their equality).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import ledger

from ._accrual import close_period
from ._chart import ensure_isv, open_credit_chart, post_new
from ._errors import NotFound
from ._fees import billable_receipts, fee_requests
from ._models import SettlementRow
from ._period import Period
from ._policy import CreditPolicy
from ._shares import share_lines, share_requests

__all__ = [
    "SETTLEMENT_ENTRY",
    "IsvSettlement",
    "settle_period",
    "statement",
    "statement_csv",
    "settlements",
]

SETTLEMENT_ENTRY = "credit.settlement"


@dataclass(frozen=True, slots=True)
class IsvSettlement:
    """One ISV's period after settlement."""

    isv: str
    period: str
    fee: int
    share: int
    instructed: int
    cleared: int
    newly_instructed: int
    newly_cleared: int


def _book_totals(session: Session, isv: str, period: Period) -> dict[str, int]:
    """Fees, shares and payouts of ``isv`` for ``period``, read from the book."""
    out = {"fee": 0, "share": 0, "instructed": 0, "cleared": 0}
    for t in ledger.transfers_of(session, ledger.isv_payable(isv)):
        if t.metadata.get("period") != str(period):
            continue
        if t.id.startswith("fee:"):
            out["fee"] += t.amount.amount
        elif t.id.startswith("share:"):
            out["share"] += t.amount.amount
        elif t.id.startswith(f"settle:{isv}:{period}:"):
            out["instructed"] += t.amount.amount
    for t in ledger.transfers_of(session, ledger.isv_settled(isv)):
        if t.id.startswith(f"clear:{isv}:{period}:"):
            out["cleared"] += t.amount.amount
    return out


def statement(session: Session, isv: str, period: Period, policy: CreditPolicy) -> dict[str, Any]:
    """One ISV's statement for ``period`` (receipts, loans, totals, book totals)."""
    receipts = [
        r
        for r in billable_receipts(
            session,
            period,
            actions=policy.pricing.billed_actions,
            fee_per_merchant_round=policy.pricing.fee_per_merchant_round,
        )
        if r.isv == isv
    ]
    loans: list[dict[str, Any]] = []
    for line in share_lines(session, period):
        if isv not in line.attribution:
            continue
        parts = ledger.interest_share(
            "x",
            ledger.Money(line.uplift_interest, policy.currency),
            policy.pricing.share_bp,
            line.attribution,
        )
        share = sum(p.amount.amount for p in parts if p.id == f"x:{isv}")
        loans.append(
            {
                "loan": line.loan_id,
                "merchant": line.merchant_id,
                "uplift": line.uplift,
                "uplift_interest": line.uplift_interest,
                "weight": line.attribution[isv],
                "weights_total": sum(line.attribution.values()),
                "share": share,
            }
        )
    fee = sum(r.fee for r in receipts)
    share = sum(x["share"] for x in loans)
    book = _book_totals(session, isv, period)
    return {
        "isv": isv,
        "period": str(period),
        "currency": policy.currency,
        "rates": {
            "fee_per_merchant_round": policy.pricing.fee_per_merchant_round,
            "share_bp": policy.pricing.share_bp,
            "billed_actions": list(policy.pricing.billed_actions),
        },
        "receipts": [
            {
                "receipt_sha256": r.receipt_hash,
                "log_seq": r.log_seq,
                "job": r.job_id,
                "round": r.round,
                "action": r.action,
                "merchants_used": r.merchants_used,
                "rows_read": r.rows_read,
                "fee": r.fee,
            }
            for r in receipts
        ],
        "loans": loans,
        "totals": {"fee": fee, "share": share, "total": fee + share},
        "book": book,
        "ties_to_book": book["fee"] == fee and book["share"] == share,
    }


def statement_csv(doc: Mapping[str, Any]) -> str:
    """The statement as CSV: one row per receipt and per loan, then the totals."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["isv", "period", "item", "ref", "merchants_used", "interest_base", "fee", "share"])
    for r in doc["receipts"]:
        w.writerow(
            [
                doc["isv"],
                doc["period"],
                f"receipt:{r['action']}",
                r["receipt_sha256"],
                r["merchants_used"],
                "",
                r["fee"],
                "",
            ]
        )
    for x in doc["loans"]:
        w.writerow(
            [doc["isv"], doc["period"], "loan", x["loan"], "", x["uplift_interest"], "", x["share"]]
        )
    t = doc["totals"]
    w.writerow([doc["isv"], doc["period"], "total", "", "", "", t["fee"], t["share"]])
    return buf.getvalue()


def settle_period(
    session: Session,
    period: Period,
    *,
    policy_version: int,
    policy: CreditPolicy,
    clear: bool = False,
    at: datetime | None = None,
) -> list[IsvSettlement]:
    """Close (if needed), post fees and shares, instruct (and clear) payouts; see the module."""
    now = at or datetime.now(UTC)
    cur = policy.currency
    open_credit_chart(session, cur)
    close_period(session, period, currency=cur, policy_version=policy_version, at=now)
    receipts = billable_receipts(
        session,
        period,
        actions=policy.pricing.billed_actions,
        fee_per_merchant_round=policy.pricing.fee_per_merchant_round,
    )
    shares = share_requests(
        share_lines(session, period), period=period, currency=cur, share_bp=policy.pricing.share_bp
    )
    fees = fee_requests(
        receipts, period=period, currency=cur, rate=policy.pricing.fee_per_merchant_round
    )
    due: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in fees:
        due[r.credit.split(":")[1]][0] += r.amount.amount
    for r in shares:
        due[r.credit.split(":")[1]][1] += r.amount.amount
    for isv in sorted(due):
        ensure_isv(session, isv, cur)
    post_new(session, fees)
    post_new(session, shares)
    out: list[IsvSettlement] = []
    for isv in sorted(due):
        fee, share = due[isv]
        row = session.get(SettlementRow, (isv, str(period)))
        instructed = int(row.instructed) if row else 0
        cleared = int(row.cleared) if row else 0
        new_i = fee + share - instructed
        reqs: list[ledger.TransferRequest] = []
        if new_i > 0:
            reqs.append(
                ledger.settlement_instructed(
                    f"settle:{isv}:{period}:{instructed}",
                    isv,
                    ledger.Money(new_i, cur),
                    {"period": str(period), "fee": fee, "share": share},
                )
            )
            instructed += new_i
        new_c = instructed - cleared if clear else 0
        if new_c > 0:
            reqs.append(
                ledger.settlement_cleared(
                    f"clear:{isv}:{period}:{cleared}",
                    isv,
                    ledger.Money(new_c, cur),
                    {"period": str(period)},
                )
            )
            cleared += new_c
        if reqs:
            ledger.post_linked(session, reqs, link_id=reqs[0].id)
        doc = statement(session, isv, period, policy)
        digest = hashlib.sha256(ledger.canonical_json(doc)).hexdigest()
        if reqs or row is None:
            ledger.append_entry(
                session,
                SETTLEMENT_ENTRY,
                {
                    "isv": isv,
                    "period": str(period),
                    "currency": cur,
                    "fee": fee,
                    "share": share,
                    "instructed": instructed,
                    "cleared": cleared,
                    "statement_sha256": digest,
                    "policy_version": policy_version,
                },
                at=now,
            )
        if row is None:
            session.add(
                SettlementRow(
                    isv=isv,
                    period=str(period),
                    currency=cur,
                    fee=fee,
                    share=share,
                    instructed=instructed,
                    cleared=cleared,
                    statement_sha256=digest,
                    settled_at=now,
                )
            )
        else:
            row.fee, row.share, row.instructed, row.cleared = fee, share, instructed, cleared
            row.statement_sha256, row.settled_at = digest, now
        session.flush()
        out.append(
            IsvSettlement(
                isv, str(period), fee, share, instructed, cleared, new_i if new_i > 0 else 0, new_c
            )
        )
    return out


def settlements(session: Session, isv: str | None = None) -> list[SettlementRow]:
    """Stored settlements (one ISV's, or all), by period."""
    q = select(SettlementRow).order_by(SettlementRow.period, SettlementRow.isv)
    if isv is not None:
        q = q.where(SettlementRow.isv == isv)
    rows = list(session.execute(q).scalars())
    if isv is not None and not rows:
        raise NotFound(f"no settlement for ISV {isv!r}", code="UNKNOWN_ISV")
    return rows
