"""Consents in the database: grant, transitions, ledger entries, receipts and refusals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

import consent
from consent import (
    InvalidConsentRequest,
    Status,
    TransitionRefused,
    approve_artefact,
    parse_terms,
)
from consent._models import ArtefactRow, StateRow
from ledger._models import LogEntryRow

from .factories import CM_KEY, T0, counts, ledger_kinds, make_terms, terms_dict


def _grant(sessions: sessionmaker[Session], **kw: Any) -> consent.Grant:
    terms = kw.pop("terms", None) or make_terms()
    with sessions() as s, s.begin():
        return consent.grant(s, terms, key=CM_KEY, at=kw.pop("at", T0), **kw)


def test_grant_records_artefact_events_state_and_ledger(sessions: sessionmaker[Session]) -> None:
    """A grant writes the artefact, granted+activated events, state and two ledger entries."""
    result = _grant(sessions)

    with sessions() as s:
        view = consent.get_consent(s, "c-1")
        entries = s.execute(select(LogEntryRow).order_by(LogEntryRow.seq)).scalars().all()
    assert [r.transition for r in result.receipts] == ["consent.granted", "consent.activated"]
    assert result.receipt.status == "ACTIVE"
    assert [r.ledger_seq for r in result.receipts] == [e.seq for e in entries]
    assert [e.kind for e in view.events] == ["granted", "activated"]
    assert view.state.status is Status.ACTIVE
    assert view.signed.hash == result.signed.hash == result.receipt.artefact_hash
    assert counts(sessions) == (1, 2, 1, 2)
    assert result.receipt.purposes[0] == ("credit_scoring", "https://w3id.org/dpv#CreditChecking")


def test_every_transition_appends_its_ledger_entry(sessions: sessionmaker[Session]) -> None:
    """pause, resume, use, revoke: one event and one ledger entry each, in order."""
    _grant(sessions)
    pub = CM_KEY.public_key()

    with sessions() as s, s.begin():
        consent.pause(s, "c-1", at=T0 + timedelta(hours=1), reason="holiday")
    with sessions() as s, s.begin():
        consent.resume(s, "c-1", at=T0 + timedelta(hours=2))
    with sessions() as s, s.begin():
        used = consent.record_use(
            s,
            "c-1",
            purpose="credit_scoring",
            categories=["margins"],
            at=T0 + timedelta(hours=3),
            consent_manager_key=pub,
        )
    with sessions() as s, s.begin():
        revoked = consent.revoke(s, "c-1", at=T0 + timedelta(hours=4))

    assert ledger_kinds(sessions) == [
        "consent.granted",
        "consent.activated",
        "consent.paused",
        "consent.resumed",
        "consent.used",
        "consent.revoked",
    ]
    assert used.status == "ACTIVE" and revoked.status == "REVOKED"
    with sessions() as s:
        state = consent.get_consent(s, "c-1").state
    assert (state.status, state.use_count, state.version) == (Status.REVOKED, 1, 6)


def test_rolled_back_transition_leaves_nothing(sessions: sessionmaker[Session]) -> None:
    """A revoke whose transaction rolls back leaves no event, state change or ledger entry."""
    _grant(sessions)
    before = counts(sessions)

    with sessions() as s:
        s.begin()
        consent.revoke(s, "c-1", at=T0 + timedelta(hours=1))
        s.rollback()

    assert counts(sessions) == before
    with sessions() as s:
        assert consent.get_consent(s, "c-1").state.status is Status.ACTIVE


_FOREIGN = Ed25519PrivateKey.generate()


def _bad_terms() -> list[tuple[str, str, Any]]:
    """(case, expected code, terms mapping or JSON) that parse_terms refuses."""
    return [
        ("malformed_json", "MALFORMED_JSON", '{"consent_id": "c-1",'),
        ("not_an_object", "MALFORMED", "[1, 2]"),
        ("missing_field", "MALFORMED", {k: v for k, v in terms_dict().items() if k != "purposes"}),
        ("unknown_field", "MALFORMED", terms_dict(colour="blue")),
        ("unknown_purpose", "UNKNOWN_PURPOSE", terms_dict(purposes=["marketing"])),
        ("unknown_category", "UNKNOWN_CATEGORY", terms_dict(categories=["secrets"])),
        ("bad_id", "INVALID_ID", terms_dict(merchant_id="m 1")),
        ("naive_time", "MALFORMED", terms_dict(consent_start="2026-06-01T00:00:00")),
        (
            "expiry_before_start",
            "EXPIRY_BEFORE_START",
            terms_dict(consent_expiry="2026-05-01T00:00:00Z"),
        ),
        ("range_inverted", "RANGE_INVALID", terms_dict(data_from="2026-01-01")),
        ("over_cap", "DURATION_OVER_CAP", terms_dict(consent_expiry="2027-06-03T00:00:00Z")),
        ("zero_uses", "MALFORMED", terms_dict(frequency={"uses": 0, "per": "day"})),
        ("bool_uses", "MALFORMED", terms_dict(frequency={"uses": True, "per": "day"})),
        ("bad_unit", "MALFORMED", terms_dict(frequency={"uses": 1, "per": "week"})),
    ]


@pytest.mark.parametrize(("case", "code", "bad"), _bad_terms(), ids=lambda v: str(v)[:30])
def test_bad_terms_are_refused_before_any_grant(case: str, code: str, bad: Any) -> None:
    """Malformed terms never become an artefact, so no grant can even be attempted."""
    with pytest.raises(InvalidConsentRequest) as info:
        parse_terms(bad)

    assert info.value.code == code, case


Attempt = Callable[[Session], object]


_NEW = make_terms("c-new", "m-new")  # an id no consent in the database has


def _grant_with(terms: Any = _NEW, at: Any = T0, **kw: Any) -> Attempt:
    return lambda s: consent.grant(s, terms, key=CM_KEY, at=at, **kw)


def _refusals_in_the_database() -> list[tuple[str, str, Attempt]]:
    """(case, expected code, an attempt on a database that holds c-0 and c-1 = m-0, m-1)."""
    good_sig = approve_artefact(_NEW, _FOREIGN)
    key = _FOREIGN.public_key()
    pub = CM_KEY.public_key()
    return [
        ("duplicate_id", "DUPLICATE_ID", _grant_with(make_terms("c-0", "m-0"))),
        ("duplicate_id_other_body", "DUPLICATE_ID", _grant_with(make_terms("c-0", "m-9"))),
        (
            "forged_merchant_signature",
            "SIGNATURE_INVALID",
            _grant_with(merchant_signature=good_sig[:-4] + "AAAA", merchant_key=key),
        ),
        (
            "truncated_merchant_signature",
            "SIGNATURE_INVALID",
            _grant_with(merchant_signature=good_sig[:40], merchant_key=key),
        ),
        (
            "wrong_merchant_key",
            "SIGNATURE_INVALID",
            _grant_with(merchant_signature=good_sig, merchant_key=pub),
        ),
        (
            "signature_over_other_terms",
            "SIGNATURE_INVALID",
            _grant_with(
                merchant_signature=approve_artefact(
                    make_terms("c-new", "m-new", data_life_days=1), _FOREIGN
                ),
                merchant_key=key,
            ),
        ),
        ("signature_without_key", "SIGNATURE_INVALID", _grant_with(merchant_signature=good_sig)),
        ("already_expired", "ALREADY_EXPIRED", _grant_with(at=T0 + timedelta(days=400))),
        (
            "supersede_unknown",
            "NOT_FOUND",
            _grant_with(make_terms("c-2", "m-0", version=2, supersedes="c-nope")),
        ),
        (
            "supersede_skipped_version",
            "SUPERSEDE_INVALID",
            _grant_with(make_terms("c-2", "m-0", version=3, supersedes="c-0")),
        ),
        (
            "supersede_other_merchant",
            "SUPERSEDE_INVALID",
            _grant_with(make_terms("c-2", "m-1", version=2, supersedes="c-0")),
        ),
        (
            "activate_with_foreign_signature",
            "SIGNATURE_INVALID",
            lambda s: consent.activate(
                s,
                "c-1",
                merchant_signature=approve_artefact(make_terms(), _FOREIGN),
                merchant_key=pub,
            ),
        ),
        (
            "record_use_under_wrong_key",
            "SIGNATURE_INVALID",
            lambda s: consent.record_use(
                s,
                "c-0",
                purpose="credit_scoring",
                categories=["margins"],
                at=T0 + timedelta(hours=1),
                consent_manager_key=key,
            ),
        ),
        (
            "record_uses_with_an_unknown_id",
            "NOT_FOUND",
            lambda s: consent.count_round_uses(
                s, ["c-0", "c-1", "c-zz"], at=T0 + timedelta(hours=1)
            ),
        ),
    ]


@pytest.mark.parametrize(
    ("case", "code", "attempt"), _refusals_in_the_database(), ids=lambda v: str(v)[:34]
)
def test_refusal_in_the_database_stores_nothing_even_if_committed(
    sessions: sessionmaker[Session], case: str, code: str, attempt: Attempt
) -> None:
    """Refused after reading the database, and the caller commits anyway: no row, no entry."""
    _grant(sessions, terms=make_terms("c-0", "m-0"))
    _grant(sessions, terms=make_terms("c-1", "m-1"), activate=False)
    before, states = counts(sessions), _states(sessions)

    # The block commits: the refusal is caught inside the transaction.
    with sessions() as s, s.begin(), pytest.raises(consent.ConsentError) as info:
        attempt(s)

    assert info.value.code == code, case
    assert counts(sessions) == before
    assert _states(sessions) == states


def _states(sessions: sessionmaker[Session]) -> list[tuple[Any, ...]]:
    with sessions() as s:
        rows = s.execute(select(StateRow).order_by(StateRow.consent_id)).scalars()
        return [(r.consent_id, r.status, r.version, r.use_count, r.last_used_at) for r in rows]


def test_duplicate_id_is_refused_and_nothing_stored(sessions: sessionmaker[Session]) -> None:
    """Granting a consent id that exists is DUPLICATE_ID, even with other terms."""
    _grant(sessions)
    before = counts(sessions)

    with pytest.raises(InvalidConsentRequest) as info:
        _grant(sessions, terms=make_terms(merchant_id="m-2"))

    assert info.value.code == "DUPLICATE_ID"
    assert counts(sessions) == before


def test_merchant_approval_is_kept(sessions: sessionmaker[Session]) -> None:
    """A valid merchant signature over the terms is stored with the merchant's key."""
    terms = make_terms()
    merchant = Ed25519PrivateKey.generate()

    _grant(
        sessions,
        terms=terms,
        merchant_signature=approve_artefact(terms, merchant),
        merchant_key=merchant.public_key(),
    )

    with sessions() as s:
        row = s.get(ArtefactRow, "c-1")
        assert row is not None and row.merchant_signature and row.merchant_key


