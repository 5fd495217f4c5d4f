"""Consents in the database, read: snapshots, the database check, one consent, listings.

Reads never write. :func:`check` and :func:`require` answer one
:class:`~consent.Use` from the merchant's committed consents (signatures
verified, state proven from the log); :func:`snapshot_records` is the one query
that a :class:`~consent.ConsentIndex` snapshot is built from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from ._artefact import (
    ConsentArtefact,
    Frequency,
    SignedArtefact,
    read_artefact_unverified,
    verify_artefact,
)
from ._check import ConsentRecord, Decision, evaluate
from ._errors import (
    ConsentIntegrityError,
    ConsentNotFound,
    InvalidConsentRequest,
    TransitionRefused,
)
from ._integrity import derive_records
from ._lifecycle import (
    ConsentEvent,
    ConsentState,
    Status,
    fold_events,
)
from ._models import ArtefactRow, EventRow, StateRow
from ._use import Use
from ._verified import VERIFIED

__all__ = [
    "ConsentView",
    "SNAPSHOT_COLUMNS",
    "check",
    "require",
    "snapshot_records",
    "get_consent",
    "list_consents",
]


_NO_USES = Frequency(1, "year")  # terms of an unreadable artefact: never used anyway

@dataclass(frozen=True, slots=True)
class ConsentView:
    """A consent as stored: signed terms, current state and full event history."""

    signed: SignedArtefact
    state: ConsentState
    events: tuple[ConsentEvent, ...]

def _now(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if at.tzinfo is None:
        raise InvalidConsentRequest("times must be timezone-aware", code="MALFORMED")
    return at.astimezone(UTC)

def _state_from_row(row: StateRow) -> ConsentState:
    return ConsentState(
        consent_id=row.consent_id,
        status=Status(row.status),
        version=row.version,
        use_count=row.use_count,
        period_uses=row.period_uses,
        last_used_at=row.last_used_at,
        updated_at=row.updated_at,
    )

SNAPSHOT_COLUMNS = (
    ArtefactRow.consent_id,
    ArtefactRow.merchant_id,
    ArtefactRow.data_provider,
    ArtefactRow.data_consumer,
    ArtefactRow.token,
    ArtefactRow.artefact_hash,
    StateRow.status,
    StateRow.version,
    StateRow.use_count,
    StateRow.period_uses,
    StateRow.last_used_at,
    StateRow.updated_at,
)
"""What a check reads of one consent, as plain columns: no ORM objects, and no copies of
signed times (the token has them) for a snapshot of 10^5 consents."""

_STATUS = {status.value: status for status in Status}


def _placeholder(session: Session, consent_id: str, token: str, digest: str) -> SignedArtefact:
    """Terms to report for a stored token that no longer parses (it is denied anyway)."""
    row = session.get(ArtefactRow, consent_id)
    if row is None:  # the snapshot query just returned it: deleted under our feet
        raise ConsentNotFound(f"no consent {consent_id!r}")
    terms = ConsentArtefact(
        consent_id=row.consent_id,
        merchant_id=row.merchant_id,
        data_provider=row.data_provider,
        data_consumer=row.data_consumer,
        purposes=(),
        categories=(),
        data_from=date.min,
        data_to=date.min,
        frequency=_NO_USES,
        data_life_days=0,
        consent_start=row.consent_start,
        consent_expiry=row.consent_expiry,
        created_at=row.created_at,
    )
    return SignedArtefact(terms, token, digest)


def _stored_artefact(
    session: Session,
    parties: tuple[str, str, str, str],
    token: str,
    stored_hash: str,
    key: Ed25519PublicKey | None,
    raw_key: bytes = b"",
) -> tuple[SignedArtefact, bool]:
    """A stored token's terms and whether they may be trusted.

    With ``key``, the token is hashed and its signature verified (once per
    process and token hash, see :mod:`consent._verified`); without, it is only
    parsed and its hash compared. Either way the hash must equal the stored
    one and the terms must name the row's consent, merchant, provider and
    consumer, or the record is untrusted (``SIGNATURE_INVALID`` in every check).
    """
    try:
        if key is None:
            signed = read_artefact_unverified(token)
            terms, digest = signed.artefact, signed.hash
        else:
            digest, cached = VERIFIED.get(token, raw_key or key)
            terms = cached or verify_artefact(token, key).artefact
            if cached is None:
                VERIFIED.put(digest, key, terms)
    except InvalidConsentRequest:
        try:  # the signature fails: keep the terms for reporting if they still parse
            return read_artefact_unverified(token), False
        except InvalidConsentRequest:
            return _placeholder(session, parties[0], token, stored_hash), False
    named = (terms.consent_id, terms.merchant_id, terms.data_provider, terms.data_consumer)
    return SignedArtefact(terms, token, digest), digest == stored_hash and named == parties


def snapshot_records(
    session: Session, key: Ed25519PublicKey | None, *conditions: Any
) -> list[ConsentRecord]:
    """Every consent matching ``conditions`` as a checkable record, in one query.

    Parameters
    ----------
    session : Session
    key : Ed25519PublicKey | None
        The consent manager's key; ``None`` parses without verifying signatures.
    *conditions
        SQLAlchemy filters on :class:`ArtefactRow` / :class:`StateRow` columns.
    """
    rows = session.execute(
        select(*SNAPSHOT_COLUMNS)
        .join(StateRow, StateRow.consent_id == ArtefactRow.consent_id)
        .where(*conditions)
    ).all()
    if key is not None:
        VERIFIED.reserve(len(rows))  # never evict this snapshot's own entries mid-load
    records: list[ConsentRecord] = []
    append = records.append
    raw_key = b"" if key is None else key.public_bytes_raw()
    for cid, merchant, provider, consumer, token, a_hash, status, *counters in rows:
        parties = (cid, merchant, provider, consumer)
        signed, ok = _stored_artefact(session, parties, token, a_hash, key, raw_key)
        state = ConsentState(cid, _STATUS[status], *counters)  # version, uses, …, updated_at
        append(ConsentRecord(signed, state, ok))
    return records

def check(session: Session, use: Use, *, consent_manager_key: Ed25519PublicKey) -> Decision:
    """Check one use against the committed consents of its merchant (signatures verified).

    One query for the merchant's consents with this provider and consumer,
    then the pure :func:`consent.evaluate`. See that function for the rules.
    """
    records = snapshot_records(
        session,
        consent_manager_key,
        ArtefactRow.merchant_id == use.merchant_id,
        ArtefactRow.data_provider == use.data_provider,
        ArtefactRow.data_consumer == use.data_consumer,
    )
    records = derive_records(session, records)  # status proven from the log, or INTEGRITY
    return evaluate(records, use)


def require(session: Session, use: Use, *, consent_manager_key: Ed25519PublicKey) -> Decision:
    """:func:`check`, raising :class:`consent.ConsentDenied` (with the code) on denial."""
    return check(session, use, consent_manager_key=consent_manager_key).require()


def get_consent(session: Session, consent_id: str) -> ConsentView:
    """Read one consent's terms, state and history; the state is re-folded and compared."""
    art_row = session.get(ArtefactRow, consent_id)
    state_row = session.get(StateRow, consent_id)
    if art_row is None or state_row is None:
        raise ConsentNotFound(f"no consent {consent_id!r}")
    signed = read_artefact_unverified(art_row.token)
    rows = session.execute(
        select(EventRow).where(EventRow.consent_id == consent_id).order_by(EventRow.version)
    ).scalars()
    events = tuple(
        ConsentEvent(r.consent_id, r.version, r.kind, r.at, json.loads(r.detail)) for r in rows
    )
    try:
        state = fold_events(events, signed.artefact.frequency)
    except TransitionRefused as exc:  # a stored history no rule allows: not the caller's fault
        raise ConsentIntegrityError(f"history of {consent_id} is invalid: {exc}") from exc
    stored = _state_from_row(state_row)
    # Batched uses (count_round_uses) advance the counters without event rows: the stored
    # counters may run ahead of the fold, never behind it; the lifecycle must match exactly.
    lifecycle = (state.status, state.version, state.updated_at)
    if lifecycle != (stored.status, stored.version, stored.updated_at) or not (
        state.use_count <= stored.use_count
        and (
            state.last_used_at is None
            or (stored.last_used_at is not None and state.last_used_at <= stored.last_used_at)
        )
    ):
        raise ConsentIntegrityError(f"state of {consent_id} does not match its events")
    return ConsentView(signed, stored, events)


def list_consents(
    session: Session,
    *,
    merchant_id: str | None = None,
    data_provider: str | None = None,
    data_consumer: str | None = None,
    status: Status | None = None,
) -> list[tuple[SignedArtefact, ConsentState]]:
    """Consents matching the filters, oldest first (terms read without verifying)."""
    conditions = []
    if merchant_id is not None:
        conditions.append(StateRow.merchant_id == merchant_id)
    if data_provider is not None:
        conditions.append(StateRow.data_provider == data_provider)
    if data_consumer is not None:
        conditions.append(StateRow.data_consumer == data_consumer)
    if status is not None:
        conditions.append(StateRow.status == status.value)
    rows = session.execute(
        select(ArtefactRow, StateRow)
        .join(StateRow, StateRow.consent_id == ArtefactRow.consent_id)
        .where(*conditions)
        .order_by(ArtefactRow.created_at, ArtefactRow.consent_id)
    ).all()
    return [(read_artefact_unverified(a.token), _state_from_row(s)) for a, s in rows]

