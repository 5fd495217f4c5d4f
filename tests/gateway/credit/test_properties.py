"""Property: any sequence of loan events and settlements keeps the book balanced, the loans and
interest receivables equal to what the accrual rows say, and pays no share on a merchant whose
uplift is ≤ 0 (both databases)."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import ledger
from gateway import credit
from gateway.credit._models import AccrualRow, LoanEventRow, LoanRow, PeriodCloseRow

from ._helpers import decide, event, import_rows, merchant, setup_book

_COUNTER = itertools.count()

ops = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["drawdown", "repayment", "write_off"]),
            st.integers(0, 2),
            st.integers(1, 4),
            st.integers(1, 28),
            st.integers(1, 30_000_000),
        ),
        st.tuples(st.just("settle"), st.integers(1, 4)),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=ops)
def test_book_balances_and_no_share_without_uplift(
    sessions: sessionmaker[Session],
    steps: list[tuple],  # type: ignore[type-arg]
) -> None:
    """Σdebits = Σcredits after every step; shares go only to loans with a positive uplift."""
    n = next(_COUNTER)
    year = 2100 + n  # later than any period an earlier example closed
    ms = [
        merchant(f"p{n}-up", 600_000_00, 0.06, 0.03),
        merchant(f"p{n}-flat", 600_000_00, 0.06, None),
        merchant(f"p{n}-down", 600_000_00, 0.03, 0.09),
    ]
    with sessions() as s, s.begin():
        try:
            v, pol = setup_book(s)
        except ledger.TransferRejected:
            v, pol = credit.current_policy(s)
        decide(s, v, pol, ms)
    for i, step in enumerate(steps):
        with sessions() as s, s.begin():
            if step[0] == "settle":
                try:
                    with s.begin_nested():
                        credit.settle_period(
                            s,
                            credit.parse_period(f"{year}-{step[1]:02d}"),
                            policy_version=v,
                            policy=pol,
                            clear=i % 2 == 0,
                        )
                except credit.PeriodError:
                    pass  # an earlier month with events is still open: refused, nothing kept
            else:
                kind, who, month, day, amount = step
                m = ms[who].merchant_id
                row = event(
                    f"k{n}-{i}", f"L-{m}", kind, f"{year}-{month:02d}-{day:02d}", amount, merchant=m
                )
                try:
                    with s.begin_nested():
                        import_rows(s, [row])
                except credit.ImportRefused:
                    pass  # refused rows keep nothing; the book must still balance
            tb = ledger.trial_balance(s)
            assert tb.balanced
            assert ledger.balance(s, ledger.LOANS_RECEIVABLE).amount == _closed_principal(s)
            assert ledger.balance(s, credit.INTEREST_RECEIVABLE).amount == _interest_due(s)
    with sessions() as s, s.begin():
        # Close the example's months in order, so that the next example's months can close.
        for month in range(1, 5):
            credit.settle_period(
                s,
                credit.parse_period(f"{year}-{month:02d}"),
                policy_version=v,
                policy=pol,
                clear=True,
            )
        assert ledger.trial_balance(s).balanced
        assert ledger.balance(s, ledger.LOANS_RECEIVABLE).amount == _closed_principal(s)
        uplift = {r.loan_id: r.line_with - r.line_f for r in s.execute(select(LoanRow)).scalars()}
        shares = (
            [
                t
                for a in ("isv01",)
                for t in ledger.transfers_of(s, ledger.isv_payable(a))
                if t.id.startswith("share:")
            ]
            if _has(s, "isv01")
            else []
        )
    for t in shares:
        assert uplift[str(t.metadata["loan"])] > 0


def _closed_principal(s: Session) -> int:
    """Σ drawdowns − repayments − write-offs dated in closed periods, plus the parts of those
    repayments that paid interest instead of principal (what the book must hold)."""
    closed = set(s.execute(select(PeriodCloseRow.period)).scalars())
    sign = {"drawdown": 1, "repayment": -1, "write_off": -1, "line_change": 0}
    flows = sum(
        sign[kind] * int(amount)
        for kind, day, amount in s.execute(
            select(LoanEventRow.kind, LoanEventRow.day, LoanEventRow.amount)
        )
        if f"{day:%Y-%m}" in closed
    )
    return flows + sum(int(r.interest_paid) for r in s.execute(select(AccrualRow)).scalars())


def _interest_due(s: Session) -> int:
    """Σ interest accrued − Σ interest paid − Σ interest written off over every closed
    loan-month; a loan whose write-offs took its whole principal owes no interest."""
    rows = list(s.execute(select(AccrualRow)).scalars())
    last: dict[str, AccrualRow] = {}
    for r in sorted(rows, key=lambda r: r.period):
        last[r.loan_id] = r
    gone = {k for k, r in last.items() if r.closing_balance == 0 and r.interest_written_off > 0}
    owed: dict[str, int] = {}
    for r in rows:
        owed[r.loan_id] = owed.get(r.loan_id, 0) + (
            int(r.interest) - int(r.interest_paid) - int(r.interest_written_off)
        )
    assert all(owed[k] == 0 for k in gone)
    return sum(owed.values())


def _has(s: Session, isv: str) -> bool:
    try:
        ledger.get_account(s, ledger.isv_payable(isv))
    except ledger.AccountRejected:
        return False
    return True
