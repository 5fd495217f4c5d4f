"""Consents in the database: grant, transitions, uses, expiry sweep, reads and the DB check.

Every function takes the caller's SQLAlchemy ``Session`` and works inside the
caller's transaction; each state change inserts its event row, updates the
state row and appends its ledger entry in that same transaction, so all three
commit or roll back together. All input is validated before the first write,
so a refused request leaves nothing behind even if the caller commits anyway.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ledger import Entry, append_entries, append_entry, canonical_json

from ._artefact import (
    ConsentArtefact,
    Frequency,
    FrequencyUnit,
    SignedArtefact,
    check_terms,
    read_artefact_unverified,
    sign_artefact,
    verify_approval,
    verify_artefact,
)
from ._check import ConsentRecord, Decision, evaluate, evaluate_one
from ._errors import (
    ConsentIntegrityError,
    ConsentNotFound,
    InvalidConsentRequest,
    TransitionRefused,
)
from ._integrity import derive_records
from ._lifecycle import (
    TERMINAL,
    ConsentEvent,
    ConsentState,
    Status,
    apply_event,
    effective_status,
    fold_events,
)
from ._models import ArtefactRow, EventRow, StateRow
from ._receipt import DEFAULT_NOTICE, ConsentReceipt, ReceiptNotice, make_receipt
from ._verified import VERIFIED

__all__ = [
    "Grant",
    "ConsentView",
    "grant",
    "activate",
    "reject",
    "pause",
    "resume",
    "revoke",
    "record_use",
    "record_uses",
    "USES_KIND",
    "consent_ids_hash",
    "expire_due",
    "get_consent",
    "list_consents",
    "check",
    "require",
    "snapshot_records",
]


_NO_USES = Frequency(1, "year")  # terms of an unreadable artefact: never used anyway

USES_KIND = "consent.uses"
"""Ledger kind of one :func:`record_uses` batch (``consent.used`` is one consent's event)."""

_CHUNK = 5000  # ids per IN (...) list: under SQLite's and PostgreSQL's bind-parameter caps


@dataclass(frozen=True, slots=True)
class Grant:
    """What :func:`grant` returns: the signed artefact and one receipt per recorded event."""

    signed: SignedArtefact
    receipts: tuple[ConsentReceipt, ...]

    @property
    def receipt(self) -> ConsentReceipt:
        """The receipt of the last event (its status is the consent's status now)."""
        return self.receipts[-1]


@dataclass(frozen=True, slots=True)
class ConsentView:
    """A consent as stored: signed terms, current state and full event history."""

    signed: SignedArtefact
    state: ConsentState
    events: tuple[ConsentEvent, ...]


@dataclass(slots=True)
class _Pending:
    """One transition validated and waiting to be written."""

    signed: SignedArtefact
    event: ConsentEvent
    before: Status | None
    after: ConsentState
    extra: dict[str, Any]


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


def _load_for_update(session: Session, consent_id: str) -> tuple[SignedArtefact, ConsentState]:
    """Lock a consent's state row for this transaction and read its terms."""
    state_row = session.execute(
        select(StateRow).where(StateRow.consent_id == consent_id).with_for_update()
    ).scalar_one_or_none()
    art_row = session.get(ArtefactRow, consent_id)
    if state_row is None or art_row is None:
        raise ConsentNotFound(f"no consent {consent_id!r}")
    return read_artefact_unverified(art_row.token), _state_from_row(state_row)


def _plan(
    signed: SignedArtefact,
    state: ConsentState,
    kind: str,
    at: datetime,
    detail: Mapping[str, Any],
) -> _Pending:
    """Validate one transition against the current state; nothing is written."""
    a = signed.artefact
    if at < state.updated_at:
        raise InvalidConsentRequest(
            f"{kind} at {at} is before the consent's last event at {state.updated_at}",
            code="OUT_OF_ORDER",
        )
    if kind != "expired" and effective_status(state.status, a.consent_expiry, at) is Status.EXPIRED:
        raise TransitionRefused(
            f"consent {a.consent_id} expired at {a.consent_expiry}; cannot apply {kind}"
        )
    if kind == "expired" and at < a.consent_expiry:
        raise TransitionRefused(f"consent {a.consent_id} runs until {a.consent_expiry}")
    event = ConsentEvent(a.consent_id, state.version + 1, kind, at, dict(detail))
    after = apply_event(state, event, a.frequency)
    return _Pending(signed, event, state.status, after, {})


def _write(
    session: Session, pending: Sequence[_Pending], notice: ReceiptNotice
) -> list[ConsentReceipt]:
    """Append ledger entries, event rows and state for validated transitions, in order."""
    items: list[tuple[str, Mapping[str, Any]]] = []
    for p in pending:
        a = p.signed.artefact
        body: dict[str, Any] = {
            "consent_id": a.consent_id,
            "merchant_id": a.merchant_id,
            "data_provider": a.data_provider,
            "data_consumer": a.data_consumer,
            "artefact_hash": p.signed.hash,
            "event_version": p.event.version,
            "from_status": None if p.before is None else p.before.value,
            "status": p.after.status.value,
            "detail": dict(p.event.detail),
        }
        body.update(p.extra)
        items.append((f"consent.{p.event.kind}", body))
    # One batch keeps the entries consecutive; every event in a call shares one time.
    entries = append_entries(session, items, at=pending[-1].event.at)
    receipts = []
    for p, entry in zip(pending, entries, strict=True):
        session.add(
            EventRow(
                consent_id=p.event.consent_id,
                version=p.event.version,
                kind=p.event.kind,
                at=p.event.at,
                status=p.after.status.value,
                ledger_seq=entry.seq,
                detail=canonical_json(dict(p.event.detail)).decode(),
            )
        )
        state_row = session.get(StateRow, p.event.consent_id)
        if state_row is None:
            a = p.signed.artefact
            state_row = StateRow(
                consent_id=a.consent_id,
                merchant_id=a.merchant_id,
                data_provider=a.data_provider,
                data_consumer=a.data_consumer,
            )
            session.add(state_row)
        state_row.status = p.after.status.value
        state_row.version = p.after.version
        state_row.use_count = p.after.use_count
        state_row.period_uses = p.after.period_uses
        state_row.last_used_at = p.after.last_used_at
        state_row.updated_at = p.after.updated_at
        receipts.append(
            make_receipt(
                p.signed.artefact,
                p.signed.hash,
                transition=f"consent.{p.event.kind}",
                status=p.after.status.value,
                at=p.event.at,
                ledger_seq=entry.seq,
                leaf_hash=entry.leaf_hash,
                notice=notice,
            )
        )
        session.flush()
    return receipts


def _pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def grant(
    session: Session,
    terms: ConsentArtefact,
    *,
    key: Ed25519PrivateKey,
    at: datetime | None = None,
    merchant_signature: str | None = None,
    merchant_key: Ed25519PublicKey | None = None,
    activate: bool = True,
    notice: ReceiptNotice = DEFAULT_NOTICE,
) -> Grant:
    """Sign and record a new consent; with ``terms.supersedes``, replace an older one.

    Events: ``superseded`` on the old consent (if any), ``granted`` (status
    PENDING), and ``activated`` when ``activate`` is true, each with its
    ledger entry and receipt.

    Parameters
    ----------
    session : Session
        The caller's session; everything is written in its transaction.
    terms : ConsentArtefact
        Validated terms (see :func:`consent.parse_terms`).
    key : Ed25519PrivateKey
        The consent manager's signing key.
    at : datetime | None, default now (UTC)
        Time of the events.
    merchant_signature : str | None, default None
        The merchant's detached approval JWS over the artefact body.
    merchant_key : Ed25519PublicKey | None, default None
        Required with ``merchant_signature``.
    activate : bool, default True
        Record the merchant's approval now (PENDING → ACTIVE).
    notice : ReceiptNotice, default ``DEFAULT_NOTICE``
        Jurisdiction, language, policy URL, contact and collection method the
        receipts state (the gateway passes its configured notice).

    Raises
    ------
    InvalidConsentRequest
        ``DUPLICATE_ID``, ``SIGNATURE_INVALID`` (merchant approval),
        ``ALREADY_EXPIRED``, ``SUPERSEDE_INVALID`` or any code of
        :func:`consent.parse_terms`; :class:`ConsentNotFound` for an unknown
        superseded id.
    """
    when = _now(at)
    check_terms(terms)
    if merchant_signature is not None:
        if merchant_key is None:
            raise InvalidConsentRequest(
                "a merchant signature needs the merchant's public key", code="SIGNATURE_INVALID"
            )
        verify_approval(terms, merchant_signature, merchant_key)
    if when >= terms.consent_expiry:
        raise InvalidConsentRequest(
            "consent would expire before it is granted", code="ALREADY_EXPIRED"
        )
    if session.get(ArtefactRow, terms.consent_id) is not None:
        raise InvalidConsentRequest(
            f"consent id {terms.consent_id!r} is taken", code="DUPLICATE_ID"
        )
    pending: list[_Pending] = []
    if terms.supersedes is not None:
        old, old_state = _load_for_update(session, terms.supersedes)
        o = old.artefact
        same_parties = (o.merchant_id, o.data_provider, o.data_consumer) == (
            terms.merchant_id,
            terms.data_provider,
            terms.data_consumer,
        )
        if not same_parties or terms.version != o.version + 1:
            raise InvalidConsentRequest(
                f"{terms.consent_id} must be version {o.version + 1} of the same merchant, "
                f"provider and consumer as {o.consent_id}",
                code="SUPERSEDE_INVALID",
            )
        try:
            pending.append(_plan(old, old_state, "superseded", when, {"by": terms.consent_id}))
        except TransitionRefused as exc:
            raise InvalidConsentRequest(str(exc), code="SUPERSEDE_INVALID") from exc
    signed = sign_artefact(terms, key)
    granted = ConsentEvent(terms.consent_id, 1, "granted", when, {})
    first = apply_event(None, granted, terms.frequency)
    pending.append(
        _Pending(
            signed,
            granted,
            None,
            first,
            {"artefact": signed.token, "merchant_signature": merchant_signature},
        )
    )
    if activate:
        detail = {"merchant_approval": merchant_signature is not None}
        pending.append(_plan(signed, first, "activated", when, detail))
    session.add(
        ArtefactRow(
            consent_id=terms.consent_id,
            merchant_id=terms.merchant_id,
            data_provider=terms.data_provider,
            data_consumer=terms.data_consumer,
            version=terms.version,
            supersedes=terms.supersedes,
            token=signed.token,
            artefact_hash=signed.hash,
            merchant_signature=merchant_signature,
            merchant_key=None if merchant_key is None else _pem(merchant_key),
            consent_start=terms.consent_start,
            consent_expiry=terms.consent_expiry,
            created_at=terms.created_at,
            frequency_unit=terms.frequency.unit,
        )
    )
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent grant won the id (or the supersession)
        code = "DUPLICATE_ID" if terms.supersedes is None else "SUPERSEDE_INVALID"
        raise InvalidConsentRequest(
            f"consent {terms.consent_id} conflicts: {exc}", code=code
        ) from exc
    return Grant(signed, tuple(_write(session, pending, notice)))


def _transition(
    session: Session,
    consent_id: str,
    kind: str,
    at: datetime | None,
    detail: Mapping[str, Any],
    notice: ReceiptNotice,
    loaded: tuple[SignedArtefact, ConsentState] | None = None,
) -> ConsentReceipt:
    signed, state = loaded or _load_for_update(session, consent_id)
    pending = _plan(signed, state, kind, _now(at), detail)
    return _write(session, [pending], notice)[0]


def activate(
    session: Session,
    consent_id: str,
    *,
    at: datetime | None = None,
    merchant_signature: str | None = None,
    merchant_key: Ed25519PublicKey | None = None,
    notice: ReceiptNotice = DEFAULT_NOTICE,
) -> ConsentReceipt:
    """PENDING → ACTIVE (the merchant approved), optionally checking its detached signature.

    Raises
    ------
    InvalidConsentRequest
        ``SIGNATURE_INVALID`` when the signature does not verify over the
        stored terms with ``merchant_key`` (or comes without a key); nothing
        is written.
    """
    loaded = _load_for_update(session, consent_id)
    if merchant_signature is not None:
        if merchant_key is None:
            raise InvalidConsentRequest("merchant signature needs a key", code="SIGNATURE_INVALID")
        verify_approval(loaded[0].artefact, merchant_signature, merchant_key)
    detail = {"merchant_approval": merchant_signature is not None}
    return _transition(session, consent_id, "activated", at, detail, notice, loaded)


def reject(
    session: Session,
    consent_id: str,
    *,
    at: datetime | None = None,
    reason: str = "",
    notice: ReceiptNotice = DEFAULT_NOTICE,
) -> ConsentReceipt:
    """PENDING → REJECTED (the merchant declined)."""
    return _transition(session, consent_id, "rejected", at, {"reason": reason}, notice)


def pause(
    session: Session,
    consent_id: str,
    *,
    at: datetime | None = None,
    reason: str = "",
    notice: ReceiptNotice = DEFAULT_NOTICE,
) -> ConsentReceipt:
    """ACTIVE → PAUSED: every check denies with ``PAUSED`` until resumed."""
    return _transition(session, consent_id, "paused", at, {"reason": reason}, notice)


def resume(
    session: Session,
    consent_id: str,
    *,
    at: datetime | None = None,
    notice: ReceiptNotice = DEFAULT_NOTICE,
) -> ConsentReceipt:
    """PAUSED → ACTIVE."""
    return _transition(session, consent_id, "resumed", at, {}, notice)


def revoke(
    session: Session,
    consent_id: str,
    *,
    at: datetime | None = None,
    reason: str = "",
    notice: ReceiptNotice = DEFAULT_NOTICE,
) -> ConsentReceipt:
    """PENDING/ACTIVE/PAUSED → REVOKED, for good; effective for every check after commit."""
    return _transition(session, consent_id, "revoked", at, {"reason": reason}, notice)


def expire_due(
    session: Session, *, at: datetime | None = None, notice: ReceiptNotice = DEFAULT_NOTICE
) -> list[ConsentReceipt]:
    """Record ``expired`` for every live consent whose expiry is at or before ``at``.

    Checks already treat such consents as expired by the clock; the sweep
    writes the fact to the ledger. The due consents are found and locked in
    one ``SELECT … FOR UPDATE``, not two round trips per consent.
    """
    when = _now(at)
    live = [s.value for s in Status if s not in TERMINAL]
    rows = session.execute(
        select(StateRow, ArtefactRow.token)
        .join(ArtefactRow, ArtefactRow.consent_id == StateRow.consent_id)
        .where(StateRow.status.in_(live), ArtefactRow.consent_expiry <= when)
        .order_by(StateRow.consent_id)
        .with_for_update(of=StateRow)
    ).all()
    pending = []
    for state_row, token in rows:
        signed = read_artefact_unverified(token)
        detail = {"expired_at": signed.artefact.consent_expiry.isoformat()}
        pending.append(_plan(signed, _state_from_row(state_row), "expired", when, detail))
    return _write(session, pending, notice) if pending else []


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
    assert row is not None  # the snapshot query just returned it
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


def check(
    session: Session,
    *,
    merchant_id: str,
    data_provider: str,
    data_consumer: str,
    purpose: str,
    categories: Iterable[str],
    at: datetime,
    data_range: tuple[date, date] | None = None,
    consent_manager_key: Ed25519PublicKey,
) -> Decision:
    """Check one use against the committed consents of a merchant (signatures verified).

    One query for the merchant's consents with this provider and consumer,
    then the pure :func:`consent.evaluate`. See that function for the rules.
    """
    records = snapshot_records(
        session,
        consent_manager_key,
        ArtefactRow.merchant_id == merchant_id,
        ArtefactRow.data_provider == data_provider,
        ArtefactRow.data_consumer == data_consumer,
    )
    records = derive_records(session, records)  # status proven from the log, or INTEGRITY
    return evaluate(
        records,
        merchant_id=merchant_id,
        data_provider=data_provider,
        data_consumer=data_consumer,
        purpose=purpose,
        categories=categories,
        at=at,
        data_range=data_range,
    )


def require(
    session: Session,
    *,
    merchant_id: str,
    data_provider: str,
    data_consumer: str,
    purpose: str,
    categories: Iterable[str],
    at: datetime,
    data_range: tuple[date, date] | None = None,
    consent_manager_key: Ed25519PublicKey,
) -> Decision:
    """:func:`check`, raising :class:`consent.ConsentDenied` (with the code) on denial."""
    return check(
        session,
        merchant_id=merchant_id,
        data_provider=data_provider,
        data_consumer=data_consumer,
        purpose=purpose,
        categories=categories,
        at=at,
        data_range=data_range,
        consent_manager_key=consent_manager_key,
    ).require()


def record_use(
    session: Session,
    consent_id: str,
    *,
    purpose: str,
    categories: Iterable[str],
    at: datetime | None = None,
    data_range: tuple[date, date] | None = None,
    consent_manager_key: Ed25519PublicKey,
    job_id: str | None = None,
    notice: ReceiptNotice = DEFAULT_NOTICE,
) -> ConsentReceipt:
    """Check a use against one consent and, if allowed, count it (``consent.used``).

    Raises
    ------
    ConsentDenied
        With the deny code when the use is not allowed; nothing is written.
    """
    when = _now(at)
    wanted = tuple(categories)
    state_row = session.execute(
        select(StateRow).where(StateRow.consent_id == consent_id).with_for_update()
    ).scalar_one_or_none()
    art_row = session.get(ArtefactRow, consent_id)
    if state_row is None or art_row is None:
        raise ConsentNotFound(f"no consent {consent_id!r}")
    parties = (
        art_row.consent_id,
        art_row.merchant_id,
        art_row.data_provider,
        art_row.data_consumer,
    )
    signed, ok = _stored_artefact(
        session, parties, art_row.token, art_row.artefact_hash, consent_manager_key
    )
    record = derive_records(session, [ConsentRecord(signed, _state_from_row(state_row), ok)])[0]
    evaluate_one(
        record, purpose=purpose, categories=wanted, at=when, data_range=data_range
    ).require()
    detail = {"purpose": purpose, "categories": sorted(wanted), "job_id": job_id}
    pending = _plan(record.signed, record.state, "used", when, detail)
    return _write(session, [pending], notice)[0]


def consent_ids_hash(consent_ids: Iterable[str]) -> str:
    """Hex SHA-256 of the canonical JSON list of the sorted, distinct consent ids."""
    return hashlib.sha256(canonical_json(sorted(set(consent_ids)))).hexdigest()


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def record_uses(
    session: Session,
    consent_ids: Iterable[str],
    *,
    at: datetime,
    job_id: str | None = None,
    round: int | None = None,
    data_provider: str | None = None,
    manifest_root: str | None = None,
) -> Entry | None:
    """Count one use of each consent, set-based, and log the batch as ONE ledger entry.

    What the platform calls once per node and round for the consents of the
    round's cohort manifest, after the node's usage receipt verified: the data
    *was* used, so every listed consent is counted whatever its status is now
    (a manifest issued before a revocation stays usable until its valid-until).
    The counters that :func:`consent.check` and the cohort check read
    (``use_count``, ``period_uses``, ``last_used_at``) advance in one UPDATE per
    frequency unit (per 5,000 ids), not one query per merchant. Unlike
    :func:`record_use`, no per-consent event row is written (an event row needs
    its own ledger entry); the batch's ``consent.uses`` entry (job, round,
    provider, manifest root, count and :func:`consent_ids_hash`) is the audit
    record, and :func:`get_consent` accepts counters ahead of the event fold.

    Parameters
    ----------
    session : Session
        The caller's session; written in its transaction (e.g. with the
        ``data.used`` entry of the receipt that proves the use).
    consent_ids : Iterable[str]
        Consents used (duplicates count once).
    at : datetime
        Time of the use (timezone-aware); no consent may have a later use already.
    job_id, round, data_provider, manifest_root : default None
        Copied into the ledger entry.

    Returns
    -------
    ledger.Entry | None
        The ``consent.uses`` entry; ``None`` (nothing written) for no ids.

    Raises
    ------
    ConsentNotFound
        An id is unknown; nothing is written.
    InvalidConsentRequest
        ``MALFORMED`` for a naive time, ``OUT_OF_ORDER`` when a consent was last
        used after ``at``; nothing is written.
    """
    when = _now(at)
    ids = sorted(set(consent_ids))
    if not ids:
        return None
    # Read and validate everything before the first write.
    by_unit: dict[FrequencyUnit, list[str]] = {}
    for chunk in _chunks(ids):
        # The unit is a column (no token parsed per consent); the state rows are
        # locked now so the order check below still holds when the UPDATEs run.
        rows = session.execute(
            select(ArtefactRow.consent_id, ArtefactRow.frequency_unit, StateRow.last_used_at)
            .join(StateRow, StateRow.consent_id == ArtefactRow.consent_id)
            .where(ArtefactRow.consent_id.in_(chunk))
            .with_for_update(of=StateRow)
        ).all()
        if len(rows) != len(chunk):
            missing = sorted(set(chunk) - {r.consent_id for r in rows})
            raise ConsentNotFound(f"no consent {missing[0]!r} ({len(missing)} unknown ids)")
        for consent_id, unit, last_used in rows:
            if last_used is not None and last_used > when:
                raise InvalidConsentRequest(
                    f"consent {consent_id} was used at {last_used}, after {when}",
                    code="OUT_OF_ORDER",
                )
            by_unit.setdefault(cast(FrequencyUnit, unit), []).append(consent_id)
    for unit, unit_ids in sorted(by_unit.items()):
        # Same period as the last use <=> last use at or after this period's start.
        period_start = Frequency(1, unit).period_start(when)
        for chunk in _chunks(unit_ids):
            session.execute(
                update(StateRow)
                .where(StateRow.consent_id.in_(chunk))
                .values(
                    use_count=StateRow.use_count + 1,
                    period_uses=case(
                        (StateRow.last_used_at >= period_start, StateRow.period_uses + 1),
                        else_=1,
                    ),
                    last_used_at=when,
                )
                .execution_options(synchronize_session=False)
            )
    body = {
        "job_id": job_id,
        "round": round,
        "data_provider": data_provider,
        "manifest_root": manifest_root,
        "count": len(ids),
        "consent_ids_hash": consent_ids_hash(ids),
    }
    entry = append_entry(session, USES_KIND, body, at=when)
    session.expire_all()  # loaded StateRow objects must not hide the new counters
    return entry


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
    # Batched uses (record_uses) advance the counters without event rows: the stored
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