def test_pending_until_activated(sessions: sessionmaker[Session]) -> None:
    """Without activation a consent is PENDING; activation with the merchant's approval."""
    terms = make_terms()
    merchant = Ed25519PrivateKey.generate()
    _grant(sessions, terms=terms, activate=False)

    with sessions() as s, s.begin():
        receipt = consent.activate(
            s,
            "c-1",
            at=T0 + timedelta(minutes=5),
            merchant_signature=approve_artefact(terms, merchant),
            merchant_key=merchant.public_key(),
        )

    assert receipt.status == "ACTIVE"
    assert ledger_kinds(sessions) == ["consent.granted", "consent.activated"]


@pytest.mark.parametrize(
    ("steps", "refused"),
    [
        (["revoke"], "resume"),
        (["revoke"], "pause"),
        (["revoke"], "revoke"),
        ([], "resume"),
        (["pause"], "pause"),
        ([], "activate"),
        ([], "reject"),
    ],
)
def test_illegal_transition_is_refused_and_nothing_stored(
    sessions: sessionmaker[Session], steps: list[str], refused: str
) -> None:
    """Transitions the status does not allow raise TransitionRefused and write nothing."""
    _grant(sessions)
    for i, step in enumerate(steps, 1):
        with sessions() as s, s.begin():
            getattr(consent, step)(s, "c-1", at=T0 + timedelta(minutes=i))
    before = counts(sessions)

    with pytest.raises(TransitionRefused) as info, sessions() as s, s.begin():
        getattr(consent, refused)(s, "c-1", at=T0 + timedelta(hours=1))

    assert info.value.code == "INVALID_TRANSITION"
    assert counts(sessions) == before


