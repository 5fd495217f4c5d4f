"""Monitoring rules on crafted merchants: each rule fires on its pattern and acts, once."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway import credit
from gateway.credit._models import LoanEventRow, LoanRow
from ledger import parse_canonical

from .._entries import entries_of_kind
from ._helpers import decide, event, import_rows, merchant, setup_book

THEN = {
    "gross_margin": 0.40,
    "monthly_revenue": 1_000_000,
    "shipping_cost_per_order": 1000,
    "orders_shipped": 300,
}
AS_OF = date(2026, 12, 31)


def _book(s: Session) -> tuple[int, credit.CreditPolicy]:
    v, pol = setup_book(s)
    names = ["fake", "margin", "pd", "turnover", "late", "fine", "noconsent"]
    decide(s, v, pol, [merchant(f"m-{n}", 600_000_00, 0.06, 0.03) for n in names])
    rows = [
        event(f"d-{n}", f"L-{n}", "drawdown", "2026-12-01", 10_000_000, merchant=f"m-{n}")
        for n in names
        if n != "late"
    ]
    # Drawn in July, never repaid: 183 days out, 93 past a 90-day term.
    rows.append(event("d-late", "L-late", "drawdown", "2026-07-01", 10_000_000, merchant="m-late"))
    import_rows(s, rows)
    return v, pol


OBS = {
    "m-fake": credit.Observation(
        merchant_id="m-fake",
        erp_then=THEN,
        erp_now={**THEN, "shipping_cost_per_order": 600, "orders_shipped": 420},
    ),
    "m-margin": credit.Observation(
        merchant_id="m-margin", erp_then=THEN, erp_now={**THEN, "gross_margin": 0.25}
    ),
    "m-pd": credit.Observation(merchant_id="m-pd", pd_now=0.10),
    "m-turnover": credit.Observation(
        merchant_id="m-turnover", erp_then=THEN, erp_now={**THEN, "monthly_revenue": 500_000}
    ),
    "m-late": credit.Observation(merchant_id="m-late", payment_balance=3_000_000),
    "m-fine": credit.Observation(merchant_id="m-fine", pd_now=0.04, erp_then=THEN, erp_now=THEN),
    "m-noconsent": credit.Observation(
        merchant_id="m-noconsent", pd_now=0.5, erp_then=THEN, erp_now={**THEN, "gross_margin": 0.0}
    ),
}
CONSENTED = {"m-fake", "m-margin", "m-pd", "m-turnover", "m-fine"}


def _pass(s: Session, version: int, pol: credit.CreditPolicy) -> credit.MonitorReport:
    """One pass over :data:`OBS` on 31 December with model ``g-7``."""
    return credit.monitor_pass(
        s,
        policy_version=version,
        rules=pol.monitoring,
        observations=OBS,
        consented=CONSENTED,
        as_of=AS_OF,
        model_version="g-7",
    )


def test_each_rule_fires_on_its_merchant(sessions: sessionmaker[Session]) -> None:
    """fake trade and margin collapse freeze, PD rise and turnover drop reduce, overdue collects."""
    with sessions() as s, s.begin():
        v, pol = _book(s)
        report = _pass(s, v, pol)
        loans = {r.loan_id: r for r in s.execute(select(LoanRow)).scalars()}
        collected = s.get(LoanEventRow, "collect:L-late:2026-12-31")
        alerts = [parse_canonical(x)["body"] for x in entries_of_kind(s, credit.ALERT_ENTRY)]
        actions = [parse_canonical(x)["body"] for x in entries_of_kind(s, credit.ACTION_ENTRY)]

    fired = {(a.merchant_id, a.rule, a.action) for a in report.alerts}
    assert fired == {
        ("m-fake", "fake_trade", "freeze"),
        ("m-margin", "margin_collapse", "freeze"),
        ("m-pd", "pd_rise", "reduce"),
        ("m-turnover", "turnover_drop", "reduce"),
        ("m-late", "overdue", "early_collection"),
    }
    # Frozen: limit down to the drawn balance. Reduced: half of 225k yuan, above the balance.
    assert loans["L-fake"].frozen and loans["L-fake"].line_limit == 10_000_000
    assert loans["L-margin"].frozen
    assert loans["L-pd"].line_limit == 11_250_000 and not loans["L-pd"].frozen
    assert loans["L-turnover"].line_limit == 11_250_000
    assert (
        loans["L-fine"].line_limit == 22_500_000 and loans["L-noconsent"].line_limit == 22_500_000
    )
    assert collected is not None and collected.amount == 3_000_000
    assert {a["rule"] for a in alerts} == {r for _, r, _ in fired}
    assert all(a["model_version"] == "g-7" and a["policy_version"] == v for a in alerts)
    late = next(a for a in actions if a["loan"] == "L-late")
    assert late["before"]["balance"] == 10_000_000 and late["after"]["balance"] == 7_000_000


def test_collection_leaves_what_later_reported_events_owe(
    sessions: sessionmaker[Session],
) -> None:
    """A write-off already reported for January is owed out of the same balance.

    ``L-late`` has 10,000,000 drawn and a 9,000,000 write-off on record for 2027-01-15
    (a replayed history): the collection on 31 December takes 1,000,000, not the 3,000,000
    the payment account holds, so the loan is never paid back twice.
    """
    with sessions() as s, s.begin():
        v, pol = _book(s)
        import_rows(s, [event("w-late", "L-late", "write_off", "2027-01-15", 9_000_000)])
        _pass(s, v, pol)
        collected = s.get(LoanEventRow, "collect:L-late:2026-12-31")

    assert collected is not None and collected.amount == 1_000_000


def test_same_pass_twice_is_a_no_op(sessions: sessionmaker[Session]) -> None:
    """A pass over the same inputs writes no second alert or collection."""
    with sessions() as s, s.begin():
        v, pol = _book(s)
        _pass(s, v, pol)
        n = len(entries_of_kind(s, credit.ALERT_ENTRY))
        again = _pass(s, v, pol)
        n_again = len(entries_of_kind(s, credit.ALERT_ENTRY))

    assert again.already_run and n == n_again


def test_overdue_uses_fifo_repayments(sessions: sessionmaker[Session]) -> None:
    """Repayments settle the oldest drawdown first; the next one's age decides overdue."""
    with sessions() as s, s.begin():
        v, pol = setup_book(s)
        decide(s, v, pol, [merchant("m1", 600_000_00, 0.06, 0.03)])
        import_rows(
            s,
            [
                event("a", "L1", "drawdown", "2026-07-01", 1_000, merchant="m1"),
                event("b", "L1", "drawdown", "2026-09-01", 1_000),
                event("c", "L1", "repayment", "2026-09-15", 1_000),
            ],
        )
        pos = credit.loan_positions(s, date(2026, 12, 31), 90)

    # The July drawdown is repaid; the September one is 121 days old: 31 days past term.
    assert pos == {"L1": (1_000, 31)}


def test_open_loan_cohort_keeps_only_merchants_with_an_open_loan() -> None:
    """The re-scoring job's cohort: the consent cohort narrowed to open-loan merchants."""
    from types import SimpleNamespace

    class Consented:
        def __init__(self) -> None:
            self.asked: list[object] = []

        def entries(self, use: object) -> list[SimpleNamespace]:
            self.asked.append(use)
            return [SimpleNamespace(merchant_id=m) for m in ("m1", "m2", "m3")]

    inner = Consented()
    cohort = credit.OpenLoanCohort(inner, ["m2", "m3", "m9"])

    got = cohort.entries("the use")

    assert [e.merchant_id for e in got] == ["m2", "m3"]  # m9 has no consent: never added
    assert inner.asked == ["the use"]  # the consent check itself is the inner source's
