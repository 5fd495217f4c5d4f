"""Closing a month: daily interest from each loan's balance history, posted to the book.

Rules (integers throughout):

* A loan's *drawn balance* at the end of a day is the principal outstanding: Σdrawdowns
  − the principal parts of repayments − Σwrite-offs dated on or before that day (never
  below zero; see *interest first* below).
* ``balance_days`` = Σ over the month's days of the end-of-day balance;
  ``uplift_balance_days`` = the same over ``clamp(balance − line_f, 0, uplift)``,
  the part of the balance above the platform-only line and within the uplift.
* ``interest = balance_days × rate_bp // (10 000 × 365)``, one floor per loan and
  month (the merchant keeps the fraction of a fen); likewise ``uplift_interest``
  from ``uplift_balance_days``, so ``uplift_interest ≤ interest``.
* **Interest first.** A repayment first pays the loan's interest accrued in closed
  periods and not yet paid (:func:`collect_interest`, in date order), then
  principal; only the principal part lowers the drawn balance. Interest of the
  month being closed is not yet accrued when its repayments arrive, so it is due
  from the next month on. The interest part is stored per loan and month
  (``credit_accruals.interest_paid``) and booked as one
  ``loans:<period>:interest-collected`` transfer (platform cash ← interest
  receivable); the month's repayment transfer carries the principal part only.
  So the drawn balance is Σdrawdowns − Σrepayments − Σwrite-offs + Σinterest paid.
* **Interest of a written-off loan.** When the month's write-offs leave a loan with
  no principal at the month's end, its whole interest receivable — earlier months'
  interest not yet paid (after this month's repayments) plus this month's accrual,
  which runs to the write-off date — is written off with it:
  ``interest-write-off:<loan>:<period>`` (credit-loss expense ← interest receivable),
  stored as ``credit_accruals.interest_written_off`` and never due again. A partial
  write-off (principal left) writes off no interest: the merchant still owes it.
  Interest due = Σinterest − Σinterest paid − Σinterest written off.
* **Recoveries.** A ``recovery`` (cash collected after a write-off; the import bounds it
  by what was written off less earlier recoveries) moves no principal and accrues
  nothing: the month's recoveries are one ``loans:<period>:recovery`` transfer
  (platform cash → ``platform:credit-loss-recovery``, income), whose metadata splits
  them *principal first*: with ``P`` the loan's principal written off to the month's
  end and ``R₀`` its recoveries before the month, a recovery ``r`` is principal
  ``min(R₀ + r, P) − min(R₀, P)`` and written-off interest for the rest. A recovered
  interest fen does not re-earn an ISV's share (see gateway.credit._shares).

:func:`close_period` computes this in one pass over the month's events (no event
per day per loan), stores one ``credit_accruals`` row per loan, and posts:
the month's repayments, drawdowns and write-offs as one transfer each
(``loans:<period>:<kind>``, metadata: count and SHA-256 of the event keys),
then one ``interest:<loan>:<period>`` transfer per loan (all in one
:func:`ledger.post_many`, linked as ``interest:<period>``), and a
``credit.period.closed`` ledger entry with the digest of the accrual rows. A
closed month is closed for good: closing again is a no-op and imports dated in
it are refused. Months close in order: a month is refused (``EARLIER_PERIOD_OPEN``)
while any month from the first one with loan events up to it is open — one without
events of its own too, since loans drawn earlier accrue in it — so every event and every
day of interest reaches the book before a later month's close (and its write-offs) sees
the loan.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import ledger

from ._bulk import among, copy_rows
from ._chart import CREDIT_LOSS, CREDIT_LOSS_RECOVERY, INTEREST_RECEIVABLE, open_credit_chart
from ._errors import PeriodError
from ._models import AccrualRow, LoanEventRow, LoanRow, PeriodCloseRow
from ._period import Period, period_of

__all__ = ["CLOSE_ENTRY", "CloseSummary", "LoanAccrual", "accrue", "close_period"]

CLOSE_ENTRY = "credit.period.closed"
_ACCRUAL_COLUMNS = (
    "loan_id",
    "period",
    "balance_days",
    "uplift_balance_days",
    "interest",
    "uplift_interest",
    "closing_balance",
    "interest_paid",
    "interest_written_off",
)
DAYS_PER_YEAR = 365
BP = 10_000


@dataclass(frozen=True, slots=True)
class LoanAccrual:
    """One loan's month."""

    loan_id: str
    balance_days: int
    uplift_balance_days: int
    interest: int
    uplift_interest: int
    closing_balance: int


