"""Interest shares: the ISVs' part of the interest that a positive uplift earned.

For each loan and closed period with ``uplift_interest > 0`` and a positive uplift
at decision time: ``pool = uplift_interest × share_bp // 10 000`` (floor; the
platform keeps the fraction of a fen), split among the loan's attributed ISVs by
their attribution weights with the ledger's largest-remainder split (parts add up
to the pool exactly). Transfer ids: ``share:<loan>:<period>:<isv>``. A loan whose
uplift is ≤ 0 has no attribution and earns nobody a share.

**Claw-back.** A share is a part of interest *earned*; interest written off was never
earned. When a month close writes a loan's interest receivable off
(``interest-write-off:<loan>:<W>``, see gateway.credit._accrual), each month ``p`` whose
interest it takes gives back the share booked on it:

* *Which month's interest was written off.* Interest is paid oldest month first
  (``interest_paid`` of a month pays earlier months' interest, in month order), so
  a write-off at ``W`` takes, of each month ``p ≤ W``, ``wo_p = interest_p − paid_p``
  (all of ``W``'s own). Every fen of ``interest_p`` is then either paid or written off.
* *The part of the uplift interest that was earned.*
  ``earned_p = ⌊uplift_interest_p × (interest_p − wo_p) / interest_p⌋`` (floor: the
  platform keeps the fraction, as for the share itself).
* *Pool.* ``kept = ⌊earned_p × rate_bp / 10 000⌋`` with the ``rate_bp`` the share was
  booked at (its transfer's metadata); ``claw = booked − kept``, where ``booked`` is
  Σ of the ``share:<loan>:<p>:<isv>`` transfers in the book. Both floors are monotone,
  so ``0 ≤ claw ≤ booked``; a month written off whole gives ``kept = 0``, ``claw = booked``.
* *Split.* ``claw`` is split among the ISVs in proportion to what each was *booked*
  (the ledger's largest-remainder split): each part lies within one fen of
  ``claw × booked_isv / booked`` and so never exceeds ``booked_isv`` (a whole-number
  bound above a quota is never crossed), and a month written off whole takes back
  each ISV's booked share exactly. What ISVs keep adds up to ``kept``, the share of
  the interest that was earned.

Transfer ids ``share-clawback:<loan>:<p>:<isv>`` (debit ``isv:<id>:clawback-receivable``,
credit ``platform:interest-share-expense``): a month's interest is written off at most
once, so each id is posted once whatever re-runs. The claw-back is booked by the first
settlement of a month ``S ≥ W`` that finds the share in the book (metadata
``period = S``); it is what the ISV owes, netted against its payouts (see
gateway.credit._settlement). A later *recovery* of written-off interest does not
re-earn the share: the platform alone bore the loss and the cost of collecting it,
and a claw-back, once booked, is final.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import ledger

from ._bulk import among
from ._chart import clawback_receivable
from ._models import AccrualRow, LoanRow
from ._period import Period

__all__ = [
    "ShareLine",
    "ClawbackLine",
    "share_lines",
    "share_requests",
    "written_off_by_month",
    "clawback_split",
    "clawback_lines",
    "clawback_requests",
]


@dataclass(frozen=True, slots=True)
class ShareLine:
    """One loan's uplift interest in one period and who it is attributed to."""

    loan_id: str
    merchant_id: str
    uplift: int
    uplift_interest: int
    attribution: dict[str, int]


def share_lines(session: Session, period: Period) -> list[ShareLine]:
    """Loans of the period whose uplift interest is shared (positive uplift and interest)."""
    rows = session.execute(
        select(
            LoanRow.loan_id,
            LoanRow.merchant_id,
            LoanRow.line_with - LoanRow.line_f,
            AccrualRow.uplift_interest,
            LoanRow.attribution,
        )
        .join(AccrualRow, AccrualRow.loan_id == LoanRow.loan_id)
        .where(AccrualRow.period == str(period), AccrualRow.uplift_interest > 0)
        .order_by(LoanRow.loan_id)
    )
    return [
        ShareLine(loan, merchant, int(up), int(ui), {str(k): int(v) for k, v in attr.items()})
        for loan, merchant, up, ui, attr in rows
        if int(up) > 0 and attr and sum(int(v) for v in attr.values()) > 0
    ]


