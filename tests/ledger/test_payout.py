"""Largest-remainder split, the interest-share rule and the standard chart of accounts."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ledger import (
    DATA_USAGE_FEE_EXPENSE,
    INTEREST_SHARE_EXPENSE,
    PLATFORM_CASH,
    AccountKind,
    AccountRejected,
    Money,
    SplitError,
    interest_share,
    isv_payable,
    isv_settled,
    open_account,
    open_isv_accounts,
    open_standard_chart,
    split,
    split_by,
)
from ledger._book_models import AccountRow


def _cny(values: list[int]) -> list[Money]:
    return [Money(v, "CNY") for v in values]


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [
        (100, [1, 1, 1], [34, 33, 33]),
        (100, [1, 2], [33, 67]),
        (10, [3, 3, 3, 1], [3, 3, 3, 1]),
        (1, [1, 1], [1, 0]),
        (5, [0, 1, 0], [0, 5, 0]),
        (-100, [1, 1, 1], [-34, -33, -33]),
        (0, [2, 5], [0, 0]),
        (7, [1, 1, 1, 1], [2, 2, 2, 1]),
    ],
)
def test_split_worked_cases(total: int, weights: list[int], expected: list[int]) -> None:
    """Hand-checked splits: floors plus one fen to the largest remainders, ties to the earlier."""
    assert split(Money(total, "CNY"), weights) == _cny(expected)


@pytest.mark.parametrize("weights", [[], [0, 0], [1, -1], [1.5, 1], [True, 1], ["1"]])
def test_split_refuses_bad_weights(weights: list[Any]) -> None:
    """Empty, all-zero, negative, float, bool or string weights raise INVALID_WEIGHTS."""
    with pytest.raises(SplitError) as info:
        split(Money(100, "CNY"), weights)
    assert info.value.code == "INVALID_WEIGHTS"


@settings(max_examples=200)
@given(
    st.integers(-(10**12), 10**12),
    st.lists(st.integers(0, 10**6), min_size=1, max_size=20).filter(lambda w: sum(w) > 0),
)
def test_split_sums_to_total_within_a_fen(total: int, weights: list[int]) -> None:
    """Any split adds back to the total, and each part is within one fen of its exact quota."""
    parts = split(Money(total, "CNY"), weights)

    assert sum(p.amount for p in parts) == total
    for part, w in zip(parts, weights, strict=True):
        assert abs(Fraction(part.amount) - Fraction(total * w, sum(weights))) < 1
        if w == 0:
            assert part.amount == 0


def test_split_by_keeps_keys() -> None:
    """split_by returns a mapping in the weights' key order."""
    parts = split_by(Money(1000, "CNY"), {"acme": 1, "beta": 2, "gamma": 0})

    assert parts == {"acme": Money(333, "CNY"), "beta": Money(667, "CNY"), "gamma": Money(0, "CNY")}


def test_interest_share_pool_and_split() -> None:
    """15 % of 10,001 fen is 1,500 fen (floor), shared 2:1 and booked to each ISV's payable."""
    requests = interest_share(
        "share:loan9:2026-11", Money(10_001, "CNY"), 1500, {"acme": 2, "beta": 1}, {"loan": "9"}
    )

    assert [(r.id, r.debit, r.credit, r.amount) for r in requests] == [
        (
            "share:loan9:2026-11:acme",
            INTEREST_SHARE_EXPENSE,
            "isv:acme:payable",
            Money(1000, "CNY"),
        ),
        ("share:loan9:2026-11:beta", INTEREST_SHARE_EXPENSE, "isv:beta:payable", Money(500, "CNY")),
    ]
    assert requests[0].metadata == {"loan": "9", "pool": 1500, "rate_bp": 1500}


def test_interest_share_skips_zero_parts() -> None:
    """An ISV whose share rounds to zero fen gets no transfer."""
    requests = interest_share("s", Money(10, "CNY"), 1000, {"acme": 1, "beta": 1})

    assert [(r.credit, r.amount.amount) for r in requests] == [("isv:acme:payable", 1)]


@pytest.mark.parametrize("rate", [-1, 10_001, 0.15])
def test_interest_share_refuses_bad_rate(rate: Any) -> None:
    """A rate outside 0..10000 basis points, or a float rate, is refused."""
    with pytest.raises(SplitError) as info:
        interest_share("s", Money(100, "CNY"), rate, {"acme": 1})
    assert info.value.code == "INVALID_WEIGHTS"


def test_standard_chart_is_idempotent(sessions: sessionmaker[Session]) -> None:
    """Opening the chart twice opens each account once, with the documented kinds."""
    with sessions() as s, s.begin():
        first = open_standard_chart(s, "CNY")
        open_isv_accounts(s, "acme", "CNY")
    with sessions() as s, s.begin():
        second = open_standard_chart(s, "CNY")
        payable, settled = open_isv_accounts(s, "acme", "CNY")

    assert first == second
    kinds = {a.code: a.kind for a in second}
    assert kinds[PLATFORM_CASH] is AccountKind.ASSET
    assert kinds[DATA_USAGE_FEE_EXPENSE] is AccountKind.EXPENSE
    assert (payable.code, payable.kind, payable.allow_negative) == (
        isv_payable("acme"),
        AccountKind.LIABILITY,
        False,
    )
    assert settled.code == isv_settled("acme")
    with sessions() as s:
        assert s.execute(select(func.count()).select_from(AccountRow)).scalar_one() == 8


def test_chart_refuses_conflicting_account(sessions: sessionmaker[Session]) -> None:
    """An existing account with another currency makes the chart refuse DUPLICATE_ACCOUNT."""
    with sessions() as s, s.begin():
        open_account(s, PLATFORM_CASH, "Cash", AccountKind.ASSET, "USD")

    with sessions() as s, s.begin(), pytest.raises(AccountRejected) as info:
        open_standard_chart(s, "CNY")

    assert info.value.code == "DUPLICATE_ACCOUNT"
