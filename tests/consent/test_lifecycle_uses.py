"""Batched use counting: count_round_uses advances the counters the checks read, set-based."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

import consent
from consent import (
    ConsentNotFound,
    InvalidConsentRequest,
    cohort_entries,
    consent_ids_hash,
    count_round_uses,
    get_consent,
)
from ledger import parse_canonical
from ledger._models import LogEntryRow

from .factories import CM_KEY, CONSUMER, PROVIDER, T0, counts, ledger_kinds, make_terms

QUERY = {
    "data_provider": PROVIDER,
    "data_consumer": CONSUMER,
    "purpose": "model_training",
    "categories": ["margins"],
}


def _use(at: datetime, merchant_id: str | None = None) -> consent.Use:
    return consent.Use(at=at, merchant_id=merchant_id, **QUERY)  # type: ignore[arg-type]


def _grant(sessions: sessionmaker[Session], uses: int = 2) -> None:
    with sessions() as s, s.begin():
        consent.grant(
            s, make_terms("c-1", "m-1", frequency={"uses": uses, "per": "day"}), key=CM_KEY, at=T0
        )
        consent.grant(
            s, make_terms("c-2", "m-2", frequency={"uses": 100, "per": "month"}), key=CM_KEY, at=T0
        )


def test_frequency_limit_drops_a_consent_from_the_cohort_after_n_uses(
    sessions: sessionmaker[Session],
) -> None:
    """A consent allowing 2 uses a day leaves the cohort after two rounds (FREQUENCY_EXCEEDED)."""
    _grant(sessions, uses=2)
    rounds = [T0 + timedelta(hours=1), T0 + timedelta(hours=2)]

    cohorts = []
    for r, at in enumerate(rounds):
        with sessions() as s, s.begin():
            ids = [
                e.consent_id
                for e in cohort_entries(s, _use(at), consent_manager_key=CM_KEY.public_key())
            ]
            cohorts.append(ids)
            count_round_uses(s, ids, at=at, job_id="job-1", round=r, data_provider=PROVIDER)
    later = T0 + timedelta(hours=3)
    with sessions() as s:
        after = cohort_entries(s, _use(later), consent_manager_key=CM_KEY.public_key())
        decision = consent.check(s, _use(later, "m-1"), consent_manager_key=CM_KEY.public_key())
        next_day = cohort_entries(
            s, _use(T0 + timedelta(days=1)), consent_manager_key=CM_KEY.public_key()
        )
        view = get_consent(s, "c-1")

    assert cohorts == [["c-1", "c-2"], ["c-1", "c-2"]]
    assert [e.consent_id for e in after] == ["c-2"]
    assert decision.code == "FREQUENCY_EXCEEDED"
    assert [e.consent_id for e in next_day] == ["c-1", "c-2"]  # a new period, a new allowance
    assert (view.state.use_count, view.state.period_uses, view.state.last_used_at) == (
        2,
        2,
        rounds[1],
    )


def test_one_ledger_entry_per_batch_with_a_hash_of_the_ids(sessions: sessionmaker[Session]) -> None:
    """A batch appends ONE consent.uses entry (job, round, count, ids hash) and no event rows."""
    _grant(sessions)
    before = counts(sessions)

    with sessions() as s, s.begin():
        entry = count_round_uses(
            s,
            ["c-2", "c-1", "c-2"],
            at=T0 + timedelta(hours=1),
            job_id="job-7",
            round=3,
            data_provider=PROVIDER,
            manifest_root="ab" * 32,
        )
    with sessions() as s:
        row = s.get(LogEntryRow, entry.seq) if entry else None

    artefacts, events, states, entries = counts(sessions)
    assert (artefacts, events, states, entries) == (before[0], before[1], before[2], before[3] + 1)
    assert ledger_kinds(sessions)[-1] == "consent.uses"
    assert row is not None
    body = parse_canonical(row.leaf_data)["body"]
    assert body == {
        "job_id": "job-7",
        "round": 3,
        "data_provider": PROVIDER,
        "manifest_root": "ab" * 32,
        "count": 2,
        "consent_ids_hash": consent_ids_hash(["c-1", "c-2"]),
    }


def test_unknown_or_out_of_order_uses_write_nothing(sessions: sessionmaker[Session]) -> None:
    """An unknown id or a use older than the last one is refused with a code; nothing is written."""
    _grant(sessions)
    with sessions() as s, s.begin():
        count_round_uses(s, ["c-1"], at=T0 + timedelta(hours=5))
    before = counts(sessions)

    with sessions() as s, s.begin(), pytest.raises(ConsentNotFound):
        count_round_uses(s, ["c-1", "c-nope"], at=T0 + timedelta(hours=6))
    with sessions() as s, s.begin(), pytest.raises(InvalidConsentRequest) as late:
        count_round_uses(s, ["c-2", "c-1"], at=T0 + timedelta(hours=4))
    with sessions() as s:
        states = [get_consent(s, c).state.use_count for c in ("c-1", "c-2")]
        empty = count_round_uses(s, [], at=T0 + timedelta(hours=7))

    assert late.value.code == "OUT_OF_ORDER"
    assert counts(sessions) == before and states == [1, 0] and empty is None


def test_single_use_after_batched_uses_keeps_the_history_consistent(
    sessions: sessionmaker[Session],
) -> None:
    """record_use after count_round_uses counts on top of the batch; get_consent still verifies."""
    _grant(sessions, uses=3)
    with sessions() as s, s.begin():
        count_round_uses(s, ["c-1"], at=T0 + timedelta(hours=1))
        count_round_uses(s, ["c-1"], at=T0 + timedelta(hours=2))
    with sessions() as s, s.begin():
        consent.record_use(
            s,
            "c-1",
            purpose="model_training",
            categories=["margins"],
            at=T0 + timedelta(hours=3),
            consent_manager_key=CM_KEY.public_key(),
        )
    with sessions() as s, s.begin(), pytest.raises(consent.ConsentDenied) as denied:
        consent.record_use(
            s,
            "c-1",
            purpose="model_training",
            categories=["margins"],
            at=T0 + timedelta(hours=4),
            consent_manager_key=CM_KEY.public_key(),
        )
    with sessions() as s:
        view = get_consent(s, "c-1")

    assert (view.state.use_count, view.state.period_uses) == (3, 3)
    assert denied.value.code == "FREQUENCY_EXCEEDED"
