"""Small factories for the credit tests: a funded book, crafted merchants, event rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

import ledger
from gateway import credit

CUR = "CNY"
FUNDING = 10**13


def setup_book(
    s: Session, policy_text: str = credit.DEFAULT_POLICY_TOML
) -> tuple[int, credit.CreditPolicy]:
    """Activate a policy, open the chart and put equity into platform cash."""
    version = credit.activate_policy(s, policy_text)
    credit.open_credit_chart(s, CUR)
    ledger.post_transfer(
        s,
        ledger.TransferRequest(
            "fund:0", ledger.PLATFORM_CASH, ledger.EQUITY, ledger.Money(FUNDING, CUR)
        ),
    )
    return version, credit.parse_policy(policy_text)


def decide(
    s: Session,
    version: int,
    policy: credit.CreditPolicy,
    merchants: Sequence[credit.MerchantScores],
) -> list[credit.LineDecision]:
    """Decide lines for crafted merchants with fixed model versions."""
    return credit.decide_lines(
        s, version, policy, merchants, models={"f": "f-test", "g": "g-test", "combiner": "c-test"}
    )


def merchant(
    mid: str,
    sales_3m: int,
    pd_f: float | None,
    pd_with: float | None,
    isvs: dict[str, float] | None = None,
) -> credit.MerchantScores:
    """A crafted merchant; ``isvs`` defaults to one ISV ``isv01`` carrying ``pd_with``."""
    isv_pd = isvs if isvs is not None else ({} if pd_with is None else {"isv01": pd_with})
    return credit.MerchantScores(
        merchant_id=mid,
        sales_3m=sales_3m,
        pd_f=pd_f,
        pd_with=pd_with,
        isv_pd=isv_pd,
        consent_ids={k: f"c-{mid}-{k}" for k in isv_pd},
    )


def event(
    key: str, loan: str, kind: str, day: str, amount: int, merchant: str | None = None, **extra: Any
) -> dict[str, Any]:
    """One import row."""
    row = {
        "key": key,
        "loan_id": loan,
        "kind": kind,
        "date": day,
        "amount": amount,
        "currency": CUR,
        **extra,
    }
    if merchant is not None:
        row["merchant"] = merchant
    return row


def receipt(
    s: Session,
    isv: str,
    action: str,
    used: int,
    read: int,
    issued_at: str,
    token: str,
    job: str = "job-1",
    rnd: int = 1,
) -> None:
    """Append a ``data.used`` entry shaped like the ServerApp's (a node's signed receipt)."""
    ledger.append_entry(
        s,
        "data.used",
        {
            "job_id": job,
            "round": rnd,
            "data_provider": isv,
            "action": action,
            "rows_used": used,
            "merchants_used": used,
            "merchants_hash": "h",
            "rows_read": read,
            "merchants_read": read,
            "merchants_read_hash": "h",
            "manifest_root": "r",
            "epsilon_spent": 0.5,
            "delta": 1e-5,
            "issued_at": issued_at,
            "receipt": token,
        },
        at=datetime.now(UTC),
    )


def import_rows(s: Session, rows: Sequence[dict[str, Any]]) -> credit.ImportSummary:
    """Import rows as a JSON Lines file."""
    return credit.import_bytes(
        s,
        credit.events_as_jsonl(rows),
        fmt="jsonl",
        source="test.jsonl",
        default_rate_bp=1800,
        currency=CUR,
    )


def import_and_settle_by_month(
    s: Session,
    rows: Sequence[dict[str, Any]],
    start: credit.Period,
    months: int,
    version: int,
    policy: credit.CreditPolicy,
) -> list[credit.IsvSettlement]:
    """Import each month's rows, then settle (and so close) that month, ``months`` times.

    The way a lending system sends a simulated history: a repayment pays interest first
    only for interest accrued in closed months, so a write-off of the whole principal
    (see :func:`gateway.credit.simulate_loans`) passes the import only once the months
    before it are closed.
    """
    done: list[credit.IsvSettlement] = []
    period = start
    for _ in range(months):
        first, last = period.first.isoformat(), period.last.isoformat()
        inside = [r for r in rows if first <= r["date"] <= last]
        if inside:
            import_rows(s, inside)
        done += credit.settle_period(s, period, policy_version=version, policy=policy, clear=True)
        period = period.next
    return done