@dataclass(frozen=True, slots=True)
class CloseSummary:
    """What closing a month did (or had done, when it was closed already)."""

    period: str
    loans: int
    interest: int
    uplift_interest: int
    accruals_digest: str
    already_closed: bool


def accrue(
    opening: int,
    events: list[tuple[date, int]],
    first: date,
    last: date,
    *,
    rate_bp: int,
    line_f: int,
    uplift: int,
) -> tuple[int, int, int, int, int]:
    """``(balance_days, uplift_balance_days, interest, uplift_interest, closing)`` of one loan.

    ``events`` are ``(day, signed amount)`` inside ``[first, last]``; ``opening`` is the
    balance at the end of the day before ``first``. Pure; see the module docstring.
    """
    room = max(uplift, 0)
    bal, prev, bd, ubd = opening, first, 0, 0
    for day, delta in sorted(events):
        span = (day - prev).days
        if span:
            b = max(bal, 0)
            bd += b * span
            ubd += min(max(b - line_f, 0), room) * span
            prev = day
        bal += delta
    span = (last - prev).days + 1
    b = max(bal, 0)
    bd += b * span
    ubd += min(max(b - line_f, 0), room) * span
    denom = BP * DAYS_PER_YEAR
    return bd, ubd, bd * rate_bp // denom, ubd * rate_bp // denom, b


def collect_interest(
    events: list[tuple[date, int, bool]], due: int
) -> tuple[list[tuple[date, int]], int]:
    """Apply repayments to ``due`` interest first: ``(principal movements, interest paid)``.

    ``events`` are a loan's ``(day, signed amount, is_repayment)`` of one period
    (repayments and write-offs negative); ``due`` is the interest accrued in closed
    periods and not yet paid. Repayments pay it in date order before any principal;
    drawdowns and write-offs move principal only. Pure.
    """
    out: list[tuple[date, int]] = []
    paid = 0
    for day, delta, repayment in sorted(events):
        if repayment and paid < due:
            part = min(-delta, due - paid)
            paid += part
            delta += part
        if delta:
            out.append((day, delta))
    return out, paid


def open_months_before(earliest: date | None, period: Period, closed: set[str]) -> list[str]:
    """The months from ``earliest``'s to the one before ``period`` not in ``closed``. Pure.

    ``earliest`` is the first day with a loan event before ``period`` (``None``: none).
    """
    out: list[str] = []
    if earliest is None:
        return out
    month = period_of(earliest)
    while month < period:
        if month not in closed:
            out.append(str(month))
        month = month.next
    return out


