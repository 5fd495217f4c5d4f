"""Payout rules: the exact largest-remainder split and the standard chart of accounts.

The chart (one currency per book; codes are stable strings an auditor can read):

==================================  =========  =============================================
code                                kind       what it records
==================================  =========  =============================================
``platform:cash``                   asset      money the platform holds (never negative)
``platform:loans-receivable``       asset      principal lent to merchants
``platform:equity``                 equity     capital put into the platform
``platform:interest-income``        income     interest merchants paid
``platform:data-usage-fee-expense`` expense    fees owed to ISVs for data used in jobs
``platform:interest-share-expense`` expense    ISVs' share of the interest on uplift
``isv:<id>:payable``                liability  what the platform owes ISV ``<id>`` (never negative)
``isv:<id>:settled``                liability  payouts to ``<id>`` instructed, not yet cleared
==================================  =========  =============================================

A settlement is two transfers: *instructed* (debit ``isv:<id>:payable``, credit
``isv:<id>:settled``) and *cleared* (debit ``isv:<id>:settled``, credit
``platform:cash``). ``isv:<id>:settled`` is zero when every payout has cleared;
its Σcredits is what ``<id>`` has been paid in total.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from ._book import Account, AccountKind, TransferRequest, get_account, open_account
from ._errors import AccountRejected, SplitError
from ._money import Money

__all__ = [
    "PLATFORM_CASH",
    "LOANS_RECEIVABLE",
    "EQUITY",
    "INTEREST_INCOME",
    "DATA_USAGE_FEE_EXPENSE",
    "INTEREST_SHARE_EXPENSE",
    "BASIS_POINTS",
    "isv_payable",
    "isv_settled",
    "open_standard_chart",
    "open_isv_accounts",
    "split",
    "split_by",
    "data_usage_fee",
    "interest_share",
    "settlement_instructed",
    "settlement_cleared",
]

PLATFORM_CASH = "platform:cash"
LOANS_RECEIVABLE = "platform:loans-receivable"
EQUITY = "platform:equity"
INTEREST_INCOME = "platform:interest-income"
DATA_USAGE_FEE_EXPENSE = "platform:data-usage-fee-expense"
INTEREST_SHARE_EXPENSE = "platform:interest-share-expense"
BASIS_POINTS = 10_000
"""Rates are integer basis points: 1500 is 15 %."""

_PLATFORM_CHART: tuple[tuple[str, str, AccountKind, bool], ...] = (
    (PLATFORM_CASH, "Platform cash", AccountKind.ASSET, False),
    (LOANS_RECEIVABLE, "Loans receivable", AccountKind.ASSET, True),
    (EQUITY, "Platform equity", AccountKind.EQUITY, True),
    (INTEREST_INCOME, "Interest income", AccountKind.INCOME, True),
    (DATA_USAGE_FEE_EXPENSE, "Data-usage fee expense", AccountKind.EXPENSE, True),
    (INTEREST_SHARE_EXPENSE, "Interest-share expense", AccountKind.EXPENSE, True),
)


def isv_payable(isv: str) -> str:
    """Account code of what the platform owes ISV ``isv``."""
    return f"isv:{isv}:payable"


def isv_settled(isv: str) -> str:
    """Account code of payouts to ISV ``isv`` instructed but not yet cleared."""
    return f"isv:{isv}:settled"


# -- split ----------------------------------------------------------------------------


def split(total: Money, weights: Sequence[int]) -> list[Money]:
    """Share ``total`` out in proportion to ``weights``; the parts always add up to ``total``.

    Largest-remainder (Hamilton) method: each part gets the floor of its exact
    quota, and the fen left over go one each to the parts with the largest
    remainders, ties to the earlier part. Each part is therefore within one fen
    of its exact quota, and a zero weight always gets zero.

    Parameters
    ----------
    total : Money
        The amount to share; may be zero or negative (the parts then carry its sign).
    weights : Sequence[int]
        Non-negative integers (rows used, merchant-rounds, basis points) with a
        positive sum. Floats are refused: an inexact weight would make the split
        impossible to recompute.

    Returns
    -------
    list[Money]
        One part per weight, in order, in ``total``'s currency.

    Raises
    ------
    SplitError
        ``INVALID_WEIGHTS`` for empty, negative, non-integer or all-zero weights;
        ``SPLIT_MISMATCH`` if the closing check fails (a bug, never expected).

    Examples
    --------
    >>> [m.amount for m in split(Money(100, "CNY"), [1, 1, 1])]
    [34, 33, 33]
    """
    if not weights:
        raise SplitError("weights must not be empty", code="INVALID_WEIGHTS")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise SplitError(
                f"weights must be non-negative ints, got {w!r}", code="INVALID_WEIGHTS"
            )
    denominator = sum(weights)
    if denominator == 0:
        raise SplitError("weights must not all be zero", code="INVALID_WEIGHTS")
    sign = -1 if total.amount < 0 else 1
    whole = abs(total.amount)
    floors = [whole * w // denominator for w in weights]
    remainders = [whole * w % denominator for w in weights]
    left = whole - sum(floors)
    # Stable sort: equal remainders keep their order, so ties go to the earlier part.
    for i in sorted(range(len(weights)), key=lambda i: -remainders[i])[:left]:
        floors[i] += 1
    parts = [Money(sign * f, total.currency) for f in floors]

    # Closing sanity check (hordak does the same): exact total, each part within a fen.
    if sum(p.amount for p in parts) != total.amount or any(
        abs(f * denominator - whole * w) >= denominator
        for f, w in zip(floors, weights, strict=True)
    ):
        raise SplitError(f"split of {total} by {list(weights)} failed", code="SPLIT_MISMATCH")
    return parts


def split_by(total: Money, weights: Mapping[str, int]) -> dict[str, Money]:
    """:func:`split` keyed by name, in the mapping's order (ties go to earlier keys)."""
    keys = list(weights)
    return dict(zip(keys, split(total, [weights[k] for k in keys]), strict=True))