def test_unknown_consent_is_not_found(sessions: sessionmaker[Session]) -> None:
    """Transitions on an unknown id raise ConsentNotFound."""
    with pytest.raises(consent.ConsentNotFound), sessions() as s, s.begin():
        consent.pause(s, "nope", at=T0)


def test_event_out_of_time_order_is_refused(sessions: sessionmaker[Session]) -> None:
    """A transition dated before the consent's last event is OUT_OF_ORDER."""
    _grant(sessions)

    with pytest.raises(InvalidConsentRequest) as info, sessions() as s, s.begin():
        consent.pause(s, "c-1", at=T0 - timedelta(seconds=1))

    assert info.value.code == "OUT_OF_ORDER"


def test_expiry_sweep_records_expired_and_blocks_transitions(
    sessions: sessionmaker[Session],
) -> None:
    """expire_due records consent.expired for past-expiry consents only; then nothing moves."""
    _grant(sessions)
    _grant(sessions, terms=make_terms("c-2", "m-2", consent_expiry="2027-01-01T00:00:00Z"))
    after = T0 + timedelta(days=190)

    with pytest.raises(TransitionRefused), sessions() as s, s.begin():
        consent.pause(s, "c-1", at=after)
    with sessions() as s, s.begin():
        receipts = consent.expire_due(s, at=after)

    assert [r.consent_id for r in receipts] == ["c-1"]
    assert receipts[0].transition == "consent.expired"
    with sessions() as s:
        assert s.get(StateRow, "c-1").status == "EXPIRED"  # type: ignore[union-attr]
        assert s.get(StateRow, "c-2").status == "ACTIVE"  # type: ignore[union-attr]
    with pytest.raises(TransitionRefused), sessions() as s, s.begin():
        consent.resume(s, "c-1", at=after)


