"""Which merchants a consent covers for a credit purpose (the gate in front of every ERP input)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

__all__ = ["SCORING_PURPOSE", "MONITORING_PURPOSE", "MONITORING_CATEGORIES", "covering_consents"]

SCORING_PURPOSE = "credit_scoring"
MONITORING_PURPOSE = "post_loan_monitoring"
MONITORING_CATEGORIES = ("margins", "turnover", "logistics_cost", "orders_and_shipping")
"""What the monitoring signals read (gross margin, revenue, shipping cost, orders shipped)."""


def covering_consents(
    session: Session,
    pairs: Iterable[tuple[str, str]],
    *,
    purpose: str,
    categories: Iterable[str],
    consumer: str,
    at: datetime,
    consent_manager_key: Ed25519PublicKey,
) -> dict[tuple[str, str], str | None]:
    """``(merchant, isv) → consent id`` allowing the use now, or ``None`` (signatures checked)."""
    from consent import Use, check

    cats = tuple(categories)
    out: dict[tuple[str, str], str | None] = {}
    for merchant, isv in pairs:
        use = Use(merchant_id=merchant, data_provider=isv, data_consumer=consumer,
                  purpose=purpose, categories=cats, at=at)
        d = check(session, use, consent_manager_key=consent_manager_key)
        out[(merchant, isv)] = d.consent_id if d.allowed else None
    return out
