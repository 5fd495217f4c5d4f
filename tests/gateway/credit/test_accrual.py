"""Month close: daily interest from the balance history, by hand, and its postings."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import ledger
from gateway import credit
from gateway.credit._models import AccrualRow, PeriodCloseRow

from ._helpers import decide, event, import_rows, merchant, setup_book

JUL = credit.parse_period("2026-07")


def _one_loan_closed_through_january(s: Session) -> tuple[int, int]:
    """m1's line decided, loan L1 of 1,000,000 fen at 36.5 % (1,000 a day) drawn on
    2026-01-01 and January closed; returns the policy version and the platform's cash
    before the drawdown."""
    v, pol = setup_book(s)
    decide(s, v, pol, [merchant("m1", 600_000_00, 0.06, 0.03)])
    cash0 = ledger.balance(s, ledger.PLATFORM_CASH).amount
    import_rows(
        s, [event("d1", "L1", "drawdown", "2026-01-01", 1_000_000, merchant="m1", rate_bp=3650)]
    )
    credit.close_period(s, credit.parse_period("2026-01"), currency="CNY", policy_version=v)
    return v, cash0


def test_accrue_by_hand() -> None:
    """1,000,000 fen for 31 days at 18 %: floor(31e6 × 1800 / 3,650,000) = 15,287 fen."""
    bd, ubd, i, u, closing = credit.accrue(
        1_000_000, [], JUL.first, JUL.last, rate_bp=1800, line_f=600_000, uplift=300_000
    )

    assert (bd, i, closing) == (31_000_000, 15_287, 1_000_000)
    # Above the platform line: min(1,000,000 − 600,000, 300,000) = 300,000 a day.
    assert (ubd, u) == (9_300_000, 4_586)


def test_accrue_follows_the_balance_history() -> None:
    """Draw 1,000,000 on the 1st, repay 400,000 on the 11th: 10 days at 1.0M, 21 at 0.6M."""
    events = [(date(2026, 7, 1), 1_000_000), (date(2026, 7, 11), -400_000)]

    bd, ubd, i, u, closing = credit.accrue(
        0, events, JUL.first, JUL.last, rate_bp=1800, line_f=500_000, uplift=500_000
    )

    assert bd == 10 * 1_000_000 + 21 * 600_000
    assert ubd == 10 * 500_000 + 21 * 100_000
    assert i == bd * 1800 // 3_650_000 and u == ubd * 1800 // 3_650_000
    assert closing == 600_000


def test_no_uplift_no_uplift_interest() -> None:
    """A balance above the platform line earns no uplift interest when the uplift is ≤ 0."""
    _, ubd, _, u, _ = credit.accrue(
        5_000_000, [], JUL.first, JUL.last, rate_bp=1800, line_f=1_000_000, uplift=-200_000
    )

    assert (ubd, u) == (0, 0)


def test_close_posts_and_is_idempotent(sessions: sessionmaker[Session]) -> None:
    """Closing stores accruals, posts flows and interest, and closing again changes nothing."""
    with sessions() as s, s.begin():
        v, pol = setup_book(s)
        decide(s, v, pol, [merchant("m1", 600_000_00, 0.06, 0.03)])
        import_rows(
            s,
            [
                event("d1", "L1", "drawdown", "2026-07-01", 1_000_000, merchant="m1"),
                event("r1", "L1", "repayment", "2026-07-11", 400_000),
            ],
        )
        first = credit.close_period(s, JUL, currency="CNY", policy_version=v)
        again = credit.close_period(s, JUL, currency="CNY", policy_version=v)
        acc = s.execute(select(AccrualRow)).scalar_one()
        interest = ledger.get_transfer(s, "interest:L1:2026-07")
        drawn = ledger.balance(s, ledger.LOANS_RECEIVABLE)
        tb = ledger.trial_balance(s)

    expected = (10 * 1_000_000 + 21 * 600_000) * 1800 // 3_650_000
    assert (first.loans, first.interest, again.already_closed) == (1, expected, True)
    assert acc.interest == expected and acc.closing_balance == 600_000
    assert interest is not None and interest.amount.amount == expected
    assert drawn.amount == 600_000
    assert tb.balanced


def test_collect_interest_pays_due_interest_first() -> None:
    """Repayments pay due interest in date order; drawdowns and write-offs move principal only."""
    events = [
        (date(2026, 8, 20), -300, True),
        (date(2026, 8, 5), 1_000, False),
        (date(2026, 8, 10), -200, True),
        (date(2026, 8, 15), -50, False),  # a write-off never pays interest
    ]

    principal, paid = credit.collect_interest(events, 350)

    # 10th: 200 all interest; 20th: 150 interest, 150 principal.
    assert paid == 350
    assert principal == [
        (date(2026, 8, 5), 1_000),
        (date(2026, 8, 15), -50),
        (date(2026, 8, 20), -150),
    ]
    assert credit.collect_interest(events, 0) == (sorted((d, a) for d, a, _ in events), 0)


def test_repayments_pay_interest_first_by_hand(sessions: sessionmaker[Session]) -> None:
    """Three months of one loan at 36.5 % (interest = balance / 1,000 a day), checked by hand.

    Jan: 1,000,000 drawn on the 1st, 31 days → 31,000 interest.
    Feb: 500,000 repaid on the 10th pays the 31,000 first, 469,000 principal → 531,000;
         9 days × 1,000,000 + 19 days × 531,000 = 19,089,000 balance-days → 19,089.
    Mar: 550,089 repaid on the 1st pays 19,089 interest and the last 531,000 → nothing owed.
    """
    feb, mar = (credit.parse_period(p) for p in ("2026-02", "2026-03"))
    with sessions() as s, s.begin():
        v, cash0 = _one_loan_closed_through_january(s)
        import_rows(s, [event("r1", "L1", "repayment", "2026-02-10", 500_000)])
        credit.close_period(s, feb, currency="CNY", policy_version=v)
        after_feb = {
            a: ledger.balance(s, a).amount
            for a in (credit.INTEREST_RECEIVABLE, ledger.LOANS_RECEIVABLE, ledger.INTEREST_INCOME)
        }
        collected = ledger.get_transfer(s, "loans:2026-02:interest-collected")
        principal = ledger.get_transfer(s, "loans:2026-02:repayment")
        # The payoff is more than was drawn: allowed, because interest is owed too.
        import_rows(s, [event("r2", "L1", "repayment", "2026-03-01", 550_089)])
        credit.close_period(s, mar, currency="CNY", policy_version=v)
        rows = {
            r.period: (r.interest, r.interest_paid, r.closing_balance)
            for r in s.execute(select(AccrualRow)).scalars()
        }
        end = {
            a: ledger.balance(s, a).amount
            for a in (credit.INTEREST_RECEIVABLE, ledger.LOANS_RECEIVABLE, ledger.INTEREST_INCOME)
        }
        cash = ledger.balance(s, ledger.PLATFORM_CASH).amount
        tb = ledger.trial_balance(s)
        book = ledger.reconcile_book(s)

    assert rows == {
        "2026-01": (31_000, 0, 1_000_000),
        "2026-02": (19_089, 31_000, 531_000),
        "2026-03": (0, 19_089, 0),
    }
    assert collected is not None and collected.amount.amount == 31_000
    assert (collected.debit, collected.credit) == (ledger.PLATFORM_CASH, credit.INTEREST_RECEIVABLE)
    assert principal is not None and principal.amount.amount == 469_000
    assert after_feb == {
        credit.INTEREST_RECEIVABLE: 19_089,
        ledger.LOANS_RECEIVABLE: 531_000,
        ledger.INTEREST_INCOME: 50_089,
    }
    assert end == {
        credit.INTEREST_RECEIVABLE: 0,
        ledger.LOANS_RECEIVABLE: 0,
        ledger.INTEREST_INCOME: 50_089,
    }
    assert cash - cash0 == 50_089  # the platform got back what it lent, plus the interest
    assert tb.balanced and book.ok


def test_repaying_more_than_principal_and_interest_is_refused(
    sessions: sessionmaker[Session],
) -> None:
    """One fen more than principal plus accrued interest: NEGATIVE_BALANCE, nothing kept."""
    with sessions() as s, s.begin():
        _one_loan_closed_through_january(s)

    with pytest.raises(credit.ImportRefused) as info, sessions() as s, s.begin():
        import_rows(s, [event("r1", "L1", "repayment", "2026-02-10", 1_031_001)])

    assert info.value.code == "NEGATIVE_BALANCE"


def test_write_off_takes_the_interest_receivable_by_hand(sessions: sessionmaker[Session]) -> None:
    """Two loans at 36.5 % (interest = balance / 1,000 a day), checked by hand to the fen.

    L1 (m1): 1,000,000 drawn on Jan 1 → Jan 31,000. Feb 10: 20,000 repaid, all of it
    interest (11,000 of Jan's still due); Feb 20: the whole 1,000,000 written off. Feb accrues
    19 days × 1,000,000 → 19,000; written off 31,000 − 20,000 + 19,000 = 30,000.
    L2 (m2): 500,000 drawn on Jan 1 → 15,500; Feb 15: 100,000 written off (partial), Feb
    14 × 500,000 + 14 × 400,000 → 12,600, nothing written off: still owed, 28,100 receivable.
    """
    jan, feb, mar = (credit.parse_period(p) for p in ("2026-01", "2026-02", "2026-03"))
    with sessions() as s, s.begin():
        v, pol = setup_book(s)
        decide(
            s,
            v,
            pol,
            [merchant("m1", 600_000_00, 0.06, 0.03), merchant("m2", 600_000_00, 0.06, 0.03)],
        )
        cash0 = ledger.balance(s, ledger.PLATFORM_CASH).amount
        import_rows(
            s,
            [
                event("d1", "L1", "drawdown", "2026-01-01", 1_000_000, merchant="m1", rate_bp=3650),
                event("d2", "L2", "drawdown", "2026-01-01", 500_000, merchant="m2", rate_bp=3650),
            ],
        )
        credit.close_period(s, jan, currency="CNY", policy_version=v)
        import_rows(
            s,
            [
                event("r1", "L1", "repayment", "2026-02-10", 20_000),
                event("w1", "L1", "write_off", "2026-02-20", 1_000_000),
                event("w2", "L2", "write_off", "2026-02-15", 100_000),
            ],
        )
        credit.close_period(s, feb, currency="CNY", policy_version=v)
        again = credit.close_period(s, feb, currency="CNY", policy_version=v)
        accounts = (
            credit.INTEREST_RECEIVABLE,
            ledger.LOANS_RECEIVABLE,
            ledger.INTEREST_INCOME,
            credit.CREDIT_LOSS,
        )
        after_feb = {a: ledger.balance(s, a).amount for a in accounts}
        wo = ledger.get_transfer(s, "interest-write-off:L1:2026-02")
        none_l2 = ledger.get_transfer(s, "interest-write-off:L2:2026-02")
        credit.close_period(s, mar, currency="CNY", policy_version=v)
        rows = {
            (r.loan_id, r.period): (r.interest, r.interest_paid, r.closing_balance,
                                    r.interest_written_off)
            for r in s.execute(select(AccrualRow)).scalars()
        }  # fmt: skip
        end = {a: ledger.balance(s, a).amount for a in accounts}
        cash = ledger.balance(s, ledger.PLATFORM_CASH).amount
        tb = ledger.trial_balance(s)
        book = ledger.reconcile_book(s)

    assert rows == {
        ("L1", "2026-01"): (31_000, 0, 1_000_000, 0),
        ("L2", "2026-01"): (15_500, 0, 500_000, 0),
        ("L1", "2026-02"): (19_000, 20_000, 0, 30_000),
        ("L2", "2026-02"): (12_600, 0, 400_000, 0),
        ("L2", "2026-03"): (12_400, 0, 400_000, 0),  # L1: nothing left, no row
    }
    assert wo is not None and wo.amount.amount == 30_000
    assert (wo.debit, wo.credit) == (credit.CREDIT_LOSS, credit.INTEREST_RECEIVABLE)
    assert none_l2 is None and again.already_closed
    assert after_feb == {
        credit.INTEREST_RECEIVABLE: 28_100,  # L2's only: 15,500 + 12,600
        ledger.LOANS_RECEIVABLE: 400_000,
        ledger.INTEREST_INCOME: 31_000 + 15_500 + 19_000 + 12_600,
        credit.CREDIT_LOSS: 1_000_000 + 100_000 + 30_000,
    }
    assert end[credit.INTEREST_RECEIVABLE] == 28_100 + 12_400
    assert end[credit.CREDIT_LOSS] == after_feb[credit.CREDIT_LOSS]
    assert cash0 - cash == 1_500_000 - 20_000
    assert tb.balanced and book.ok


def test_a_month_without_events_still_closes_before_the_next(
    sessions: sessionmaker[Session],
) -> None:
    """1,000,000 fen at 36.5 % (1,000 a day) drawn Jan 1, written off whole on Mar 10;
    February holds no event. March cannot close before February (the loan accrues in it):
    refused with ``EARLIER_PERIOD_OPEN`` and nothing kept. In order, the write-off takes
    Jan 31,000 + Feb 28,000 + Mar 9 × 1,000 = 68,000 fen of interest, and the claw-back
    reads exactly those months (the Hypothesis property found March closed first, leaving
    February's 28,000 receivable on a written-off loan)."""
    feb, mar = (credit.parse_period(p) for p in ("2026-02", "2026-03"))
    with sessions() as s, s.begin():
        v, _ = _one_loan_closed_through_january(s)
        import_rows(s, [event("w1", "L1", "write_off", "2026-03-10", 1_000_000)])
        before = _state(s)
        with pytest.raises(credit.PeriodError) as refused:
            credit.close_period(s, mar, currency="CNY", policy_version=v)
        after = _state(s)
        credit.close_period(s, feb, currency="CNY", policy_version=v)
        credit.close_period(s, mar, currency="CNY", policy_version=v)
        rows = {
            r.period: (r.interest, r.interest_paid, r.closing_balance, r.interest_written_off)
            for r in s.execute(select(AccrualRow)).scalars()
        }
        receivable = ledger.balance(s, credit.INTEREST_RECEIVABLE).amount
        tb = ledger.trial_balance(s)

    assert refused.value.code == "EARLIER_PERIOD_OPEN" and "2026-02" in str(refused.value)
    assert after == before and before[1:] == (["2026-01"], 1)
    assert rows == {
        "2026-01": (31_000, 0, 1_000_000, 0),
        "2026-02": (28_000, 0, 1_000_000, 0),
        "2026-03": (9_000, 0, 0, 68_000),
    }
    assert receivable == 0 and tb.balanced
    taken = credit.written_off_by_month((p, i, paid, wo) for p, (i, paid, _, wo) in rows.items())
    assert taken == {"2026-03": {"2026-01": 31_000, "2026-02": 28_000, "2026-03": 9_000}}


def _state(s: Session) -> tuple[object, list[str], int]:
    """The trial balance, the closed months and the number of accrual rows."""
    closed = sorted(s.execute(select(PeriodCloseRow.period)).scalars())
    return ledger.trial_balance(s), closed, len(s.execute(select(AccrualRow)).scalars().all())
