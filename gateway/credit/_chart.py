"""The credit accounts beside the ledger's standard chart, and idempotent bulk posting.

Added to :func:`ledger.open_standard_chart`:

================================  =======  ==========================================
``platform:interest-receivable``  asset    interest accrued on drawn balances, not yet paid
``platform:credit-loss-expense``  expense  principal written off
``platform:credit-loss-recovery`` income   cash collected on written-off loans
``isv:<id>:clawback-receivable``  asset    share clawed back from ISV ``<id>``, not yet
                                           netted against a payout (never negative)
================================  =======  ==========================================

Recoveries are income of their own, not a credit to the expense: the loss stays
visible gross (what was written off) and net (loss − recoveries) for an auditor.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

import ledger

__all__ = [
    "INTEREST_RECEIVABLE",
    "CREDIT_LOSS",
    "CREDIT_LOSS_RECOVERY",
    "clawback_receivable",
    "ensure_clawback_account",
    "open_credit_chart",
    "post_new",
    "ensure_isv",
]

INTEREST_RECEIVABLE = "platform:interest-receivable"
CREDIT_LOSS = "platform:credit-loss-expense"
CREDIT_LOSS_RECOVERY = "platform:credit-loss-recovery"
_EXTRA = (
    (INTEREST_RECEIVABLE, "Interest receivable", ledger.AccountKind.ASSET),
    (CREDIT_LOSS, "Credit-loss expense", ledger.AccountKind.EXPENSE),
    (CREDIT_LOSS_RECOVERY, "Credit-loss recovery", ledger.AccountKind.INCOME),
)


def clawback_receivable(isv: str) -> str:
    """Account code of the share claw-backs ISV ``isv`` owes the platform."""
    return f"isv:{isv}:clawback-receivable"


def _ensure(
    session: Session, code: str, name: str, kind: ledger.AccountKind, currency: str
) -> None:
    try:
        acct = ledger.get_account(session, code)
    except ledger.AccountRejected:
        ledger.open_account(session, code, name, kind, currency)
        return
    if acct.kind != kind or acct.currency != currency:
        raise ledger.AccountRejected(
            f"account {code!r} exists with another kind or currency", code="DUPLICATE_ACCOUNT"
        )


def open_credit_chart(session: Session, currency: str) -> None:
    """Open (idempotently) the ledger's standard chart and the three credit accounts."""
    ledger.open_standard_chart(session, currency)
    for code, name, kind in _EXTRA:
        _ensure(session, code, name, kind, currency)


def ensure_isv(session: Session, isv: str, currency: str) -> None:
    """Open (idempotently) an ISV's payable and settled accounts."""
    ledger.open_isv_accounts(session, isv, currency)


def ensure_clawback_account(session: Session, isv: str, currency: str) -> None:
    """Open (idempotently) ``isv:<isv>:clawback-receivable`` (asset, never negative)."""
    code = clawback_receivable(isv)
    try:
        acct = ledger.get_account(session, code)
    except ledger.AccountRejected:
        ledger.open_account(
            session,
            code,
            f"Share clawed back from ISV {isv}",
            ledger.AccountKind.ASSET,
            currency,
            allow_negative=False,
        )
        return
    if acct.kind != ledger.AccountKind.ASSET or acct.currency != currency:
        raise ledger.AccountRejected(
            f"account {code!r} exists with another kind or currency", code="DUPLICATE_ACCOUNT"
        )


def post_new(session: Session, requests: Sequence[ledger.TransferRequest]) -> int:
    """Post the requests whose ids are not in the book yet; returns how many were new.

    An id already posted is checked against the request (same accounts and amount)
    and skipped, so a settlement re-run pays nothing twice and a changed amount under
    an old id is refused (``IDEMPOTENCY_CONFLICT``) instead of silently ignored.
    """
    table = ledger.metadata.tables["book_transfers"]
    ids = [r.id for r in requests]
    have: dict[str, tuple[str, str, int]] = {}
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        for tid, dr, cr, amount in session.execute(
            select(table.c.id, table.c.debit_account, table.c.credit_account, table.c.amount).where(
                table.c.id.in_(chunk)
            )
        ):
            have[tid] = (dr, cr, int(amount))
    fresh = []
    for r in requests:
        old = have.get(r.id)
        if old is None:
            fresh.append(r)
        elif old != (r.debit, r.credit, r.amount.amount):
            raise ledger.TransferRejected(
                f"transfer {r.id!r} was posted with other accounts or amount",
                code="IDEMPOTENCY_CONFLICT",
                transfer_id=r.id,
            )
    if fresh:
        ledger.post_many(session, fresh)
    return len(fresh)
