"""Settling a period: fees and shares posted, payouts instructed (and cleared), statements.

:func:`settle_period` closes the month if it is still open, posts every billed
receipt's fee and every loan's interest share (ids from their sources, so a re-run
posts only what is new), and then instructs per ISV the part of what the period
owes it that was not instructed before (``settle:<isv>:<period>:<n>``, debit the
ISV's payable, credit its in-flight account, as :func:`ledger.settlement_instructed`);
with ``clear=True`` it also records the bank's confirmation
(``clear:<isv>:<period>:<n>``, :func:`ledger.settlement_cleared`). Every settlement
writes a ``credit.settlement`` ledger entry with the statement's SHA-256.

**Claw-backs and netting.** Each run also books the share claw-backs due on interest
written off at a month ``W ≤ period`` (:func:`gateway.credit.clawback_lines`;
``share-clawback:<loan>:<p>:<isv>``, debit ``isv:<id>:clawback-receivable``). A
claw-back never touches the payable (a paid share is gone from it): it is an amount
the ISV owes, netted against what the platform owes it. Per ISV, with ``c_q`` the
claw-backs booked by month ``q``'s settlement and ``n_q`` those netted in month ``q``,
the run for month ``S`` nets

    ``x = min(fee + share − instructed − netted_S,  min_{S' ≥ S} Σ_{q ≤ S'} (c_q − n_q))``

(``clawback-netted:<isv>:<S>:<n>``: debit the payable, credit the claw-back
receivable) and instructs the rest. The second bound takes only claw-backs booked up
to ``S`` and keeps every month's carried amount ``Σ_{q ≤ S'} (c_q − n_q) ≥ 0``.
When the claw-backs exceed what the month owes the ISV (a negative net), the payout is
zero and the difference is **carried forward** to the next month's payout; nothing is
ever paid *to* the platform by the ISV here, and nothing is lost: the receivable
keeps it until netted.

A statement (:func:`statement`) lists the receipts, the loans, the claw-backs, the
totals, the net (``fee + share − clawback``), the claw-back account (carried in, booked,
netted, carried forward) and the payout (``fee + share − netted``, never negative), and
the same totals read back from the book (``ties_to_book`` is their equality).
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
from ._chart import (
    clawback_receivable,
    ensure_clawback_account,
    ensure_isv,
    open_credit_chart,
    post_new,
)
from ._errors import NotFound
from ._fees import billable_receipts, fee_requests
from ._models import SettlementRow
from ._period import Period
from ._policy import CreditPolicy
from ._shares import clawback_lines, clawback_requests, share_lines, share_requests

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
    clawback: int = 0
    netted: int = 0


def _clawback_months(session: Session, isv: str) -> dict[str, list[int]]:
    """``{month: [claw-backs booked, netted]}`` of ``isv``'s claw-back receivable."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    code = clawback_receivable(isv)
    try:
        ledger.get_account(session, code)
    except ledger.AccountRejected:
        return out
    for t in ledger.transfers_of(session, code):
        month = str(t.metadata.get("period", ""))
        if t.debit == code and t.id.startswith("share-clawback:"):
            out[month][0] += t.amount.amount
        elif t.credit == code and t.id.startswith("clawback-netted:"):
            out[month][1] += t.amount.amount
    return out


def _carried(months: Mapping[str, list[int]], period: str) -> tuple[int, int]:
    """``(carried in, room to net)`` at ``period``: Σ_{q<S}(c−n), min_{S'≥S} Σ_{q≤S'}(c−n)."""
    run, carried_in, room = 0, 0, None
    for month in sorted(set(months) | {period}):
        c, n = months.get(month, (0, 0))
        if month < period:
            run += c - n
            carried_in = run
            continue
        run += c - n
        room = run if room is None else min(room, run)
    return carried_in, max(room or 0, 0)


def _book_totals(session: Session, isv: str, period: Period) -> dict[str, int]:
    """Fees, shares, claw-backs and payouts of ``isv`` for ``period``, read from the book."""
    c, n = _clawback_months(session, isv).get(str(period), (0, 0))
    out = {"fee": 0, "share": 0, "clawback": c, "netted": n, "instructed": 0, "cleared": 0}
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
    clawbacks = _statement_clawbacks(session, isv, period)
    clawback = sum(x["clawback"] for x in clawbacks)
    book = _book_totals(session, isv, period)
    carried_in, _ = _carried(_clawback_months(session, isv), str(period))
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
        "clawbacks": clawbacks,
        "totals": {"fee": fee, "share": share, "total": fee + share},
        "net": {
            "fee": fee,
            "share": share,
            "clawback": clawback,
            "net": fee + share - clawback,
            "carried_in": carried_in,
            "netted": book["netted"],
            "payout": fee + share - book["netted"],
            "carried_forward": carried_in + clawback - book["netted"],
        },
        "book": book,
        "ties_to_book": book["fee"] == fee
        and book["share"] == share
        and book["clawback"] == clawback,
    }


