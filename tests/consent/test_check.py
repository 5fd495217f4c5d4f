"""The check: every deny code, by the database check, the snapshot, and the cohort check."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

import consent
from consent import ConsentDenied, ConsentIndex, Decision, sign_artefact
from consent._models import ArtefactRow

from .factories import CM_KEY, CONSUMER, PROVIDER, T0, make_terms

NOW = T0 + timedelta(days=1)
Setup = Callable[[Session], None]


def _grant(s: Session, consent_id: str = "c-1", at: datetime = T0, **changes: Any) -> None:
    consent.grant(s, make_terms(consent_id, **changes), key=CM_KEY, at=at)


def _query(**changes: Any) -> consent.Use:
    query: dict[str, Any] = {
        "merchant_id": "m-1",
        "data_provider": PROVIDER,
        "data_consumer": CONSUMER,
        "purpose": "credit_scoring",
        "categories": ["margins", "turnover"],
        "at": NOW,
        "data_range": (date(2025, 3, 1), date(2025, 9, 30)),
    }
    query.update(changes)
    return consent.Use(**query)


def _use_up(s: Session) -> None:
    _grant(s, frequency={"uses": 2, "per": "day"})
    for minute in (2, 1):
        consent.record_use(
            s,
            "c-1",
            purpose="credit_scoring",
            categories=["margins"],
            at=NOW - timedelta(minutes=minute),
            consent_manager_key=CM_KEY.public_key(),
        )


def _tamper(s: Session) -> None:
    _grant(s)
    forged = sign_artefact(make_terms(purposes=["credit_scoring", "fraud_detection"]), _OTHER)
    s.flush()
    s.execute(update(ArtefactRow).values(token=forged.token))


_OTHER = Ed25519PrivateKey.generate()

CASES: list[tuple[str, Setup, dict[str, Any]]] = [
    ("NO_CONSENT", lambda s: None, {}),
    ("NO_CONSENT", lambda s: _grant(s, merchant_id="m-2"), {}),
    ("NO_CONSENT", lambda s: consent.grant(s, make_terms(), key=CM_KEY, at=T0, activate=False), {}),
    ("NOT_YET_VALID", lambda s: _grant(s, consent_start="2026-06-05T00:00:00Z"), {}),
    ("EXPIRED", lambda s: _grant(s), {"at": datetime.fromisoformat("2026-12-01T00:00:00+00:00")}),
    ("PAUSED", lambda s: (_grant(s), consent.pause(s, "c-1", at=T0)), {}),
    ("REVOKED", lambda s: (_grant(s), consent.revoke(s, "c-1", at=T0)), {}),
    ("PURPOSE_NOT_COVERED", lambda s: _grant(s), {"purpose": "fraud_detection"}),
    ("PURPOSE_NOT_COVERED", lambda s: _grant(s), {"purpose": "no_such_purpose"}),
    ("CATEGORY_NOT_COVERED", lambda s: _grant(s), {"categories": ["margins", "labour_cost"]}),
    (
        "RANGE_NOT_COVERED",
        lambda s: _grant(s),
        {"data_range": (date(2024, 12, 1), date(2025, 2, 1))},
    ),
    ("FREQUENCY_EXCEEDED", _use_up, {}),
    ("SIGNATURE_INVALID", _tamper, {}),
    (
        "SUPERSEDED",
        lambda s: (
            _grant(s),
            _grant(
                s,
                "c-2",
                at=T0 + timedelta(hours=1),
                purposes=["fraud_detection"],
                version=2,
                supersedes="c-1",
            ),
        ),
        {},
    ),
]


@pytest.mark.parametrize(("code", "setup", "changes"), CASES, ids=[c[0] for c in CASES])
def test_each_deny_code(
    sessions: sessionmaker[Session], code: str, setup: Setup, changes: dict[str, Any]
) -> None:
    """The DB check, the snapshot check and the cohort check agree on each denial."""
    with sessions() as s, s.begin():
        setup(s)
    query = _query(**changes)

    with sessions() as s:
        decision = consent.check(s, query, consent_manager_key=CM_KEY.public_key())
        index = ConsentIndex.load(s, consent_manager_key=CM_KEY.public_key())
    cohort = index.cohort(query.for_everyone())

    assert (decision.allowed, decision.code) == (False, code)
    assert index.check(query) == decision
    assert "m-1" not in cohort.merchant_ids.tolist()
    assert code in consent.DENY_CODES
    with pytest.raises(ConsentDenied) as info:
        decision.require()
    assert info.value.code == code


def test_allow_cites_consent_and_hash(sessions: sessionmaker[Session]) -> None:
    """An allowed use cites the consent id and artefact hash, in all three checks."""
    with sessions() as s, s.begin():
        signed = consent.grant(s, make_terms(), key=CM_KEY, at=T0).signed

    with sessions() as s:
        decision = consent.require(s, _query(), consent_manager_key=CM_KEY.public_key())
        index = ConsentIndex.load(s, consent_manager_key=CM_KEY.public_key())
    cohort = index.cohort(_query().for_everyone())

    assert decision == Decision.allow("c-1", signed.hash)
    assert index.check(_query()) == decision
    assert cohort.consent_ids.tolist() == ["c-1"]
    assert cohort.artefact_hashes.tolist() == [signed.hash]


def test_wrong_consent_manager_key_denies_every_use(sessions: sessionmaker[Session]) -> None:
    """Checked against another key, a genuine artefact is SIGNATURE_INVALID."""
    with sessions() as s, s.begin():
        _grant(s)

    with sessions() as s:
        decision = consent.check(s, _query(), consent_manager_key=_OTHER.public_key())

    assert decision.code == "SIGNATURE_INVALID"


def test_use_beyond_frequency_is_refused_and_not_counted(sessions: sessionmaker[Session]) -> None:
    """record_use past the limit raises FREQUENCY_EXCEEDED and writes nothing; next day is fine."""
    with sessions() as s, s.begin():
        _use_up(s)

    with pytest.raises(ConsentDenied) as info, sessions() as s, s.begin():
        consent.record_use(
            s,
            "c-1",
            purpose="credit_scoring",
            categories=["margins"],
            at=NOW,
            consent_manager_key=CM_KEY.public_key(),
        )
    with sessions() as s, s.begin():
        next_day = consent.record_use(
            s,
            "c-1",
            purpose="credit_scoring",
            categories=["margins"],
            at=NOW + timedelta(days=1),
            consent_manager_key=CM_KEY.public_key(),
        )

    assert info.value.code == "FREQUENCY_EXCEEDED"
    with sessions() as s:
        assert consent.get_consent(s, "c-1").state.use_count == 3
    assert next_day.transition == "consent.used"


def test_resume_restores_and_newest_allowed_consent_is_cited(
    sessions: sessionmaker[Session],
) -> None:
    """After pause+resume the use is allowed again; with two consents the newest is cited."""
    with sessions() as s, s.begin():
        _grant(s)
        consent.pause(s, "c-1", at=T0 + timedelta(minutes=1))
        consent.resume(s, "c-1", at=T0 + timedelta(minutes=2))
        _grant(s, "c-0", at=T0 + timedelta(minutes=3), created_at="2026-05-01T00:00:00Z")

    with sessions() as s:
        decision = consent.check(s, _query(), consent_manager_key=CM_KEY.public_key())

    assert decision.allowed and decision.consent_id == "c-1"


def test_empty_categories_is_bad_input() -> None:
    """A check that reads no category is refused as malformed, not silently allowed."""
    with pytest.raises(consent.InvalidConsentRequest) as info:
        consent.evaluate([], _query(categories=[]))

    assert info.value.code == "MALFORMED"


def test_inverted_data_range_is_malformed_not_a_denial(sessions: sessionmaker[Session]) -> None:
    """A range that ends before it starts is the caller's bug: MALFORMED from every check."""
    with sessions() as s, s.begin():
        _grant(s)
    query = _query(data_range=(date(2025, 9, 1), date(2025, 3, 1)))

    with sessions() as s:
        index = ConsentIndex.load(s, consent_manager_key=CM_KEY.public_key())
        with pytest.raises(consent.InvalidConsentRequest) as db:
            consent.check(s, query, consent_manager_key=CM_KEY.public_key())
    with pytest.raises(consent.InvalidConsentRequest) as snapshot:
        index.check(query)
    with pytest.raises(consent.InvalidConsentRequest) as cohort:
        index.cohort(query.for_everyone())
    with pytest.raises(consent.InvalidConsentRequest) as unknown:
        index.check(query.for_merchant("m-nobody"))

    assert {db.value.code, snapshot.value.code, cohort.value.code, unknown.value.code} == {
        "MALFORMED"
    }