# -- chart of accounts ----------------------------------------------------------------


def _ensure(
    session: Session, code: str, name: str, kind: AccountKind, currency: str, allow_negative: bool
) -> Account:
    """Open ``code`` unless it exists with exactly this definition."""
    try:
        existing = get_account(session, code)
    except AccountRejected:
        return open_account(session, code, name, kind, currency, allow_negative=allow_negative)
    if (existing.kind, existing.currency, existing.allow_negative) != (
        kind,
        currency,
        allow_negative,
    ):
        raise AccountRejected(
            f"account {code!r} exists with another kind, currency or no-negative flag",
            code="DUPLICATE_ACCOUNT",
        )
    return existing


def open_standard_chart(session: Session, currency: str) -> list[Account]:
    """Open the platform accounts of the chart in ``currency``; existing ones are kept.

    Idempotent: an account that already exists with the same kind, currency and
    no-negative flag is returned as it is; one that differs raises
    ``AccountRejected(code="DUPLICATE_ACCOUNT")``.
    """
    return [
        _ensure(session, code, name, kind, currency, allow_negative)
        for code, name, kind, allow_negative in _PLATFORM_CHART
    ]


def open_isv_accounts(session: Session, isv: str, currency: str) -> tuple[Account, Account]:
    """Open (idempotently) ``isv:<isv>:payable`` and ``isv:<isv>:settled``."""
    payable = _ensure(
        session, isv_payable(isv), f"Payable to ISV {isv}", AccountKind.LIABILITY, currency, False
    )
    settled = _ensure(
        session,
        isv_settled(isv),
        f"Payouts to ISV {isv} in flight",
        AccountKind.LIABILITY,
        currency,
        False,
    )
    return payable, settled


# -- standard postings ----------------------------------------------------------------


def data_usage_fee(
    transfer_id: str, isv: str, amount: Money, metadata: Mapping[str, Any] | None = None
) -> TransferRequest:
    """Accrue a data-usage fee: debit the fee expense, credit what is owed to ``isv``."""
    return TransferRequest(
        transfer_id, DATA_USAGE_FEE_EXPENSE, isv_payable(isv), amount, dict(metadata or {})
    )


def interest_share(
    transfer_id: str,
    interest: Money,
    rate_bp: int,
    weights: Mapping[str, int],
    metadata: Mapping[str, Any] | None = None,
) -> list[TransferRequest]:
    """The ISVs' share of ``interest`` earned on uplift, split among ISVs by ``weights``.

    The pool is ``floor(interest × rate_bp / 10 000)`` (the platform keeps the
    fraction of a fen), then :func:`split` shares it out. ISVs whose part is zero
    get no transfer (a transfer moves at least one fen). Ids are
    ``<transfer_id>:<isv>``; post the list with :func:`ledger.post_linked`.

    Parameters
    ----------
    transfer_id : str
        Prefix of the ids.
    interest : Money
        Interest earned on the uplift (non-negative).
    rate_bp : int
        ISVs' share in basis points, 0–10 000.
    weights : Mapping[str, int]
        ISV id → weight (for example rows contributed).
    metadata : Mapping[str, Any] | None, default None
        Copied into each transfer, with ``pool`` and ``rate_bp`` added.
    """
    if isinstance(rate_bp, bool) or not isinstance(rate_bp, int):
        raise SplitError(f"rate_bp must be an int, got {rate_bp!r}", code="INVALID_WEIGHTS")
    if not 0 <= rate_bp <= BASIS_POINTS:
        raise SplitError(f"rate_bp must be in 0..10000, got {rate_bp}", code="INVALID_WEIGHTS")
    if interest.amount < 0:
        raise SplitError("interest must not be negative", code="INVALID_WEIGHTS")
    pool = Money(interest.amount * rate_bp // BASIS_POINTS, interest.currency)
    meta = {**dict(metadata or {}), "pool": pool.amount, "rate_bp": rate_bp}
    return [
        TransferRequest(
            f"{transfer_id}:{isv}", INTEREST_SHARE_EXPENSE, isv_payable(isv), part, meta
        )
        for isv, part in split_by(pool, weights).items()
        if part.amount > 0
    ]


def settlement_instructed(
    transfer_id: str, isv: str, amount: Money, metadata: Mapping[str, Any] | None = None
) -> TransferRequest:
    """A payout to ``isv`` leaves the payable (debit payable, credit settled-in-flight)."""
    return TransferRequest(
        transfer_id, isv_payable(isv), isv_settled(isv), amount, dict(metadata or {})
    )


def settlement_cleared(
    transfer_id: str, isv: str, amount: Money, metadata: Mapping[str, Any] | None = None
) -> TransferRequest:
    """The bank confirmed the payout: debit settled-in-flight, credit platform cash."""
    return TransferRequest(
        transfer_id, isv_settled(isv), PLATFORM_CASH, amount, dict(metadata or {})
    )