def test_supersede_replaces_terms(sessions: sessionmaker[Session]) -> None:
    """A version-2 artefact supersedes version 1: old SUPERSEDED, new ACTIVE, both in the ledger."""
    _grant(sessions)
    v2 = make_terms("c-1b", purposes=["credit_scoring"], version=2, supersedes="c-1")

    result = _grant(sessions, terms=v2, at=T0 + timedelta(days=1))

    assert [r.transition for r in result.receipts] == [
        "consent.superseded",
        "consent.granted",
        "consent.activated",
    ]
    with sessions() as s:
        assert consent.get_consent(s, "c-1").state.status is Status.SUPERSEDED


@pytest.mark.parametrize(
    "changes",
    [
        {"version": 3, "supersedes": "c-1"},
        {"version": 2, "supersedes": "c-1", "merchant_id": "m-other"},
    ],
)
def test_bad_supersede_is_refused(sessions: sessionmaker[Session], changes: dict[str, Any]) -> None:
    """A successor with a skipped version or another merchant is SUPERSEDE_INVALID."""
    _grant(sessions)
    before = counts(sessions)

    with pytest.raises(InvalidConsentRequest) as info:
        _grant(sessions, terms=make_terms("c-2", **changes), at=T0 + timedelta(days=1))

    assert info.value.code == "SUPERSEDE_INVALID"
    assert counts(sessions) == before


def test_list_filters_by_status_and_merchant(sessions: sessionmaker[Session]) -> None:
    """list_consents filters by merchant and status."""
    _grant(sessions)
    _grant(sessions, terms=make_terms("c-2", "m-2"))
    with sessions() as s, s.begin():
        consent.pause(s, "c-2", at=T0 + timedelta(hours=1))

    with sessions() as s:
        paused = consent.list_consents(s, status=Status.PAUSED)
        mine = consent.list_consents(s, merchant_id="m-1")

    assert [a.artefact.consent_id for a, _ in paused] == ["c-2"]
    assert [a.artefact.consent_id for a, _ in mine] == ["c-1"]


def test_tampered_state_row_is_detected(sessions: sessionmaker[Session]) -> None:
    """A state row edited behind the events' back is reported as an integrity error on read."""
    _grant(sessions)
    with sessions() as s, s.begin():
        s.execute(update(StateRow).values(status="PAUSED"))

    with pytest.raises(consent.ConsentIntegrityError), sessions() as s:
        consent.get_consent(s, "c-1")