def _statement_clawbacks(session: Session, isv: str, period: Period) -> list[dict[str, Any]]:
    """The claw-back lines booked in ``period`` for ``isv``, each recomputed from the accruals.

    A line is listed when its ``share-clawback`` id is in the book with this period; its
    amount is the recomputed one, so a booked amount that does not recompute breaks
    ``ties_to_book``.
    """
    booked = {
        t.id
        for t in (
            ledger.transfers_of(session, clawback_receivable(isv))
            if _clawback_months(session, isv)
            else []
        )
        if t.id.startswith("share-clawback:") and t.metadata.get("period") == str(period)
    }
    if not booked:
        return []
    out: list[dict[str, Any]] = []
    for c in clawback_lines(session, period):
        tid = f"share-clawback:{c.loan_id}:{c.share_period}:{isv}"
        if tid not in booked or isv not in c.clawback:
            continue
        out.append(
            {
                "loan": c.loan_id,
                "merchant": c.merchant_id,
                "share_period": c.share_period,
                "write_off_period": c.write_off_period,
                "interest": c.interest,
                "interest_written_off": c.interest_written_off,
                "uplift_interest": c.uplift_interest,
                "uplift_written_off": c.uplift_written_off,
                "share_booked": c.booked[isv],
                "clawback": c.clawback[isv],
            }
        )
    return out


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
    for x in doc.get("clawbacks", []):
        w.writerow(
            [
                doc["isv"],
                doc["period"],
                "clawback",
                f"{x['loan']}:{x['share_period']}",
                "",
                x["uplift_written_off"],
                "",
                -x["clawback"],
            ]
        )
    t = doc["totals"]
    w.writerow([doc["isv"], doc["period"], "total", "", "", "", t["fee"], t["share"]])
    net = doc.get("net", {})
    if net.get("clawback") or net.get("carried_in") or net.get("carried_forward"):
        # Trailer of the claw-back account; each amount in the last column, from the
        # ISV's side (negative: the ISV owes it).
        for item, amount in (
            ("clawback-total", -net["clawback"]),
            ("net", net["net"]),
            ("carried-in", -net["carried_in"]),
            ("netted", -net["netted"]),
            ("payout", net["payout"]),
            ("carried-forward", -net["carried_forward"]),
        ):
            w.writerow([doc["isv"], doc["period"], item, "", "", "", "", amount])
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
    claws = clawback_requests(clawback_lines(session, period), period=period, currency=cur)
    clawed = sorted({r.debit.split(":")[1] for r in claws})
    for isv in clawed:
        ensure_clawback_account(session, isv, cur)
    post_new(session, claws)
    out: list[IsvSettlement] = []
    for isv in sorted(set(due) | set(clawed)):
        fee, share = due[isv]
        months = _clawback_months(session, isv)
        clawback = months[str(period)][0] if str(period) in months else 0
        row = session.get(SettlementRow, (isv, str(period)))
        if row is None and fee + share == 0 and clawback == 0:
            continue  # an older claw-back, booked in another month's settlement
        instructed = int(row.instructed) if row else 0
        cleared = int(row.cleared) if row else 0
        netted = int(row.netted) if row else 0
        reqs: list[ledger.TransferRequest] = []
        to_pay = fee + share - instructed - netted
        _, room = _carried(months, str(period))
        offset = min(room, max(to_pay, 0))
        if offset > 0:
            reqs.append(
                ledger.TransferRequest(
                    f"clawback-netted:{isv}:{period}:{netted}",
                    ledger.isv_payable(isv),
                    clawback_receivable(isv),
                    ledger.Money(offset, cur),
                    {"period": str(period), "fee": fee, "share": share},
                )
            )
            netted += offset
        new_i = to_pay - offset
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
                    "clawback": clawback,
                    "netted": netted,
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
                    clawback=clawback,
                    netted=netted,
                    statement_sha256=digest,
                    settled_at=now,
                )
            )
        else:
            row.fee, row.share, row.instructed, row.cleared = fee, share, instructed, cleared
            row.clawback, row.netted = clawback, netted
            row.statement_sha256, row.settled_at = digest, now
        session.flush()
        out.append(
            IsvSettlement(
                isv,
                str(period),
                fee,
                share,
                instructed,
                cleared,
                new_i if new_i > 0 else 0,
                new_c,
                clawback,
                netted,
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
