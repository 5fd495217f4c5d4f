"""Consent test data factories: keys, terms and row counters (plain helpers, no fixtures)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from consent import ConsentArtefact, parse_terms
from consent._models import ArtefactRow, EventRow, StateRow
from ledger._models import LogEntryRow

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
CM_KEY = Ed25519PrivateKey.generate()  # the consent manager's key for every test
PROVIDER = "isv-a"
CONSUMER = "lender-1"


def terms_dict(consent_id: str = "c-1", merchant_id: str = "m-1", **changes: Any) -> dict[str, Any]:
    """A valid terms mapping (JSON-shaped) with optional changes."""
    terms: dict[str, Any] = {
        "consent_id": consent_id,
        "merchant_id": merchant_id,
        "data_provider": PROVIDER,
        "data_consumer": CONSUMER,
        "purposes": ["credit_scoring", "model_training"],
        "categories": ["margins", "turnover", "cost_of_goods"],
        "data_from": "2025-01-01",
        "data_to": "2025-12-31",
        "frequency": {"uses": 5, "per": "day"},
        "data_life_days": 90,
        "consent_start": "2026-06-01T00:00:00Z",
        "consent_expiry": "2026-12-01T00:00:00+00:00",
        "created_at": "2026-06-01T08:00:00Z",
    }
    terms.update(changes)
    return terms


def make_terms(
    consent_id: str = "c-1", merchant_id: str = "m-1", **changes: Any
) -> ConsentArtefact:
    """Validated terms from :func:`terms_dict`."""
    return parse_terms(terms_dict(consent_id, merchant_id, **changes))


def counts(sessions: sessionmaker[Session]) -> tuple[int, int, int, int]:
    """(artefacts, events, states, ledger entries) row counts."""
    with sessions() as s:
        return tuple(  # type: ignore[return-value]
            s.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (ArtefactRow, EventRow, StateRow, LogEntryRow)
        )


def ledger_kinds(sessions: sessionmaker[Session]) -> list[str]:
    """Kinds of all ledger entries, in order."""
    with sessions() as s:
        return list(s.execute(select(LogEntryRow.kind).order_by(LogEntryRow.seq)).scalars())
