"""Share claw-backs on written-off interest and recoveries after a write-off, by hand (both DBs).

The loans run at 36.5 % (interest = balance / 1,000 a day). Merchant ``m-up`` has a
150,000-yuan platform line and a 75,000-yuan uplift attributed to ``isv01``; a loan of
20,000,000 fen is 5,000,000 fen above the platform line, so its uplift interest is
5,000 fen a day and the ISV's 20 % share 1,000 fen a day.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

import ledger
from gateway import credit
from gateway.credit._models import LoanEventRow, SettlementRow

from ._helpers import (
    decide,
    event,
    import_and_settle_by_month,
    import_rows,
    merchant,
    receipt,
    setup_book,
)

JAN, FEB, MAR, APR = (credit.parse_period(p) for p in ("2026-01", "2026-02", "2026-03", "2026-04"))
LOAN = 20_000_000


def _world(s: Session) -> tuple[int, credit.CreditPolicy]:
    v, pol = setup_book(s)
    decide(
        s,
        v,
        pol,
        [merchant("m-up", 600_000_00, 0.06, 0.03), merchant("m2", 600_000_00, 0.06, None)],
    )
    import_rows(
        s, [event("d1", "L1", "drawdown", "2026-01-01", LOAN, merchant="m-up", rate_bp=3650)]
    )
    return v, pol


def _n_transfers(s: Session) -> int:
    table = ledger.metadata.tables["book_transfers"]
    return int(s.execute(select(func.count()).select_from(table)).scalar_one())


# -- pure arithmetic ------------------------------------------------------------------------


def test_written_off_by_month_is_oldest_interest_paid_first() -> None:
    """Jan 620,000; Feb pays 310,000 of it and the write-off takes the rest plus Feb's 180,000."""
    rows = [("2026-01", 620_000, 0, 0), ("2026-02", 180_000, 310_000, 490_000)]

    assert credit.written_off_by_month(rows) == {
        "2026-02": {"2026-01": 310_000, "2026-02": 180_000}
    }


def test_clawback_split_by_hand() -> None:
    """Booked 10/7/3 on 100 fen of uplift interest out of 200, of which 150 written off.

    earned = ⌊100 × 50 / 200⌋ = 25; kept = ⌊25 × 20 %⌋ = 5; claw = 20 − 5 = 15, split by
    what was booked: quotas 7.5, 5.25, 2.25 → 7, 5, 2 and the spare fen to the largest
    remainder (a): 8, 5, 2. Each ISV keeps 2, 2, 1.
    """
    booked = {"a": 10, "b": 7, "c": 3}

    assert credit.clawback_split(
        booked, rate_bp=2000, uplift_interest=100, interest=200, written_off=150
    ) == (25, 5, {"a": 8, "b": 5, "c": 2})
    # Written off whole: everything booked comes back, to the fen.
    assert credit.clawback_split(
        booked, rate_bp=2000, uplift_interest=100, interest=200, written_off=200
    ) == (0, 0, booked)
    # Nothing written off: nothing comes back.
    assert credit.clawback_split(
        booked, rate_bp=2000, uplift_interest=100, interest=200, written_off=0
    ) == (100, 20, {})


