"""A loan simulator for the demo and the bench: six months of events for the synthetic world.

Each merchant with a line takes one loan at the start of the first month and draws
``u × line`` (utilisation ``u ~ Uniform(0.3, 0.9)``). Every later month it repays
40 % of its balance on day 10 and draws back up to ``u × limit`` on day 20. Its
outcome is the world's: a merchant labelled as defaulting within 12 months
(``default_12m``, itself drawn from the world's true default propensity) stops
paying in a month drawn uniformly over those 12 months; if that month falls inside
the simulation it makes no more payments or drawdowns, and four months later the
lender writes the loan off (if that is still inside the simulation). So a line
given to a defaulter costs money and a line given to a good merchant earns
interest: better lines give measurably better outcomes.

Repayments and drawdowns follow the simulated balance above (Σdrawdowns − Σrepayments),
but a write-off takes the loan's **whole principal on its day as the book computes it**:
the book's repayments pay interest accrued in closed months first
(:func:`gateway.credit._accrual.collect_interest`) and interest accrues at each month's
close (:func:`gateway.credit._accrual.accrue`), so the principal is a little above the
simulated balance. The simulator replays each loan to be written off through those two
functions, month by month, at the loan's rate (``rate_bp``, else ``default_rate_bp``,
which must be the import's ``default_rate_bp``). So after the write-off month closes the
loan owes nothing: its principal is 0 and the book writes its unpaid interest off with it
(``interest-write-off``), which is what claws back ISV shares. Such a write-off exceeds
Σdrawdowns − Σrepayments when the merchant repaid before it stopped, and the import counts
a repayment as interest only for interest of closed months: import those events month by
month, each after the month before closed (a file sent in advance refuses the write-off,
``NEGATIVE_BALANCE``). Within six months only merchants that stop in month 0 or 1 reach
their write-off, and they never repaid, so there the write-off is Σdrawdowns.

With ``recovery_bp > 0`` the lender also collects
``⌊written-off principal × recovery_bp / 10 000⌋`` (whole yuan) from each written-off
merchant on day 15 of the month after the write-off, if that is inside the simulation: a
``recovery`` row (off by default, so the bench's and the demo's
published outcomes stay as measured).

Events come out as import rows (see :mod:`gateway.credit._loans`), keys
``sim:<loan>:<month>:<kind>``. Generation is vectorised over merchants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from ._accrual import accrue, collect_interest
from ._period import Period

__all__ = ["SimulatedLoans", "simulate_loans"]

REPAY_SHARE_BP = 4000
WRITE_OFF_AFTER = 4
WRITE_OFF_DAY = 28
DEFAULT_RATE_BP = 1800  # the default policy's rate (gateway.credit.DEFAULT_POLICY_TOML)


@dataclass(frozen=True, slots=True)
class SimulatedLoans:
    """Event rows and, per loan, the month it stopped paying (−1: never)."""

    events: list[dict[str, Any]]
    loan_ids: list[str]
    stop_month: np.ndarray


def _day(period: Period, day: int) -> str:
    return _date(period, day).isoformat()


def _date(period: Period, day: int) -> date:
    return date(period.first.year, period.first.month, min(day, period.days))


@dataclass(slots=True)
class _BookLoan:
    """One loan as the book sees it at a month's start: principal and interest still due."""

    rate_bp: int
    principal: int = 0
    due: int = 0

    def principal_on(self, moves: list[tuple[date, int, bool]], day: date) -> int:
        """The principal at the end of ``day`` after this month's ``moves`` up to it.

        ``moves`` are ``(day, signed amount, is_repayment)`` as in
        :func:`~gateway.credit._accrual.collect_interest`: repayments pay ``due`` first.
        """
        principal, _ = collect_interest([m for m in moves if m[0] <= day], self.due)
        return self.principal + sum(d for _, d in principal)

    def close(self, moves: list[tuple[date, int, bool]], period: Period) -> None:
        """Close ``period`` as :func:`~gateway.credit._accrual.close_period` does for the loan.

        Repayments pay the due interest first; the rest moves principal; the month's
        interest (:func:`~gateway.credit._accrual.accrue`) becomes due from next month.
        """
        principal, paid = collect_interest(moves, self.due)
        *_, interest, _, closing = accrue(
            self.principal,
            principal,
            period.first,
            period.last,
            rate_bp=self.rate_bp,
            line_f=0,
            uplift=0,
        )
        self.principal, self.due = closing, self.due - paid + interest


