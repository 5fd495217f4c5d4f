"""Fees from receipts, shares from uplift interest: hand-checked, idempotent, tied to the book."""

from __future__ import annotations

import hashlib

from sqlalchemy.orm import Session, sessionmaker

import ledger
from gateway import credit

from ._helpers import decide, event, import_rows, merchant, receipt, setup_book

JUL = credit.parse_period("2026-07")


def _world(s: Session) -> tuple[int, credit.CreditPolicy]:
    """Two merchants: one with +75k yuan uplift (isv01), one lowered (isv02); receipts for both."""
    v, pol = setup_book(s)
    decide(
        s,
        v,
        pol,
        [
            merchant("m-up", 600_000_00, 0.06, 0.03),
            merchant("m-down", 600_000_00, 0.03, 0.09, {"isv02": 0.09}),
        ],
    )
    import_rows(
        s,
        [
            event("d1", "L-up", "drawdown", "2026-07-01", 20_000_000, merchant="m-up"),
            event("d2", "L-down", "drawdown", "2026-07-01", 7_000_000, merchant="m-down"),
        ],
    )
    receipt(
        s,
        "isv01",
        "train",
        used=1000,
        read=1200,
        issued_at="2026-07-03T10:00:00.000000Z",
        token="tok-a",
    )
    receipt(
        s,
        "isv01",
        "query.score",
        used=800,
        read=800,
        issued_at="2026-07-04T10:00:00.000000Z",
        token="tok-b",
    )
    receipt(
        s,
        "isv01",
        "evaluate",
        used=300,
        read=300,
        issued_at="2026-07-04T10:00:00.000000Z",
        token="tok-c",
    )
    receipt(
        s,
        "isv02",
        "train",
        used=500,
        read=900,
        issued_at="2026-07-05T10:00:00.000000Z",
        token="tok-d",
    )
    receipt(
        s,
        "isv02",
        "query.signals",
        used=200,
        read=250,
        issued_at="2026-07-06T10:00:00.000000Z",
        token="tok-f",
    )
    receipt(
        s,
        "isv02",
        "train",
        used=999,
        read=999,
        issued_at="2026-08-01T00:00:00.000000Z",
        token="tok-e",
    )
    return v, pol


def test_fee_and_share_by_hand(sessions: sessionmaker[Session]) -> None:
    """Fees = 50 fen × merchants used (train, score, signals); share = 20 % of uplift interest."""
    with sessions() as s, s.begin():
        v, pol = _world(s)
        done = {x.isv: x for x in credit.settle_period(s, JUL, policy_version=v, policy=pol)}
        fee_a = ledger.get_transfer(s, f"fee:{hashlib.sha256(b'tok-a').hexdigest()}")
        evaluate = ledger.get_transfer(s, f"fee:{hashlib.sha256(b'tok-c').hexdigest()}")

    # isv01: (1000 + 800) × 50 = 90,000 fen (evaluate not billed; rows read not billed).
    # m-up: line_f 150k, uplift 75k yuan; drawn 200k yuan all month → 50k yuan above the
    # platform line: 5,000,000 fen × 31 days × 1800 bp / 3,650,000 = 76,438.3 → 76,438 fen;
    # share 20 % → 15,287.6 → 15,287 fen.
    assert (done["isv01"].fee, done["isv01"].share) == (90_000, 15_287)
    # isv02: (500 train + 200 signals released) × 50 = 35,000 fen (the August receipt
    # belongs to August); its merchant's uplift is negative: no share.
    assert (done["isv02"].fee, done["isv02"].share) == (35_000, 0)
    assert (
        fee_a is not None and fee_a.amount.amount == 50_000 and fee_a.credit == "isv:isv01:payable"
    )
    assert evaluate is None


def test_settle_twice_pays_once(sessions: sessionmaker[Session]) -> None:
    """Re-running settlement posts nothing new; clearing later moves the in-flight payout."""
    with sessions() as s, s.begin():
        v, pol = _world(s)
        credit.settle_period(s, JUL, policy_version=v, policy=pol)
        n = len(ledger.transfers_of(s, ledger.isv_payable("isv01")))
        again = credit.settle_period(s, JUL, policy_version=v, policy=pol)
        n_again = len(ledger.transfers_of(s, ledger.isv_payable("isv01")))
        cleared = credit.settle_period(s, JUL, policy_version=v, policy=pol, clear=True)
        payable = ledger.balance(s, ledger.isv_payable("isv01"))
        settled = ledger.balance(s, ledger.isv_settled("isv01"))
        tb = ledger.trial_balance(s)

    assert n == n_again
    assert all(x.newly_instructed == 0 for x in again)
    one = {x.isv: x for x in cleared}["isv01"]
    assert one.instructed == one.cleared == 105_287 and one.newly_cleared == 105_287
    assert payable.amount == 0 and settled.amount == 0
    assert tb.balanced


def test_late_receipt_tops_up_without_double_paying(sessions: sessionmaker[Session]) -> None:
    """A receipt arriving after settlement is paid by a second instruction for the difference."""
    with sessions() as s, s.begin():
        v, pol = _world(s)
        credit.settle_period(s, JUL, policy_version=v, policy=pol)
        receipt(
            s,
            "isv02",
            "train",
            used=10,
            read=10,
            issued_at="2026-07-30T00:00:00.000000Z",
            token="late",
        )
        done = {x.isv: x for x in credit.settle_period(s, JUL, policy_version=v, policy=pol)}

    assert (done["isv02"].fee, done["isv02"].instructed, done["isv02"].newly_instructed) == (
        35_500,
        35_500,
        500,
    )


def test_statement_ties_to_the_book(sessions: sessionmaker[Session]) -> None:
    """The statement lists receipts and loans, and its totals equal the book's."""
    with sessions() as s, s.begin():
        v, pol = _world(s)
        credit.settle_period(s, JUL, policy_version=v, policy=pol)
        doc = credit.statement(s, "isv01", JUL, pol)
        text = credit.statement_csv(doc)

    assert doc["ties_to_book"] is True
    assert doc["totals"] == {"fee": 90_000, "share": 15_287, "total": 105_287}
    assert [r["merchants_used"] for r in doc["receipts"]] == [1000, 800]
    assert [(x["loan"], x["uplift_interest"], x["share"]) for x in doc["loans"]] == [
        ("L-up", 76_438, 15_287)
    ]
    assert text.splitlines()[-1] == "isv01,2026-07,total,,,,90000,15287"
