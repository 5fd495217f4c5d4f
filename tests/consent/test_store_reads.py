"""How the store reads: verification memory, the frequency-unit column, the sweep's one query."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import event, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

import consent
from consent import ConsentIndex, ReceiptNotice, count_round_uses, sign_artefact
from consent import _reads as store
from consent._models import ArtefactRow
from consent._verified import VERIFIED, VerifiedArtefacts

from .factories import CM_KEY, T0, make_terms


def _grant_many(sessions: sessionmaker[Session], n: int, **changes: Any) -> None:
    with sessions() as s, s.begin():
        for i in range(n):
            consent.grant(s, make_terms(f"c-{i}", f"m-{i}", **changes), key=CM_KEY, at=T0)


@contextmanager
def _selects(engine: Engine) -> Iterator[list[str]]:
    """The SELECT statements the engine runs inside the block."""
    seen: list[str] = []

    def listen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listen)


def test_snapshot_verifies_each_token_once_per_process(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second snapshot of unchanged consents verifies no signature; both see the same terms."""
    _grant_many(sessions, 3)
    VERIFIED.clear()
    calls: list[str] = []
    real = store.verify_artefact
    monkeypatch.setattr(store, "verify_artefact", lambda t, k: calls.append(t) or real(t, k))

    with sessions() as s:
        first = ConsentIndex.load(s, consent_manager_key=CM_KEY.public_key())
        second = ConsentIndex.load(s, consent_manager_key=CM_KEY.public_key())

    assert len(calls) == 3
    assert [r.signed for r in first._records] == [r.signed for r in second._records]
    assert all(r.signature_ok for r in second._records)


def test_token_edited_after_verification_is_signature_invalid(
    sessions: sessionmaker[Session],
) -> None:
    """The memory is keyed by the token's hash: a token swapped in the database fails afresh."""
    _grant_many(sessions, 1)
    query = consent.Use(
        merchant_id="m-0",
        data_provider="isv-a",
        data_consumer="lender-1",
        purpose="credit_scoring",
        categories=["margins"],
        at=T0 + timedelta(days=1),
    )
    with sessions() as s:
        # verified and remembered
        before = consent.check(s, query, consent_manager_key=CM_KEY.public_key())
    forged = sign_artefact(make_terms("c-0", "m-0"), Ed25519PrivateKey.generate())
    with sessions() as s, s.begin():
        s.execute(update(ArtefactRow).values(token=forged.token))

    with sessions() as s:
        after = consent.check(s, query, consent_manager_key=CM_KEY.public_key())

    assert before.allowed
    assert after.code == "SIGNATURE_INVALID"


def test_verification_memory_grows_to_the_snapshot() -> None:
    """A snapshot larger than the capacity raises it, so its own entries are never evicted."""
    memory = VerifiedArtefacts(capacity=2)
    terms = make_terms()

    memory.reserve(5)
    for i in range(5):
        memory.put(f"{i:064x}", CM_KEY.public_key(), terms)

    assert memory.capacity == 5
    assert len(memory) == 5
    assert memory.get("x", CM_KEY.public_key())[1] is None


def test_verification_memory_evicts_least_recently_used() -> None:
    """Past its capacity the memory drops the entry used longest ago, not the one just read."""
    memory = VerifiedArtefacts(capacity=2)
    terms = make_terms()
    key = CM_KEY.public_key()
    tokens = ["token-a", "token-b", "token-c"]
    digests = [memory.get(t, key)[0] for t in tokens]

    memory.put(digests[0], key, terms)
    memory.put(digests[1], key, terms)
    memory.get(tokens[0], key)  # a is now the most recently used
    memory.put(digests[2], key, terms)

    assert [memory.get(t, key)[1] is not None for t in tokens] == [True, False, True]