def simulate_loans(
    merchant_ids: Sequence[str],
    limits: Sequence[int],
    defaults: Sequence[int],
    *,
    start: Period,
    months: int = 6,
    seed: int = 0,
    currency: str = "CNY",
    rate_bp: int | None = None,
    default_rate_bp: int = DEFAULT_RATE_BP,
    recovery_bp: int = 0,
) -> SimulatedLoans:
    """Simulate ``months`` months of loans for merchants with ``limits > 0`` (fen).

    Parameters
    ----------
    rate_bp : int | None, default None
        Written on each loan's first drawdown; ``None`` leaves the import's default.
    default_rate_bp : int, default 1800 (the default policy's)
        The rate the import gives loans without ``rate_bp``; write-offs are computed
        with it (see the module docstring), so pass the import's ``default_rate_bp``.
    recovery_bp : int, default 0
        Share of each written-off principal recovered the month after (0: none).
    """
    if not 0 <= recovery_bp <= 10_000:
        raise ValueError(f"recovery_bp must be in 0..10000, got {recovery_bp}")
    if not 0 <= default_rate_bp <= 100_000:
        raise ValueError(f"default_rate_bp must be in 0..100000, got {default_rate_bp}")
    rng = np.random.default_rng([seed, 7])
    ids = np.asarray(merchant_ids, dtype=object)
    lim = np.asarray(limits, dtype=np.int64)
    bad = np.asarray(defaults, dtype=bool)
    n = len(ids)
    util_bp = rng.integers(3000, 9001, n)
    stop = np.where(bad, rng.integers(0, 12, n), -1)
    stop = np.where(stop >= months, -1, stop)
    periods = [start]
    for _ in range(months - 1):
        periods.append(periods[-1].next)
    events: list[dict[str, Any]] = []
    loan_ids: list[str] = []
    balance = np.zeros(n, dtype=np.int64)
    has = lim > 0
    target = lim * util_bp // 10_000
    target = target - target % 100
    for i in np.flatnonzero(has):
        loan_ids.append(f"L-{ids[i]}")
    recover = np.zeros(n, dtype=np.int64)  # to collect this month, from last month's write-off
    # Loans to be written off inside the simulation, replayed as the book will see them.
    book = {
        int(i): _BookLoan(default_rate_bp if rate_bp is None else rate_bp)
        for i in np.flatnonzero(has & (stop >= 0) & (stop + WRITE_OFF_AFTER < months))
    }
    for m, per in enumerate(periods):
        alive = has & ((stop < 0) | (stop > m))
        if m == 0:
            draw = np.where(alive | (has & (stop == 0)), target, 0)
            for j, owed in book.items():
                if draw[j] > 0:
                    owed.close([(_date(per, 1 + j % 9), int(draw[j]), False)], per)
            for i in np.flatnonzero(draw > 0):
                loan = f"L-{ids[i]}"
                row = {
                    "key": f"sim:{loan}:0:drawdown",
                    "loan_id": loan,
                    "merchant": ids[i],
                    "kind": "drawdown",
                    "date": _day(per, 1 + int(i) % 9),
                    "amount": int(draw[i]),
                    "currency": currency,
                }
                if rate_bp is not None:
                    row["rate_bp"] = rate_bp
                events.append(row)
            balance = draw.astype(np.int64)
            continue
        repay = np.where(alive, balance * REPAY_SHARE_BP // 10_000, 0)
        repay = repay - repay % 100
        after = balance - repay
        redraw = np.where(alive, np.maximum(target - after, 0), 0)
        wo = has & (stop >= 0) & (m == stop + WRITE_OFF_AFTER) & (balance > 0)
        written = np.zeros(n, dtype=np.int64)  # the book's whole principal on the day
        for j, owed in list(book.items()):
            moves = [(_date(per, 10), -int(repay[j]), True)] if repay[j] > 0 else []
            if redraw[j] > 0:
                moves.append((_date(per, 20), int(redraw[j]), False))
            if wo[j]:
                written[j] = owed.principal_on(moves, _date(per, WRITE_OFF_DAY))
                del book[j]  # owes nothing once the month closes
            else:
                owed.close(moves, per)
        for i in np.flatnonzero((repay > 0) | (redraw > 0) | wo):
            loan = f"L-{ids[i]}"
            if repay[i] > 0:
                events.append(
                    {
                        "key": f"sim:{loan}:{m}:repayment",
                        "loan_id": loan,
                        "kind": "repayment",
                        "date": _day(per, 10),
                        "amount": int(repay[i]),
                        "currency": currency,
                    }
                )
            if redraw[i] > 0:
                events.append(
                    {
                        "key": f"sim:{loan}:{m}:drawdown",
                        "loan_id": loan,
                        "kind": "drawdown",
                        "date": _day(per, 20),
                        "amount": int(redraw[i]),
                        "currency": currency,
                    }
                )
            if wo[i]:
                events.append(
                    {
                        "key": f"sim:{loan}:{m}:write_off",
                        "loan_id": loan,
                        "kind": "write_off",
                        "date": _day(per, WRITE_OFF_DAY),
                        "amount": int(written[i]),
                        "currency": currency,
                    }
                )
        for i in np.flatnonzero(recover > 0):
            loan = f"L-{ids[i]}"
            events.append(
                {
                    "key": f"sim:{loan}:{m}:recovery",
                    "loan_id": loan,
                    "kind": "recovery",
                    "date": _day(per, 15),
                    "amount": int(recover[i]),
                    "currency": currency,
                }
            )
        recover = np.where(wo, written * recovery_bp // 10_000, 0)
        recover = recover - recover % 100
        balance = np.where(wo, 0, after + redraw)
    return SimulatedLoans(events, loan_ids, stop[has])
