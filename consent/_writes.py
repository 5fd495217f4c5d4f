"""Consents in the database, written: grant, lifecycle transitions and the expiry sweep.

Every function takes the caller's SQLAlchemy ``Session`` and works inside the
caller's transaction; each state change inserts its event row, updates the
state row and appends its ledger entry in that same transaction, so all three
commit or roll back together. All input is validated before the first write,
so a refused request leaves nothing behind even if the caller commits anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ledger import append_entries, canonical_json

from ._artefact import (
    ConsentArtefact,
    SignedArtefact,
    check_terms,
    read_artefact_unverified,
    sign_artefact,
    verify_approval,
)
from ._errors import (
    ConsentNotFound,
    InvalidConsentRequest,
    TransitionRefused,
)
from ._lifecycle import (
    TERMINAL,
    ConsentEvent,
    ConsentState,
    Status,
    apply_event,
    effective_status,
)
from ._models import ArtefactRow, EventRow, StateRow
from ._reads import _now, _state_from_row
from ._receipt import DEFAULT_NOTICE, ConsentReceipt, ReceiptNotice, make_receipt

__all__ = [
    "Grant",
    "grant",
    "activate",
    "reject",
    "pause",
    "resume",
    "revoke",
    "expire_due",
]


@dataclass(frozen=True, slots=True)
class Grant:
    """What :func:`grant` returns: the signed artefact and one receipt per recorded event."""

    signed: SignedArtefact
    receipts: tuple[ConsentReceipt, ...]

    @property
    def receipt(self) -> ConsentReceipt:
        """The receipt of the last event (its status is the consent's status now)."""
        return self.receipts[-1]

@dataclass(slots=True)
class _Pending:
    """One transition validated and waiting to be written."""

    signed: SignedArtefact
    event: ConsentEvent
    before: Status | None
    after: ConsentState
    extra: dict[str, Any]

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

def event_body(
    signed: SignedArtefact,
    version: int,
    before: Status | None,
    after: Status,
    detail: Mapping[str, Any],
) -> dict[str, Any]:
    """The ledger body of one consent event (``consent.<kind>``): who, which artefact, the
    event's version and the status change. :func:`consent.import_consents` writes the same."""
    a = signed.artefact
    return {
        "consent_id": a.consent_id,
        "merchant_id": a.merchant_id,
        "data_provider": a.data_provider,
        "data_consumer": a.data_consumer,
        "artefact_hash": signed.hash,
        "event_version": version,
        "from_status": None if before is None else before.value,
        "status": after.value,
        "detail": dict(detail),
    }


def _write(
    session: Session, pending: Sequence[_Pending], notice: ReceiptNotice
) -> list[ConsentReceipt]:
    """Append ledger entries, event rows and state for validated transitions, in order."""
    items: list[tuple[str, Mapping[str, Any]]] = []
    for p in pending:
        body = event_body(p.signed, p.event.version, p.before, p.after.status, p.event.detail)
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