@settings(max_examples=300, deadline=None)
@given(
    weights=st.dictionaries(st.sampled_from("abcdef"), st.integers(1, 50), min_size=1),
    uplift=st.integers(1, 10**9),
    extra=st.integers(0, 10**9),
    rate=st.integers(0, 10_000),
    frac=st.floats(0, 1),
)
def test_clawback_never_exceeds_what_was_booked(
    weights: dict[str, int], uplift: int, extra: int, rate: int, frac: float
) -> None:
    """0 ≤ claw ≤ booked per ISV; what ISVs keep is exactly the share of the earned part."""
    interest = uplift + extra
    written_off = int(interest * frac)
    pool = ledger.Money(uplift * rate // 10_000, "CNY")
    booked = {k: m.amount for k, m in ledger.split_by(pool, weights).items() if m.amount > 0}
    if not booked:
        return
    earned, kept, claw = credit.clawback_split(
        booked, rate_bp=rate, uplift_interest=uplift, interest=interest, written_off=written_off
    )

    assert all(0 < claw[k] <= booked[k] for k in claw)
    assert sum(booked.values()) - sum(claw.values()) == kept == earned * rate // 10_000
    assert earned == uplift * (interest - written_off) // interest
    if written_off == interest:
        assert claw == booked


# -- claw-back in the book --------------------------------------------------------------------


def test_clawback_of_a_paid_share_is_netted_and_carried_forward(
    sessions: sessionmaker[Session],
) -> None:
    """By hand, to the fen.

    Jan: 31 days × 20,000 = 620,000 interest; uplift 155,000; share 31,000, paid (cleared).
    Feb: written off whole on the 10th: 9 days → 180,000 interest, uplift 45,000, share
    9,000; the write-off takes 620,000 + 180,000 = 800,000 of interest. Both months'
    shares come back: 31,000 + 9,000 = 40,000. Feb owes isv01 9,000 → netted, payout 0,
    31,000 carried forward. Mar: a 50,000 fee (1,000 merchants × 50) nets the 31,000 and
    pays 19,000. isv01 was paid 50,000 in all = its fees; its net share is 0.
    """
    with sessions() as s, s.begin():
        v, pol = _world(s)
        cash0 = ledger.balance(s, ledger.PLATFORM_CASH).amount
        jan = {
            x.isv: x for x in credit.settle_period(s, JAN, policy_version=v, policy=pol, clear=True)
        }
        import_rows(s, [event("w1", "L1", "write_off", "2026-02-10", LOAN)])
        feb = {
            x.isv: x for x in credit.settle_period(s, FEB, policy_version=v, policy=pol, clear=True)
        }
        n_feb = _n_transfers(s)
        again = credit.settle_period(s, FEB, policy_version=v, policy=pol, clear=True)
        n_again = _n_transfers(s)
        doc_feb = credit.statement(s, "isv01", FEB, pol)
        csv_feb = credit.statement_csv(doc_feb)
        claw_jan = ledger.get_transfer(s, "share-clawback:L1:2026-01:isv01")
        owed_after_feb = ledger.balance(s, credit.clawback_receivable("isv01")).amount
        receipt(
            s, "isv01", "train", used=1000, read=1000, issued_at="2026-03-05T00:00:00.000000Z",
            token="tok-mar",
        )  # fmt: skip
        mar = {
            x.isv: x for x in credit.settle_period(s, MAR, policy_version=v, policy=pol, clear=True)
        }
        credit.settle_period(s, MAR, policy_version=v, policy=pol, clear=True)
        doc_mar = credit.statement(s, "isv01", MAR, pol)
        row_feb = s.get(SettlementRow, ("isv01", "2026-02"))
        end = {
            a: ledger.balance(s, a).amount
            for a in (
                credit.clawback_receivable("isv01"),
                ledger.isv_payable("isv01"),
                ledger.isv_settled("isv01"),
                ledger.INTEREST_SHARE_EXPENSE,
                credit.CREDIT_LOSS,
            )
        }
        paid = sum(
            t.amount.amount
            for t in ledger.transfers_of(s, ledger.isv_settled("isv01"))
            if t.id.startswith("clear:")
        )
        cash = ledger.balance(s, ledger.PLATFORM_CASH).amount
        tb = ledger.trial_balance(s)
        book = ledger.reconcile_book(s)

    assert (jan["isv01"].share, jan["isv01"].cleared) == (31_000, 31_000)
    assert (feb["isv01"].share, feb["isv01"].clawback, feb["isv01"].netted) == (
        9_000,
        40_000,
        9_000,
    )
    assert (feb["isv01"].instructed, feb["isv01"].newly_instructed) == (0, 0)
    assert n_feb == n_again and all(x.newly_instructed == 0 for x in again)
    assert claw_jan is not None and claw_jan.amount.amount == 31_000
    assert (claw_jan.debit, claw_jan.credit) == (
        credit.clawback_receivable("isv01"),
        ledger.INTEREST_SHARE_EXPENSE,
    )
    assert claw_jan.metadata["write_off_period"] == "2026-02"
    assert owed_after_feb == 31_000
    assert [(x["loan"], x["share_period"], x["clawback"]) for x in doc_feb["clawbacks"]] == [
        ("L1", "2026-01", 31_000),
        ("L1", "2026-02", 9_000),
    ]
    assert doc_feb["clawbacks"][0]["uplift_written_off"] == 155_000
    assert doc_feb["net"] == {
        "fee": 0,
        "share": 9_000,
        "clawback": 40_000,
        "net": -31_000,
        "carried_in": 0,
        "netted": 9_000,
        "payout": 0,
        "carried_forward": 31_000,
    }
    assert doc_feb["ties_to_book"] is True
    assert csv_feb.splitlines()[-9:] == [
        "isv01,2026-02,clawback,L1:2026-01,,155000,,-31000",
        "isv01,2026-02,clawback,L1:2026-02,,45000,,-9000",
        "isv01,2026-02,total,,,,0,9000",
        "isv01,2026-02,clawback-total,,,,,-40000",
        "isv01,2026-02,net,,,,,-31000",
        "isv01,2026-02,carried-in,,,,,0",
        "isv01,2026-02,netted,,,,,-9000",
        "isv01,2026-02,payout,,,,,0",
        "isv01,2026-02,carried-forward,,,,,-31000",
    ]
    assert row_feb is not None and (row_feb.clawback, row_feb.netted) == (40_000, 9_000)
    assert (mar["isv01"].fee, mar["isv01"].netted, mar["isv01"].cleared) == (50_000, 31_000, 19_000)
    assert doc_mar["net"]["carried_in"] == 31_000 and doc_mar["net"]["carried_forward"] == 0
    assert doc_mar["ties_to_book"] is True and doc_mar["clawbacks"] == []
    assert end == {
        credit.clawback_receivable("isv01"): 0,
        ledger.isv_payable("isv01"): 0,
        ledger.isv_settled("isv01"): 0,
        ledger.INTEREST_SHARE_EXPENSE: 0,  # no share on interest never earned
        credit.CREDIT_LOSS: LOAN + 800_000,
    }
    assert paid == 50_000
    assert cash0 - cash == LOAN + 50_000
    assert tb.balanced and book.ok


def test_partly_paid_interest_keeps_the_share_of_what_was_earned(
    sessions: sessionmaker[Session],
) -> None:
    """By hand: Feb 5 repays 300,001 (all Jan interest, oldest first), Feb 10 writes off.

    Jan: 620,000 interest, 300,001 paid, 319,999 written off; earned uplift =
    ⌊155,000 × 300,001 / 620,000⌋ = 75,000; kept = ⌊75,000 × 20 %⌋ = 15,000; claw-back
    31,000 − 15,000 = 16,000. Feb (9 days, written off whole): 9,000 back. The ISV keeps
    15,000 = 20 % of the 75,000 of uplift interest the merchant paid. Settled without
    clearing, in order: Feb owes 9,000, all netted, 16,000 carried forward.
    """
    with sessions() as s, s.begin():
        v, pol = _world(s)
        credit.settle_period(s, JAN, policy_version=v, policy=pol)
        import_rows(
            s,
            [
                event("r1", "L1", "repayment", "2026-02-05", 300_001),
                event("w1", "L1", "write_off", "2026-02-10", LOAN),
            ],
        )
        feb = {x.isv: x for x in credit.settle_period(s, FEB, policy_version=v, policy=pol)}
        lines = credit.clawback_lines(s, FEB)
        wo = ledger.get_transfer(s, "interest-write-off:L1:2026-02")
        share_expense = ledger.balance(s, ledger.INTEREST_SHARE_EXPENSE).amount
        owed = ledger.balance(s, credit.clawback_receivable("isv01")).amount
        tb = ledger.trial_balance(s)

    assert wo is not None and wo.amount.amount == 319_999 + 180_000
    by_p = {c.share_period: c for c in lines}
    assert (by_p["2026-01"].interest_written_off, by_p["2026-01"].uplift_earned) == (
        319_999,
        75_000,
    )
    assert (by_p["2026-01"].pool_kept, by_p["2026-01"].clawback) == (15_000, {"isv01": 16_000})
    assert by_p["2026-02"].clawback == {"isv01": 9_000}
    assert (feb["isv01"].clawback, feb["isv01"].netted, feb["isv01"].instructed) == (
        25_000,
        9_000,
        0,
    )
    assert share_expense == 15_000 and owed == 16_000
    assert tb.balanced


def test_clawback_waits_for_the_share_it_reverses(sessions: sessionmaker[Session]) -> None:
    """Feb settled before Jan: Jan's share is not booked yet, so its claw-back comes with the
    first settlement of a month ≥ Feb after it is (here Feb's re-run); never twice."""
    with sessions() as s, s.begin():
        v, pol = _world(s)
        credit.close_period(s, JAN, currency="CNY", policy_version=v)
        import_rows(s, [event("w1", "L1", "write_off", "2026-02-10", LOAN)])
        feb = {x.isv: x for x in credit.settle_period(s, FEB, policy_version=v, policy=pol)}
        jan = {x.isv: x for x in credit.settle_period(s, JAN, policy_version=v, policy=pol)}
        before = ledger.get_transfer(s, "share-clawback:L1:2026-01:isv01")
        feb2 = {x.isv: x for x in credit.settle_period(s, FEB, policy_version=v, policy=pol)}
        after = ledger.get_transfer(s, "share-clawback:L1:2026-01:isv01")
        n = _n_transfers(s)
        credit.settle_period(s, FEB, policy_version=v, policy=pol)
        credit.settle_period(s, MAR, policy_version=v, policy=pol)
        n_again = _n_transfers(s)
        share_expense = ledger.balance(s, ledger.INTEREST_SHARE_EXPENSE).amount
        tb = ledger.trial_balance(s)

    assert (feb["isv01"].share, feb["isv01"].clawback) == (9_000, 9_000)
    assert jan["isv01"].instructed == 31_000 and before is None
    assert after is not None and after.metadata["period"] == "2026-02"
    assert (feb2["isv01"].clawback, feb2["isv01"].netted) == (40_000, 9_000)
    assert n == n_again and share_expense == 0 and tb.balanced


# -- recoveries -------------------------------------------------------------------------------


def test_recovery_principal_first_and_no_share_earned_back(sessions: sessionmaker[Session]) -> None:
    """Written off: 20,000,000 principal + 800,000 interest. Mar recovers 20,500,000
    (20,000,000 principal, 500,000 interest), Apr 300,000 (interest): exactly all of it; one
    fen more is refused. The recovered interest earns isv01 nothing back."""
    with sessions() as s, s.begin():
        v, pol = _world(s)
        credit.settle_period(s, JAN, policy_version=v, policy=pol, clear=True)
        import_rows(s, [event("w1", "L1", "write_off", "2026-02-10", LOAN)])
        credit.settle_period(s, FEB, policy_version=v, policy=pol, clear=True)
        cash0 = ledger.balance(s, ledger.PLATFORM_CASH).amount
        import_rows(
            s,
            [
                event("rc1", "L1", "recovery", "2026-03-03", 20_000_000),
                event("rc2", "L1", "recovery", "2026-03-20", 500_000),
            ],
        )
        credit.settle_period(s, MAR, policy_version=v, policy=pol, clear=True)
        mar = ledger.get_transfer(s, "loans:2026-03:recovery")
        import_rows(s, [event("rc3", "L1", "recovery", "2026-04-02", 300_000)])
        credit.settle_period(s, APR, policy_version=v, policy=pol, clear=True)
        credit.settle_period(s, APR, policy_version=v, policy=pol, clear=True)
        apr = ledger.get_transfer(s, "loans:2026-04:recovery")
        shares = [
            t.id for t in ledger.transfers_of(s, ledger.INTEREST_SHARE_EXPENSE)
            if t.id.startswith("share:")
        ]  # fmt: skip
        end = {
            a: ledger.balance(s, a).amount
            for a in (
                credit.CREDIT_LOSS,
                credit.CREDIT_LOSS_RECOVERY,
                ledger.LOANS_RECEIVABLE,
                credit.INTEREST_RECEIVABLE,
                ledger.INTEREST_SHARE_EXPENSE,
                credit.clawback_receivable("isv01"),
            )
        }
        cash = ledger.balance(s, ledger.PLATFORM_CASH).amount
        tb = ledger.trial_balance(s)
        book = ledger.reconcile_book(s)

    assert mar is not None and mar.amount.amount == 20_500_000
    assert (mar.debit, mar.credit) == (ledger.PLATFORM_CASH, credit.CREDIT_LOSS_RECOVERY)
    assert (mar.metadata["principal"], mar.metadata["interest"]) == (20_000_000, 500_000)
    assert apr is not None and (apr.metadata["principal"], apr.metadata["interest"]) == (0, 300_000)
    assert sorted(shares) == ["share:L1:2026-01:isv01", "share:L1:2026-02:isv01"]
    assert end == {
        credit.CREDIT_LOSS: 20_800_000,
        credit.CREDIT_LOSS_RECOVERY: 20_800_000,
        ledger.LOANS_RECEIVABLE: 0,
        credit.INTEREST_RECEIVABLE: 0,
        ledger.INTEREST_SHARE_EXPENSE: 0,
        # 31,000 of Jan's paid share still owed: no fee or share since to net it against.
        credit.clawback_receivable("isv01"): 31_000,
    }
    assert cash - cash0 == 20_800_000
    assert tb.balanced and book.ok

    with pytest.raises(credit.ImportRefused) as info, sessions() as s, s.begin():
        import_rows(s, [event("rc4", "L1", "recovery", "2026-05-02", 1)])
    assert (info.value.code, info.value.line) == ("RECOVERY_EXCEEDS_WRITE_OFF", 1)


def _events(s: Session) -> int:
    return int(s.execute(select(func.count()).select_from(LoanEventRow)).scalar_one())


@pytest.mark.parametrize(
    ("rows", "code", "line"),
    [
        # L2 (m2) was never written off.
        (
            [
                event("ok", "L1", "recovery", "2026-03-02", 1),
                event("x", "L2", "recovery", "2026-03-02", 5, merchant="m2"),
            ],
            "NOT_WRITTEN_OFF",
            2,
        ),
        # One fen above principal + interest written off.
        (
            [event("x", "L1", "recovery", "2026-03-02", LOAN + 800_001)],
            "RECOVERY_EXCEEDS_WRITE_OFF",
            1,
        ),
        # Two rows that are each fine but together too much.
        (
            [
                event("a", "L1", "recovery", "2026-03-02", LOAN),
                event("b", "L1", "recovery", "2026-03-09", 800_001),
            ],
            "RECOVERY_EXCEEDS_WRITE_OFF",
            2,
        ),
        # February is closed.
        ([event("x", "L1", "recovery", "2026-02-20", 5)], "PERIOD_CLOSED", 1),
        # A recovery needs an amount.
        ([event("x", "L1", "recovery", "2026-03-02", 0)], "BAD_ROW", 1),
    ],
)
def test_bad_recoveries_are_refused_and_nothing_kept(
    sessions: sessionmaker[Session], rows: list[dict[str, object]], code: str, line: int
) -> None:
    """Each bad file is refused whole with its code and line; the database is unchanged."""
    with sessions() as s, s.begin():
        v, _ = _world(s)
        import_rows(s, [event("w1", "L1", "write_off", "2026-02-10", LOAN)])
        credit.close_period(s, JAN, currency="CNY", policy_version=v)
        credit.close_period(s, FEB, currency="CNY", policy_version=v)
        before = (_events(s), _n_transfers(s))

    with pytest.raises(credit.ImportRefused) as info, sessions() as s, s.begin():
        import_rows(s, rows)  # type: ignore[arg-type]

    with sessions() as s:
        after = (_events(s), _n_transfers(s))
    assert (info.value.code, info.value.line) == (code, line)
    assert after == before


def test_recovery_before_its_write_off_and_above_principal_in_the_same_month(
    sessions: sessionmaker[Session],
) -> None:
    """In date order a recovery must follow the write-off; in the write-off's own open month
    only the principal is recoverable (the interest written off is known at close)."""
    with sessions() as s, s.begin():
        _world(s)
    for rows, code in (
        (
            [
                event("w1", "L1", "write_off", "2026-02-10", LOAN),
                event("x", "L1", "recovery", "2026-02-09", 5),
            ],
            "NOT_WRITTEN_OFF",
        ),
        (
            [
                event("w1", "L1", "write_off", "2026-02-10", LOAN),
                event("x", "L1", "recovery", "2026-02-11", LOAN + 1),
            ],
            "RECOVERY_EXCEEDS_WRITE_OFF",
        ),
    ):
        with pytest.raises(credit.ImportRefused) as info, sessions() as s, s.begin():
            import_rows(s, rows)
        assert (info.value.code, info.value.line) == (code, 2)
    with sessions() as s, s.begin():
        ok = import_rows(
            s,
            [
                event("w1", "L1", "write_off", "2026-02-10", LOAN),
                event("x", "L1", "recovery", "2026-02-11", LOAN),
            ],
        )
    assert ok.added == 2


def test_recovery_leaves_the_drawn_balance_alone(sessions: sessionmaker[Session]) -> None:
    """A recovery is not a repayment: a partial write-off's remaining principal still accrues."""
    with sessions() as s, s.begin():
        v, _ = _world(s)
        import_rows(
            s,
            [
                event("w1", "L1", "write_off", "2026-01-11", 10_000_000),
                event("rc", "L1", "recovery", "2026-01-21", 1_000_000),
            ],
        )
        close = credit.close_period(s, JAN, currency="CNY", policy_version=v)
        drawn = ledger.balance(s, ledger.LOANS_RECEIVABLE).amount

    # 10 days × 20,000,000 + 21 days × 10,000,000 = 410,000,000 balance-days → 410,000.
    assert close.interest == 410_000
    assert drawn == 10_000_000


def test_recovery_entry_in_the_csv_format(sessions: sessionmaker[Session]) -> None:
    """The CSV import takes the new kind like the others (format otherwise unchanged)."""
    data = (
        b"key,loan_id,merchant,kind,date,amount,currency\n"
        b"w1,L1,,write_off,2026-02-10,20000000,CNY\n"
        b"rc,L1,,recovery,2026-02-12,5,CNY\n"
    )
    with sessions() as s, s.begin():
        _world(s)
        done = credit.import_bytes(
            s, data, fmt="csv", source="x.csv", default_rate_bp=1800, currency="CNY"
        )
        kinds = sorted(s.execute(select(LoanEventRow.kind)).scalars())

    assert done.added == 2 and kinds == ["drawdown", "recovery", "write_off"]
    assert hashlib.sha256(data).hexdigest() == done.import_id


def test_simulated_recoveries_import_and_settle(sessions: sessionmaker[Session]) -> None:
    """The simulator's recoveries (opt-in) pass the import's checks and reach the book; off, it
    writes exactly the rows it wrote before."""
    ids = [f"s{i}" for i in range(12)]
    start = credit.parse_period("2026-01")
    with sessions() as s, s.begin():
        v, pol = setup_book(s)
        lines = decide(s, v, pol, [merchant(m, 600_000_00, 0.06, 0.03) for m in ids])
        limits = [d.line_with for d in lines]
        sim = credit.simulate_loans(
            ids, limits, [1] * 12, start=start, months=7, seed=0, recovery_bp=1000
        )
        plain = credit.simulate_loans(ids, limits, [1] * 12, start=start, months=7, seed=0)
        # Month by month, as a lending system sends it: the simulator writes off the book's
        # whole principal, which a repayment's interest part raises only once closed.
        import_and_settle_by_month(s, sim.events, start, 7, v, pol)
        recovered = ledger.balance(s, credit.CREDIT_LOSS_RECOVERY).amount
        tb = ledger.trial_balance(s)
        book = ledger.reconcile_book(s)

    rec = [e for e in sim.events if e["kind"] == "recovery"]
    assert len(rec) == 3 and recovered == sum(e["amount"] for e in rec) > 0
    assert plain.events == [e for e in sim.events if e["kind"] != "recovery"]
    assert tb.balanced and book.ok