def _recovered_principal(session: Session, period: Period, recovered: dict[str, int]) -> int:
    """The principal part of the period's recoveries, principal first per loan.

    With ``P`` a loan's principal written off to the period's end and ``R₀`` its
    recoveries before the period, the period's ``r`` is principal
    ``min(R₀ + r, P) − min(R₀, P)``; the rest recovers written-off interest.
    """
    loans = sorted(recovered)
    before: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # [P, R₀]
    for loan, kind, day, amount in session.execute(
        select(
            LoanEventRow.loan_id, LoanEventRow.kind, LoanEventRow.day, LoanEventRow.amount
        ).where(
            among(session, LoanEventRow.loan_id, loans),
            LoanEventRow.kind.in_(("write_off", "recovery")),
            LoanEventRow.day <= period.last,
        )
    ):
        if kind == "write_off":
            before[loan][0] += int(amount)
        elif day < period.first:
            before[loan][1] += int(amount)
    total = 0
    for loan, r in recovered.items():
        p, r0 = before[loan]
        total += min(r0 + r, p) - min(r0, p)
    return total


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def close_period(
    session: Session,
    period: Period,
    *,
    currency: str,
    policy_version: int,
    at: datetime | None = None,
) -> CloseSummary:
    """Close ``period``: accrue every loan, store, post and log (see the module docstring)."""
    done = session.get(PeriodCloseRow, str(period))
    if done is not None:
        return CloseSummary(
            done.period,
            int(done.loans),
            int(done.interest),
            int(done.uplift_interest),
            done.accruals_digest,
            True,
        )
    now = at or datetime.now(UTC)
    first, last = period.first, period.last
    closed = set(session.execute(select(PeriodCloseRow.period)).scalars())
    earliest = session.execute(
        select(func.min(LoanEventRow.day)).where(LoanEventRow.day < first)
    ).scalar_one_or_none()
    # Every month from the first one with loan events on must be closed before this one,
    # those without events of their own too: a loan drawn earlier accrues in them, and a
    # later close (its write-off taking "the whole" interest receivable) must see it.
    earlier = open_months_before(earliest, period, closed)
    if earlier:
        raise PeriodError(
            f"close {earlier[0]} first: loan events start in "
            f"{earliest:%Y-%m} and months close in order",
            code="EARLIER_PERIOD_OPEN",
        )
    open_credit_chart(session, currency)
    sign = {"drawdown": 1, "repayment": -1, "write_off": -1, "recovery": 0}
    opening: dict[str, int] = defaultdict(int)
    for loan, kind, total in session.execute(
        select(LoanEventRow.loan_id, LoanEventRow.kind, func.sum(LoanEventRow.amount))
        .where(LoanEventRow.day < first, LoanEventRow.kind.notin_(("line_change", "recovery")))
        .group_by(LoanEventRow.loan_id, LoanEventRow.kind)
    ):
        opening[loan] += sign[kind] * int(total)
    # Interest of closed periods: what is still due, and what earlier repayments paid
    # (those parts did not reduce the principal, so they go back onto the opening).
    due: dict[str, int] = {}
    for loan, accrued, paid, written_off in session.execute(
        select(
            AccrualRow.loan_id,
            func.sum(AccrualRow.interest),
            func.sum(AccrualRow.interest_paid),
            func.sum(AccrualRow.interest_written_off),
        )
        .where(AccrualRow.period < str(period))
        .group_by(AccrualRow.loan_id)
    ):
        opening[loan] += int(paid)
        if int(accrued) > int(paid) + int(written_off):
            due[loan] = int(accrued) - int(paid) - int(written_off)
    moves: dict[str, list[tuple[date, int, bool]]] = defaultdict(list)
    written: set[str] = set()  # loans with a write-off in the period
    recovered: dict[str, int] = defaultdict(int)  # the period's recoveries per loan
    flows: dict[str, list[Any]] = {k: [0, 0, hashlib.sha256()] for k in sign}
    for key, loan, kind, day, amount in session.execute(
        select(
            LoanEventRow.key,
            LoanEventRow.loan_id,
            LoanEventRow.kind,
            LoanEventRow.day,
            LoanEventRow.amount,
        )
        .where(
            LoanEventRow.day >= first, LoanEventRow.day <= last, LoanEventRow.kind != "line_change"
        )
        .order_by(LoanEventRow.key)
    ):
        if kind == "recovery":
            recovered[loan] += int(amount)
        else:
            moves[loan].append((day, sign[kind] * int(amount), kind == "repayment"))
        if kind == "write_off":
            written.add(loan)
        f = flows[kind]
        f[0] += 1
        f[1] += int(amount)
        f[2].update(key.encode() + b"\n")
    active = {k for k, v in opening.items() if v > 0} | set(moves)
    terms = {
        r[0]: (int(r[1]), int(r[2]), int(r[3]) - int(r[2]))
        for r in session.execute(
            select(LoanRow.loan_id, LoanRow.rate_bp, LoanRow.line_f, LoanRow.line_with)
        )
    }
    rows: list[dict[str, Any]] = []
    lines: list[str] = []
    interest_reqs: list[ledger.TransferRequest] = []
    write_off_reqs: list[ledger.TransferRequest] = []
    total_i = total_u = total_paid = total_wo = 0
    for loan in sorted(active):
        rate, line_f, uplift = terms[loan]
        principal, paid = collect_interest(moves.get(loan, []), due.get(loan, 0))
        if opening.get(loan, 0) + sum(d for _, d in principal) < 0:
            raise PeriodError(
                f"loan {loan} would end {period} owing less than nothing", code="OVERPAID"
            )
        total_paid += paid
        bd, ubd, i, u, closing = accrue(
            opening.get(loan, 0),
            principal,
            first,
            last,
            rate_bp=rate,
            line_f=line_f,
            uplift=uplift,
        )
        # A write-off that leaves no principal takes the interest receivable with it:
        # earlier periods' unpaid interest and this period's accrual (see the docstring).
        wo = due.get(loan, 0) - paid + i if loan in written and closing == 0 else 0
        rows.append(
            {
                "loan_id": loan,
                "period": str(period),
                "balance_days": bd,
                "uplift_balance_days": ubd,
                "interest": i,
                "uplift_interest": u,
                "closing_balance": closing,
                "interest_paid": paid,
                "interest_written_off": wo,
            }
        )
        lines.append(f"{loan},{period},{bd},{ubd},{i},{u},{closing},{paid},{wo}")
        total_i += i
        total_u += u
        total_wo += wo
        if wo > 0:
            write_off_reqs.append(
                ledger.TransferRequest(
                    f"interest-write-off:{loan}:{period}",
                    CREDIT_LOSS,
                    INTEREST_RECEIVABLE,
                    ledger.Money(wo, currency),
                    {"loan": loan, "period": str(period), "reason": "principal written off"},
                )
            )
        if i > 0:
            interest_reqs.append(
                ledger.TransferRequest(
                    f"interest:{loan}:{period}",
                    INTEREST_RECEIVABLE,
                    ledger.INTEREST_INCOME,
                    ledger.Money(i, currency),
                    {"loan": loan, "period": str(period), "balance_days": bd, "rate_bp": rate},
                )
            )
    legs = {
        "repayment": (ledger.PLATFORM_CASH, ledger.LOANS_RECEIVABLE),
        "drawdown": (ledger.LOANS_RECEIVABLE, ledger.PLATFORM_CASH),
        "write_off": (CREDIT_LOSS, ledger.LOANS_RECEIVABLE),
        "recovery": (ledger.PLATFORM_CASH, CREDIT_LOSS_RECOVERY),
    }
    flows["repayment"][1] -= total_paid  # the rest of the repayments is principal
    extra: dict[str, dict[str, int]] = {"recovery": {}}
    if recovered:
        rec_principal = _recovered_principal(session, period, recovered)
        extra["recovery"] = {
            "principal": rec_principal,
            "interest": sum(recovered.values()) - rec_principal,
        }
    flow_reqs = [
        ledger.TransferRequest(
            f"loans:{period}:{kind}",
            dr,
            cr,
            ledger.Money(flows[kind][1], currency),
            {
                "period": str(period),
                "events": flows[kind][0],
                "keys_sha256": flows[kind][2].hexdigest(),
                **extra.get(kind, {}),
            },
        )
        for kind, (dr, cr) in legs.items()
        if flows[kind][1] > 0
    ]
    if total_paid > 0:
        flow_reqs.append(
            ledger.TransferRequest(
                f"loans:{period}:interest-collected",
                ledger.PLATFORM_CASH,
                INTEREST_RECEIVABLE,
                ledger.Money(total_paid, currency),
                {"period": str(period), "keys_sha256": flows["repayment"][2].hexdigest()},
            )
        )
    if flow_reqs:
        ledger.post_linked(session, flow_reqs, link_id=f"loans:{period}")
    if interest_reqs:
        ledger.post_many(session, interest_reqs, link_id=f"interest:{period}", at=now)
    if write_off_reqs:  # after the accruals they write off
        ledger.post_many(session, write_off_reqs, link_id=f"interest-write-off:{period}", at=now)
    copy_rows(
        session,
        "credit_accruals",
        _ACCRUAL_COLUMNS,
        [tuple(r[c] for c in _ACCRUAL_COLUMNS) for r in rows],
    )
    digest = _digest(lines)
    entry = ledger.append_entry(
        session,
        CLOSE_ENTRY,
        {
            "period": str(period),
            "loans": len(rows),
            "interest": total_i,
            "uplift_interest": total_u,
            "interest_written_off": total_wo,
            **({"recovered": flows["recovery"][1]} if recovered else {}),
            "accruals_sha256": digest,
            "currency": currency,
            "policy_version": policy_version,
        },
        at=now,
    )
    session.add(
        PeriodCloseRow(
            period=str(period),
            loans=len(rows),
            interest=total_i,
            uplift_interest=total_u,
            accruals_digest=digest,
            closed_at=now,
            log_seq=entry.seq,
        )
    )
    session.flush()
    return CloseSummary(str(period), len(rows), total_i, total_u, digest, False)
