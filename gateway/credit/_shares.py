"""Interest shares: the ISVs' part of the interest that a positive uplift earned.

For each loan and closed period with ``uplift_interest > 0`` and a positive uplift
at decision time: ``pool = uplift_interest × share_bp // 10 000`` (floor; the
platform keeps the fraction of a fen), split among the loan's attributed ISVs by
their attribution weights with the ledger's largest-remainder split (parts add up
to the pool exactly). Transfer ids: ``share:<loan>:<period>:<isv>``. A loan whose
uplift is ≤ 0 has no attribution and earns nobody a share.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

import ledger

from ._models import AccrualRow, LoanRow
from ._period import Period

__all__ = ["ShareLine", "share_lines", "share_requests"]


@dataclass(frozen=True, slots=True)
class ShareLine:
    """One loan's uplift interest in one period and who it is attributed to."""

    loan_id: str
    merchant_id: str
    uplift: int
    uplift_interest: int
    attribution: dict[str, int]


def share_lines(session: Session, period: Period) -> list[ShareLine]:
    """Loans of the period whose uplift interest is shared (positive uplift and interest)."""
    rows = session.execute(
        select(
            LoanRow.loan_id,
            LoanRow.merchant_id,
            LoanRow.line_with - LoanRow.line_f,
            AccrualRow.uplift_interest,
            LoanRow.attribution,
        )
        .join(AccrualRow, AccrualRow.loan_id == LoanRow.loan_id)
        .where(AccrualRow.period == str(period), AccrualRow.uplift_interest > 0)
        .order_by(LoanRow.loan_id)
    )
    return [
        ShareLine(loan, merchant, int(up), int(ui), {str(k): int(v) for k, v in attr.items()})
        for loan, merchant, up, ui, attr in rows
        if int(up) > 0 and attr and sum(int(v) for v in attr.values()) > 0
    ]


def share_requests(
    lines: list[ShareLine], *, period: Period, currency: str, share_bp: int
) -> list[ledger.TransferRequest]:
    """The ``share:<loan>:<period>:<isv>`` transfers for ``lines``."""
    out: list[ledger.TransferRequest] = []
    for s in lines:
        out.extend(
            ledger.interest_share(
                f"share:{s.loan_id}:{period}",
                ledger.Money(s.uplift_interest, currency),
                share_bp,
                s.attribution,
                {
                    "loan": s.loan_id,
                    "merchant": s.merchant_id,
                    "period": str(period),
                    "uplift": s.uplift,
                },
            )
        )
    return out