def test_record_uses_reads_the_unit_column_not_the_tokens(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting a round's uses parses no signed token; the stored unit decides the period."""
    _grant_many(sessions, 3, frequency={"uses": 5, "per": "month"})

    def unreadable(token: str) -> None:
        raise AssertionError("count_round_uses parsed a token")

    monkeypatch.setattr(store, "read_artefact_unverified", unreadable)
    with sessions() as s, s.begin():
        count_round_uses(s, ["c-0", "c-1", "c-2"], at=T0 + timedelta(days=1))
    with sessions() as s, s.begin():
        count_round_uses(s, ["c-0"], at=T0 + timedelta(days=3))  # same month: second use
    monkeypatch.undo()

    with sessions() as s:
        states = [consent.get_consent(s, f"c-{i}").state for i in range(3)]
        units = [s.get(ArtefactRow, f"c-{i}").frequency_unit for i in range(3)]  # type: ignore[union-attr]
    assert [(st.use_count, st.period_uses) for st in states] == [(2, 2), (1, 1), (1, 1)]
    assert units == ["month"] * 3


def test_expiry_sweep_finds_and_locks_due_consents_in_one_query(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    """Five due consents cost one SELECT (… FOR UPDATE on PostgreSQL), not two per consent."""
    _grant_many(sessions, 5)
    after = T0 + timedelta(days=200)

    with _selects(engine) as selects, sessions() as s, s.begin():
        receipts = consent.expire_due(s, at=after)

    consent_selects = [q for q in selects if "consent_state" in q]
    assert [r.consent_id for r in receipts] == [f"c-{i}" for i in range(5)]
    assert len(consent_selects) == 1
    if engine.dialect.name == "postgresql":
        assert "FOR UPDATE OF consent_state" in consent_selects[0]


def test_receipt_states_the_notice_and_data_life(sessions: sessionmaker[Session]) -> None:
    """A receipt carries the caller's notice (Kantara fields) and the signed data_life_days."""
    notice = ReceiptNotice(
        jurisdiction="HK",
        language="en",
        policy_url="https://lender.example/privacy",
        controller_contact="dpo@lender.example",
        collection_method="mobile app, merchant-signed approval",
    )

    with sessions() as s, s.begin():
        grant = consent.grant(s, make_terms(data_life_days=45), key=CM_KEY, at=T0, notice=notice)
        paused = consent.pause(s, "c-1", at=T0 + timedelta(hours=1))

    body = grant.receipt.to_json()
    assert {k: body[k] for k in ("jurisdiction", "language", "policy_url")} == {
        "jurisdiction": "HK",
        "language": "en",
        "policy_url": "https://lender.example/privacy",
    }
    assert body["controller_contact"] == "dpo@lender.example"
    assert body["collection_method"] == "mobile app, merchant-signed approval"
    assert body["data_life_days"] == 45
    assert paused.notice == consent._receipt.DEFAULT_NOTICE
    assert paused.to_json()["jurisdiction"] == "CN"


def test_blank_notice_field_is_refused_at_construction() -> None:
    """A notice that names no policy is refused when it is made, not on the first receipt."""
    with pytest.raises(ValueError, match="policy_url"):
        ReceiptNotice(policy_url=" ")


def test_cohort_entries_carry_data_life_days(sessions: sessionmaker[Session]) -> None:
    """Manifest entries tell the node how long it may keep derived data (the signed term)."""
    with sessions() as s, s.begin():
        consent.grant(s, make_terms("c-1", "m-1", data_life_days=30), key=CM_KEY, at=T0)
        consent.grant(s, make_terms("c-2", "m-2", data_life_days=0), key=CM_KEY, at=T0)

    with sessions() as s:
        use = consent.Use(
            data_provider="isv-a",
            data_consumer="lender-1",
            purpose="model_training",
            categories=["margins"],
            at=T0 + timedelta(days=1),
        )
        entries = consent.cohort_entries(s, use, consent_manager_key=CM_KEY.public_key())

    assert [(e.merchant_id, e.data_life_days) for e in entries] == [("m-1", 30), ("m-2", 0)]
