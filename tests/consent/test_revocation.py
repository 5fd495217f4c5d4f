"""Revocation between rounds: absent from the next manifest, the older round's manifest refused."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session, sessionmaker

import consent
from consent import (
    ManifestRejected,
    ManifestReplayGuard,
    build_manifest,
    cohort_entries,
    sign_manifest,
    verify_manifest,
)

from .factories import CM_KEY, CONSUMER, PROVIDER, T0, make_terms

GATEWAY = Ed25519PrivateKey.generate()
TTL = timedelta(minutes=10)


def _round(sessions: sessionmaker[Session], round_: int, at: datetime) -> bytes:
    """What the gateway does per round: fresh snapshot, cohort check, manifest, signature."""
    with sessions() as s:
        use = consent.Use(
            data_provider=PROVIDER,
            data_consumer=CONSUMER,
            purpose="model_training",
            categories=["margins"],
            at=at,
            data_range=(date(2025, 1, 1), date(2025, 6, 30)),
        )
        entries = cohort_entries(
            s, use, labels={"m-1": 0, "m-2": 1}, consent_manager_key=CM_KEY.public_key()
        )
    manifest = build_manifest(
        job_id="job-7",
        round=round_,
        data_provider=PROVIDER,
        data_consumer=CONSUMER,
        purpose="model_training",
        categories=["margins"],
        entries=entries,
        issued_at=at,
        ttl=TTL,
    )
    return sign_manifest(manifest, GATEWAY)


def test_revoked_merchant_leaves_next_round_and_stale_manifest_is_refused(
    sessions: sessionmaker[Session],
) -> None:
    """Revoke m-2 between rounds: round 2 omits it; round 1's manifest, still inside its own
    validity window, is refused once round 2 was accepted (STALE_ROUND, not EXPIRED)."""
    with sessions() as s, s.begin():
        for i in (1, 2, 3):
            consent.grant(s, make_terms(f"c-{i}", f"m-{i}"), key=CM_KEY, at=T0)
    guard = ManifestReplayGuard()
    round1_at = T0 + timedelta(hours=1)
    round1 = _round(sessions, 1, round1_at)
    first = verify_manifest(
        round1,
        gateway_key=GATEWAY.public_key(),
        data_provider=PROVIDER,
        now=round1_at,
        replay_guard=guard,
    )

    revoked_at = round1_at + timedelta(minutes=5)
    with sessions() as s, s.begin():
        consent.revoke(s, "c-2", at=revoked_at, reason="merchant request")
    round2_at = revoked_at + timedelta(minutes=1)  # well inside round 1's TTL
    round2 = _round(sessions, 2, round2_at)
    second = verify_manifest(
        round2,
        gateway_key=GATEWAY.public_key(),
        data_provider=PROVIDER,
        now=round2_at,
        replay_guard=guard,
    )
    with pytest.raises(ManifestRejected) as stale:
        verify_manifest(
            round1,
            gateway_key=GATEWAY.public_key(),
            data_provider=PROVIDER,
            now=round2_at,
            replay_guard=guard,
        )
    with sessions() as s:
        use = consent.Use(
            merchant_id="m-2",
            data_provider=PROVIDER,
            data_consumer=CONSUMER,
            purpose="model_training",
            categories=["margins"],
            at=revoked_at,
        )
        after = consent.check(s, use, consent_manager_key=CM_KEY.public_key())

    assert [e.merchant_id for e in first.entries] == ["m-1", "m-2", "m-3"]
    assert [e.label for e in first.entries] == [0, 1, None]
    assert [e.merchant_id for e in second.entries] == ["m-1", "m-3"]
    assert round2_at < first.valid_until  # round 1 has not expired: the round rule refuses it
    assert stale.value.code == "STALE_ROUND"
    assert after.code == "REVOKED"


def test_cohort_entries_without_key_match_verified(sessions: sessionmaker[Session]) -> None:
    """On an untampered database the unverified index's cohort equals the verified one."""
    with sessions() as s, s.begin():
        for i in (1, 2):
            consent.grant(s, make_terms(f"c-{i}", f"m-{i}"), key=CM_KEY, at=T0)
    query = consent.Use(
        data_provider=PROVIDER,
        data_consumer=CONSUMER,
        purpose="credit_scoring",
        categories=["turnover"],
        at=T0 + timedelta(days=2),
    )

    with sessions() as s:
        verified = cohort_entries(s, query, consent_manager_key=CM_KEY.public_key())
        trusted = (
            consent.ConsentIndex.load(s, consent_manager_key=None, data_provider=PROVIDER)
            .cohort(query)
            .manifest_entries(None)
        )
        wrong_key = cohort_entries(s, query, consent_manager_key=GATEWAY.public_key())

    assert [e.merchant_id for e in verified] == ["m-1", "m-2"]
    assert trusted == verified
    assert wrong_key == []
