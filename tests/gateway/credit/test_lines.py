"""Line decisions: uplift, attribution, off-platform merchants, stored inputs, explanation."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway import credit
from ledger import parse_canonical

from .._entries import entries_of_kind
from ._helpers import decide, merchant, setup_book


def test_uplift_up_down_and_none(sessions: sessionmaker[Session]) -> None:
    """ISV data raises a good merchant's line, lowers a risky one's, and leaves a third alone."""
    with sessions() as s, s.begin():
        v, pol = setup_book(s)
        good, risky, same = decide(
            s,
            v,
            pol,
            [
                merchant("m-good", 600_000_00, 0.06, 0.03),
                merchant("m-risky", 600_000_00, 0.03, 0.09),
                merchant("m-none", 600_000_00, 0.06, None),
            ],
        )

    # 300k yuan × (1 − PD/12 %): 0.06 → 150k, 0.03 → 225k, 0.09 → 75k.
    assert (good.line_f, good.line_with, good.uplift) == (15_000_000, 22_500_000, 7_500_000)
    assert good.attribution == {"isv01": 7_500_000}
    assert (risky.line_f, risky.line_with, risky.uplift) == (22_500_000, 7_500_000, -15_000_000)
    assert risky.attribution == {}
    assert (same.line_f, same.line_with, same.uplift, same.attribution) == (
        15_000_000,
        15_000_000,
        0,
        {},
    )


def test_off_platform_line_is_all_uplift(sessions: sessionmaker[Session]) -> None:
    """A merchant without platform sales has no line without ISV data; its whole line is uplift."""
    with sessions() as s, s.begin():
        v, pol = setup_book(s)
        (d,) = decide(s, v, pol, [merchant("m-off", 120_000_00, None, 0.06)])

    assert (d.basis, d.line_f, d.line_with, d.uplift) == ("off-platform", 0, 3_000_000, 3_000_000)
    assert d.attribution == {"isv01": 3_000_000}


def test_multi_isv_attribution_by_marginal_contribution() -> None:
    """Each ISV's weight is its stand-alone line above the platform line; none positive → equal."""
    assert credit.attribute(500, 1000, {"a": 1400, "b": 1100, "c": 900}) == {"a": 400, "b": 100}
    assert credit.attribute(500, 1000, {"a": 1000, "b": 900}) == {"a": 1, "b": 1}
    assert credit.attribute(0, 1000, {"a": 1400}) == {}
    assert credit.attribute(-10, 1000, {"a": 1400}) == {}


def test_multi_isv_decision_splits_the_share(sessions: sessionmaker[Session]) -> None:
    """Two ISVs: weights come from each ISV's own PD, and the ledger split follows them."""
    with sessions() as s, s.begin():
        v, pol = setup_book(s)
        (d,) = decide(
            s,
            v,
            pol,
            [
                merchant("m-two", 600_000_00, 0.06, 0.03, {"isv01": 0.04, "isv02": 0.05}),
            ],
        )

    # Lines: f 150k; together 225k; isv01 alone h = floor(1e6 × (1 − 0.04/0.12)) = 666,666 ppm
    # → 19,999,980 fen → 19,999,900 (whole yuan), weight 4,999,900; isv02 alone 583,333 ppm
    # → 17,499,900, weight 2,499,900.
    assert d.uplift == 7_500_000
    assert d.attribution == {"isv01": 4_999_900, "isv02": 2_499_900}
    parts = credit.share_requests(
        [credit.ShareLine("L", "m-two", d.uplift, 1000, dict(d.attribution))],
        period=credit.parse_period("2026-07"),
        currency="CNY",
        share_bp=2000,
    )
    # pool = 1000 × 20 % = 200 fen; quotas 133.334… and 66.665…: floors 133 + 66, the
    # spare fen to the larger remainder (isv02).
    assert {p.credit: p.amount.amount for p in parts} == {
        "isv:isv01:payable": 133,
        "isv:isv02:payable": 67,
    }


def test_decision_is_logged_with_its_inputs(sessions: sessionmaker[Session]) -> None:
    """The ledger entry names the policy version, models, ISVs, consents and PDs."""
    with sessions() as s, s.begin():
        v, pol = setup_book(s)
        decide(s, v, pol, [merchant("m-log", 600_000_00, 0.06, 0.03)])
        (leaf,) = entries_of_kind(s, credit.LINE_ENTRY)

    body = parse_canonical(leaf)["body"]
    assert body["merchant_id"] == "m-log" and body["policy_version"] == v
    assert body["inputs"]["models"] == {"f": "f-test", "g": "g-test", "combiner": "c-test"}
    assert body["inputs"]["consents"] == {"isv01": "c-m-log-isv01"}
    assert (body["pd_f"], body["pd_with"]) == ("0.060000", "0.030000")


def test_explain_reads_like_a_sentence(sessions: sessionmaker[Session]) -> None:
    """explain names both PDs, both lines, the ISV and consent, and the uplift."""
    with sessions() as s, s.begin():
        v, pol = setup_book(s)
        decide(s, v, pol, [merchant("m-x", 600_000_00, 0.06, 0.03)])
        text = credit.explain(s, "m-x")
        with pytest.raises(credit.NotFound):
            credit.explain(s, "nobody")

    assert "PD 6.00 % -> line 150,000 yuan" in text
    assert "isv01 (consent c-m-x-isv01)" in text
    assert "PD 3.00 % -> line 225,000 yuan" in text
    assert "Uplift +75,000 yuan" in text
