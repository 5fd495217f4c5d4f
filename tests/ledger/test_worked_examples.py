"""Worked examples: accounting stories from fedgate's business, with every number checked.

The platform lends to merchants. Two ISVs, Acme and Beta, hold the merchants'
ERP data; they are paid a data-usage fee per merchant-round of training and a
share of the extra interest that their data earns (the interest on the
merchant's *uplift*: the credit line with ERP data minus the line without).
All amounts are fen (CNY minor units).
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ledger import (
    DATA_USAGE_FEE_EXPENSE,
    EQUITY,
    INTEREST_INCOME,
    INTEREST_SHARE_EXPENSE,
    LOANS_RECEIVABLE,
    PLATFORM_CASH,
    AccountKind,
    Money,
    TransferRejected,
    TransferRequest,
    balance,
    data_usage_fee,
    interest_share,
    isv_payable,
    isv_settled,
    open_isv_accounts,
    open_standard_chart,
    post_linked,
    post_transfer,
    settlement_cleared,
    settlement_instructed,
    split,
    trial_balance,
)
from ledger._models import LogEntryRow

FEE_PER_MERCHANT_ROUND = Money(50, "CNY")
ISV_SHARE_BP = 2000  # 20 % of the interest on uplift


def _cny(n: int) -> Money:
    return Money(n, "CNY")


def _balances(sessions: sessionmaker[Session], *codes: str) -> list[int]:
    with sessions() as s:
        return [balance(s, c).amount for c in codes]


def _open_book(sessions: sessionmaker[Session]) -> None:
    """The chart in CNY, both ISVs' accounts, and 10,000.00 CNY of capital in cash."""
    with sessions() as s, s.begin():
        open_standard_chart(s, "CNY")
        open_isv_accounts(s, "acme", "CNY")
        open_isv_accounts(s, "beta", "CNY")
        post_transfer(s, TransferRequest("capital:1", PLATFORM_CASH, EQUITY, _cny(1_000_000)))


def _accrue_job7_fees(sessions: sessionmaker[Session]) -> None:
    """Job 7 trains for 2 rounds on 2 Acme merchants and 1 Beta merchant."""
    merchant_rounds = {"acme": 2 * 2, "beta": 1 * 2}
    with sessions() as s, s.begin():
        post_linked(
            s,
            [
                data_usage_fee(
                    f"fee:job7:{isv}",
                    isv,
                    FEE_PER_MERCHANT_ROUND * n,
                    {"job": "job7", "merchant_rounds": n, "rate": FEE_PER_MERCHANT_ROUND.amount},
                )
                for isv, n in merchant_rounds.items()
            ],
            link_id="fees:job7",
        )


def _loan_m1_with_interest_share(sessions: sessionmaker[Session]) -> None:
    """Merchant m1 draws its 1,500.00 line (1,000.00 without ERP data) and pays 12.34 interest."""
    line_with, line_without, interest = 150_000, 100_000, _cny(1_234)
    # Interest on the uplift is the uplift's share of the interest, split exactly.
    _, on_uplift = split(interest, [line_without, line_with - line_without])
    with sessions() as s, s.begin():
        post_transfer(
            s, TransferRequest("loan:m1:draw", LOANS_RECEIVABLE, PLATFORM_CASH, _cny(150_000))
        )
        post_transfer(s, TransferRequest("loan:m1:int:1", PLATFORM_CASH, INTEREST_INCOME, interest))
        post_linked(
            s,
            interest_share(
                "share:m1:1", on_uplift, ISV_SHARE_BP, {"acme": 2, "beta": 1}, {"loan": "m1"}
            ),
        )


def test_data_usage_fee_accrues_to_isvs(sessions: sessionmaker[Session]) -> None:
    """4 merchant-rounds at 0.50 owe Acme 2.00, 2 owe Beta 1.00; one log entry per fee."""
    _open_book(sessions)

    _accrue_job7_fees(sessions)

    assert _balances(
        sessions, DATA_USAGE_FEE_EXPENSE, isv_payable("acme"), isv_payable("beta")
    ) == [
        300,
        200,
        100,
    ]
    with sessions() as s:
        logged = s.execute(
            select(LogEntryRow.leaf_data).where(LogEntryRow.kind == "transfer.posted")
        ).scalars()
        bodies = [json.loads(d)["body"] for d in logged]
    assert [(b["id"], b["amount"], b["link"]) for b in bodies[1:]] == [
        ("fee:job7:acme", 200, "fees:job7"),
        ("fee:job7:beta", 100, "fees:job7"),
    ]


def test_interest_share_on_uplift(sessions: sessionmaker[Session]) -> None:
    """12.34 interest: 4.11 is on the uplift, 20 % of it (0.82) goes 0.55 to Acme, 0.27 to Beta."""
    _open_book(sessions)

    _loan_m1_with_interest_share(sessions)

    # split(1234, [100000, 50000]) = [823, 411]: the larger remainder takes the odd fen.
    # Pool: floor(411 × 20 %) = 82 (the platform keeps 0.2 fen); 82 × 2/3 = 54.67 → 55, 27.33 → 27.
    assert _balances(
        sessions, INTEREST_INCOME, INTEREST_SHARE_EXPENSE, isv_payable("acme"), isv_payable("beta")
    ) == [1_234, 82, 55, 27]
    assert _balances(sessions, PLATFORM_CASH, LOANS_RECEIVABLE) == [851_234, 150_000]


def test_settlement_pays_acme_and_refuses_overpayment(sessions: sessionmaker[Session]) -> None:
    """Acme is owed 2.55; paying it empties the payable, clears through settled, and no more."""
    _open_book(sessions)
    _accrue_job7_fees(sessions)
    _loan_m1_with_interest_share(sessions)
    owed = _cny(200 + 55)

    with sessions() as s, s.begin():
        post_transfer(s, settlement_instructed("settle:acme:1", "acme", owed, {"batch": "2026-11"}))
    in_flight = _balances(sessions, isv_payable("acme"), isv_settled("acme"))
    with sessions() as s, s.begin():
        post_transfer(s, settlement_cleared("settle:acme:1:cleared", "acme", owed))
    with pytest.raises(TransferRejected) as info, sessions() as s, s.begin():
        post_transfer(s, settlement_instructed("settle:acme:2", "acme", _cny(1)))

    assert in_flight == [0, 255]
    assert _balances(sessions, isv_payable("acme"), isv_settled("acme"), PLATFORM_CASH) == [
        0,
        0,
        851_234 - 255,
    ]
    assert info.value.code == "INSUFFICIENT_FUNDS"

    # The book balances, and so does the accounting equation:
    # assets = liabilities + equity + income − expenses.
    with sessions() as s:
        tb = trial_balance(s)
    assert tb.balanced and tb.debits == {"CNY": tb.credits["CNY"]}
    total = {k: 0 for k in AccountKind}
    for row in tb.rows:
        total[row.kind] += row.balance.amount
    assert total[AccountKind.ASSET] == 850_979 + 150_000
    assert total[AccountKind.ASSET] == (
        total[AccountKind.LIABILITY]
        + total[AccountKind.EQUITY]
        + total[AccountKind.INCOME]
        - total[AccountKind.EXPENSE]
    )