def share_requests(
    lines: list[ShareLine], *, period: Period, currency: str, share_bp: int
) -> list[ledger.TransferRequest]:
    """The ``share:<loan>:<period>:<isv>`` transfers for ``lines``."""
    out: list[ledger.TransferRequest] = []
    for s in lines:
        out.extend(
            ledger.interest_share(
                f"share:{s.loan_id}:{period}",
                ledger.Money(s.uplift_interest, currency),
                share_bp,
                s.attribution,
                {
                    "loan": s.loan_id,
                    "merchant": s.merchant_id,
                    "period": str(period),
                    "uplift": s.uplift,
                },
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class ClawbackLine:
    """The share given back on one loan-month ``share_period`` whose interest was written off
    at ``write_off_period``'s close (see the module docstring for the arithmetic)."""

    loan_id: str
    merchant_id: str
    share_period: str
    write_off_period: str
    interest: int
    interest_written_off: int
    uplift_interest: int
    uplift_earned: int
    rate_bp: int
    pool_booked: int
    pool_kept: int
    booked: dict[str, int]
    clawback: dict[str, int]

    @property
    def uplift_written_off(self) -> int:
        """The uplift interest that was never earned."""
        return self.uplift_interest - self.uplift_earned


def written_off_by_month(
    rows: Iterable[tuple[str, int, int, int]],
) -> dict[str, dict[str, int]]:
    """``{W: {p: wo_p}}`` for one loan: which months' interest each write-off at ``W`` took.

    ``rows`` are the loan's accrual rows ``(period, interest, interest_paid,
    interest_written_off)``. Oldest month first: a month's ``interest_paid`` pays the
    earlier months' interest in order, then its own interest joins the queue, then a
    write-off takes the whole queue (it equals ``interest_written_off``). Pure.
    """
    queue: list[list[Any]] = []
    out: dict[str, dict[str, int]] = {}
    for period, interest, paid, written_off in sorted(rows):
        left = paid
        for item in queue:
            take = min(left, item[1])
            item[1] -= take
            left -= take
        queue = [q for q in queue if q[1] > 0]
        if interest > 0:
            queue.append([period, interest])
        if written_off > 0:
            taken = {str(q[0]): int(q[1]) for q in queue}
            if sum(taken.values()) != written_off:
                raise ValueError(
                    f"write-off of {written_off} at {period} does not match unpaid interest "
                    f"{sum(taken.values())}"
                )
            out[period] = taken
            queue = []
    return out


def clawback_split(
    booked: dict[str, int], *, rate_bp: int, uplift_interest: int, interest: int, written_off: int
) -> tuple[int, int, dict[str, int]]:
    """``(uplift earned, pool kept, {isv: claw-back})`` for one loan-month. Pure.

    ``booked`` is each ISV's booked share; see the module docstring. Parts of zero are
    left out; every part is ≤ the ISV's booked share, and a month written off whole
    gives back ``booked`` exactly.
    """
    earned = uplift_interest * (interest - written_off) // interest if interest > 0 else 0
    kept = earned * rate_bp // 10_000
    claw = max(sum(booked.values()) - kept, 0)
    if claw == 0:
        return earned, kept, {}
    weights = {isv: booked[isv] for isv in sorted(booked)}
    parts = ledger.split_by(ledger.Money(claw, "XXX"), weights)
    return earned, kept, {isv: m.amount for isv, m in parts.items() if m.amount > 0}


def clawback_lines(session: Session, upto: Period) -> list[ClawbackLine]:
    """Claw-backs of every interest write-off at a month ``W ≤ upto`` on a booked share.

    A share not in the book yet (its month not settled) gives no line: its claw-back
    comes with the first settlement after it is booked.
    """
    loans = sorted(
        set(
            session.execute(
                select(AccrualRow.loan_id).where(
                    AccrualRow.interest_written_off > 0, AccrualRow.period <= str(upto)
                )
            ).scalars()
        )
    )
    if not loans:
        return []
    per_loan: dict[str, list[tuple[str, int, int, int, int]]] = {}
    for loan, period, interest, uplift_i, paid, wo in session.execute(
        select(
            AccrualRow.loan_id,
            AccrualRow.period,
            AccrualRow.interest,
            AccrualRow.uplift_interest,
            AccrualRow.interest_paid,
            AccrualRow.interest_written_off,
        ).where(among(session, AccrualRow.loan_id, loans), AccrualRow.period <= str(upto))
    ):
        per_loan.setdefault(loan, []).append(
            (period, int(interest), int(paid), int(wo), int(uplift_i))
        )
    terms = {
        loan: (merchant, {str(k): int(v) for k, v in (attr or {}).items()})
        for loan, merchant, attr in session.execute(
            select(LoanRow.loan_id, LoanRow.merchant_id, LoanRow.attribution).where(
                among(session, LoanRow.loan_id, loans)
            )
        )
    }
    wanted: list[tuple[str, str, str, int, int, int]] = []  # loan, W, p, interest, wo, uplift
    for loan in loans:
        rows = per_loan.get(loan, [])
        by_p = {r[0]: r for r in rows}
        for w, taken in written_off_by_month((r[0], r[1], r[2], r[3]) for r in rows).items():
            for p, wo_p in sorted(taken.items()):
                row = by_p[p]
                if row[4] > 0:
                    wanted.append((loan, w, p, row[1], wo_p, row[4]))
    ids = [f"share:{loan}:{p}:{isv}" for loan, _, p, *_ in wanted for isv in terms[loan][1]]
    booked: dict[str, tuple[int, dict[str, Any]]] = {}
    table = ledger.metadata.tables["book_transfers"]
    for start in range(0, len(ids), 5000):
        for tid, amount, meta in session.execute(
            select(table.c.id, table.c.amount, table.c.metadata).where(
                among(session, table.c.id, ids[start : start + 5000])
            )
        ):
            booked[tid] = (int(amount), dict(meta or {}))
    out: list[ClawbackLine] = []
    for loan, w, p, interest, wo_p, uplift_i in wanted:
        merchant, attribution = terms[loan]
        parts = {
            isv: booked[f"share:{loan}:{p}:{isv}"]
            for isv in attribution
            if f"share:{loan}:{p}:{isv}" in booked
        }
        if not parts:
            continue
        rate = int(next(iter(parts.values()))[1].get("rate_bp", 0))
        amounts = {isv: a for isv, (a, _) in parts.items()}
        earned, kept, claw = clawback_split(
            amounts, rate_bp=rate, uplift_interest=uplift_i, interest=interest, written_off=wo_p
        )
        out.append(
            ClawbackLine(
                loan,
                merchant,
                p,
                w,
                interest,
                wo_p,
                uplift_i,
                earned,
                rate,
                sum(amounts.values()),
                kept,
                amounts,
                claw,
            )  # fmt: skip
        )
    return out


def clawback_requests(
    lines: list[ClawbackLine], *, period: Period, currency: str
) -> list[ledger.TransferRequest]:
    """The ``share-clawback:<loan>:<p>:<isv>`` transfers of ``lines``, booked in ``period``."""
    return [
        ledger.TransferRequest(
            f"share-clawback:{c.loan_id}:{c.share_period}:{isv}",
            clawback_receivable(isv),
            ledger.INTEREST_SHARE_EXPENSE,
            ledger.Money(amount, currency),
            {
                "loan": c.loan_id,
                "merchant": c.merchant_id,
                "period": str(period),
                "share_period": c.share_period,
                "write_off_period": c.write_off_period,
                "interest": c.interest,
                "interest_written_off": c.interest_written_off,
                "uplift_interest": c.uplift_interest,
                "uplift_earned": c.uplift_earned,
                "rate_bp": c.rate_bp,
                "pool_booked": c.pool_booked,
                "pool_kept": c.pool_kept,
                "booked": c.booked[isv],
            },
        )
        for c in lines
        for isv, amount in sorted(c.clawback.items())
    ]
