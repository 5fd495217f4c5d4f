"""The loan simulator's write-offs take the book's whole principal (both DBs).

The book's repayments pay interest accrued in closed months first, so a merchant who
repaid before it stopped owes a principal a little above the simulator's own balance
(Σdrawdowns − Σrepayments). The simulator replays such loans through the accrual's pure
functions and writes that principal off, so after the month closes the loan owes
nothing (principal 0, interest receivable 0), its interest is written off and the ISV
shares on it are clawed back.

The lending system sends each month's events after the month before closed: the import
counts a repayment as interest first only for interest accrued in closed months, so a
whole write-off is larger than what a file sent in advance shows as owed.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

import ledger
from gateway import credit
from gateway.credit._models import AccrualRow

from ._helpers import decide, import_and_settle_by_month, merchant, setup_book

START = credit.parse_period("2026-01")
MONTHS = 7
IDS = [f"s{i}" for i in range(12)]


def _simulate(limits: list[int], seed: int = 0) -> credit.SimulatedLoans:
    """Twelve defaulters, seven months: seed 0 stops ``L-s6`` in month 2, after a repayment."""
    return credit.simulate_loans(IDS, limits, [1] * len(IDS), start=START, months=MONTHS, seed=seed)


def test_written_off_loans_owe_nothing_after_close(sessions: sessionmaker[Session]) -> None:
    """Every written-off loan ends with principal 0 and interest receivable 0; its interest
    is written off and the ISV's shares on it come back (the old simulator wrote off only
    Σdrawdowns − Σrepayments, which left ``L-s6`` a residue principal and no interest
    write-off)."""
    with sessions() as s, s.begin():
        v, pol = setup_book(s)
        lines = decide(s, v, pol, [merchant(m, 600_000_00, 0.09, 0.02) for m in IDS])
        sim = _simulate([d.line_with for d in lines])
        done = import_and_settle_by_month(s, sim.events, START, MONTHS, v, pol)
        acc = {
            loan: (int(i), int(p), int(w))
            for loan, i, p, w in s.execute(
                select(
                    AccrualRow.loan_id,
                    func.sum(AccrualRow.interest),
                    func.sum(AccrualRow.interest_paid),
                    func.sum(AccrualRow.interest_written_off),
                ).group_by(AccrualRow.loan_id)
            )
        }
        closing = {  # each loan's principal at the end of its last accrued month
            r.loan_id: int(r.closing_balance)
            for r in s.execute(select(AccrualRow).order_by(AccrualRow.period)).scalars()
        }
        s6_claw = ledger.get_transfer(s, "share-clawback:L-s6:2026-01:isv01")
        s6_share = ledger.get_transfer(s, "share:L-s6:2026-01:isv01")
        s6_feb = ledger.get_transfer(s, "share-clawback:L-s6:2026-02:isv01")
        tb = ledger.trial_balance(s)
        book = ledger.reconcile_book(s)

    flows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in sim.events:
        flows[e["loan_id"]][e["kind"]] += e["amount"]
    written = sorted(loan for loan, f in flows.items() if f["write_off"])
    assert len(written) == 4
    for loan in written:
        f, (interest, paid, wo) = flows[loan], acc[loan]
        # The book's principal: Σdrawdowns − Σrepayments − Σwrite-offs + Σinterest paid.
        assert f["drawdown"] - f["repayment"] - f["write_off"] + paid == 0, loan
        assert interest - paid - wo == 0 and wo > 0, loan
        assert closing[loan] == 0, loan
    # L-s6 repaid in month 1 (paying January's interest first) before it stopped: its
    # write-off is its simulated balance plus that interest, not a round yuan amount.
    s6 = flows["L-s6"]
    assert s6["repayment"] > 0 and acc["L-s6"][1] > 0
    assert s6["write_off"] == s6["drawdown"] - s6["repayment"] + acc["L-s6"][1]
    assert sum(x.clawback for x in done) > 0
    # January's interest was paid, so its share was earned and stays; February's and later
    # months' interest was written off, so their shares come back, not January's.
    assert s6_share is not None and s6_claw is None
    assert s6_feb is not None and s6_feb.amount.amount > 0
    assert tb.balanced and book.ok


def test_write_offs_take_the_interest_paid_and_stay_deterministic() -> None:
    """Pure: only loans that repaid before stopping differ from Σdrawdowns − Σrepayments, by
    the interest those repayments paid; the same seed gives the same rows."""
    limits = [50_000_000] * len(IDS)
    sim = _simulate(limits)
    assert sim.events == _simulate(limits).events
    assert sim.events != _simulate(limits, seed=1).events
    flows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in sim.events:
        flows[e["loan_id"]][e["kind"]] += e["amount"]
    over = {
        loan: f["write_off"] - (f["drawdown"] - f["repayment"])
        for loan, f in flows.items()
        if f["write_off"]
    }
    # Loans that never repaid (stopped in month 0 or 1) owe exactly what they drew.
    assert {loan for loan, x in over.items() if x == 0} == {
        loan for loan in over if flows[loan]["repayment"] == 0
    }
    assert over["L-s6"] > 0
    # The interest paid is at most a month's interest at 18 % on the drawdown.
    assert over["L-s6"] <= flows["L-s6"]["drawdown"] * 1800 * 31 // (10_000 * 365)


def test_default_rate_is_checked() -> None:
    """A rate outside 0..100000 bp is refused by name."""
    with pytest.raises(ValueError, match="default_rate_bp"):
        credit.simulate_loans(["a"], [100_000], [0], start=START, default_rate_bp=-1)
