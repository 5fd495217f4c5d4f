"""Month close: daily interest from the balance history, by hand, and its postings."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import ledger
from gateway import credit
from gateway.credit._models import AccrualRow

from ._helpers import decide, event, import_rows, merchant, setup_book

JUL = credit.parse_period("2026-07")


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
