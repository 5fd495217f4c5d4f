"""The snapshot's vectorised cohort check agrees with the pure check on random consents."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent import (
    CATEGORIES,
    PURPOSES,
    ConsentArtefact,
    ConsentIndex,
    ConsentRecord,
    ConsentState,
    Frequency,
    InvalidConsentRequest,
    SignedArtefact,
    Status,
    Use,
    evaluate,
)

BASE = datetime(2026, 6, 1, tzinfo=UTC)
CATS = sorted(CATEGORIES)[:4]
PURPS = sorted(PURPOSES)[:3]
MERCHANTS = ["m-a", "m-b", "m-c"]
PARTIES = ["p-1", "p-2"]


@st.composite
def records(draw: st.DrawFn) -> list[ConsentRecord]:
    """A few consents over a few merchants, with every status and field mixed."""
    out = []
    for i in range(draw(st.integers(0, 9))):
        start = BASE + timedelta(days=draw(st.integers(-3, 1)))
        frm = date(2025, 1, 1) + timedelta(days=draw(st.integers(0, 60)))
        unit = draw(st.sampled_from(["hour", "day", "month", "year"]))
        last = draw(st.none() | st.integers(-48, 48).map(lambda h: BASE + timedelta(hours=h)))
        artefact = ConsentArtefact(
            consent_id=f"c-{i}",
            merchant_id=draw(st.sampled_from(MERCHANTS)),
            data_provider=draw(st.sampled_from(PARTIES[:1] * 3 + PARTIES)),
            data_consumer=draw(st.sampled_from(PARTIES[1:] * 3 + PARTIES)),
            purposes=tuple(sorted(draw(st.sets(st.sampled_from(PURPS), min_size=2)))),
            categories=tuple(sorted(draw(st.sets(st.sampled_from(CATS), min_size=2)))),
            data_from=frm,
            data_to=frm + timedelta(days=draw(st.integers(0, 120))),
            frequency=Frequency(draw(st.integers(1, 3)), unit),
            data_life_days=30,
            consent_start=start,
            consent_expiry=start + timedelta(days=draw(st.integers(2, 8))),
            created_at=BASE + timedelta(minutes=draw(st.integers(0, 5))),
            version=draw(st.integers(1, 3)),
        )
        state = ConsentState(
            consent_id=artefact.consent_id,
            status=draw(st.sampled_from([Status.ACTIVE] * 6 + list(Status))),
            version=3,
            use_count=5,
            period_uses=draw(st.integers(0, 3)),
            last_used_at=last,
            updated_at=BASE,
        )
        signed = SignedArtefact(artefact, f"token-{i}", f"{i:064x}")
        out.append(ConsentRecord(signed, state, draw(st.sampled_from([True] * 5 + [False]))))
    return out


@settings(max_examples=120, deadline=None)
@given(
    recs=records(),
    provider=st.sampled_from(PARTIES[:1] * 3 + PARTIES),
    consumer=st.sampled_from(PARTIES[1:] * 3 + PARTIES),
    purpose=st.sampled_from(PURPS),
    cats=st.sets(st.sampled_from(CATS), min_size=1, max_size=2),
    at_hours=st.integers(-30, 150),
    rng=st.none() | st.tuples(st.integers(40, 80), st.integers(50, 90)),
)
def test_cohort_equals_pure_check(
    recs: list[ConsentRecord],
    provider: str,
    consumer: str,
    purpose: str,
    cats: set[str],
    at_hours: int,
    rng: tuple[int, int] | None,
) -> None:
    """For every merchant: in the cohort iff the pure check allows, citing the same consent.

    An inverted data range is malformed input for all three, never a denial.
    """
    at = BASE + timedelta(hours=at_hours)
    data_range = None
    if rng is not None:
        data_range = (date(2025, 1, 1) + timedelta(rng[0]), date(2025, 1, 1) + timedelta(rng[1]))
    index = ConsentIndex(recs)
    query = Use(
        data_provider=provider,
        data_consumer=consumer,
        purpose=purpose,
        categories=sorted(cats),
        at=at,
        data_range=data_range,
    )

    if data_range is not None and data_range[0] > data_range[1]:
        for run in (
            lambda: index.cohort(query),
            lambda: index.check(query.for_merchant("m-a")),
            lambda: evaluate(recs, query.for_merchant("m-a")),
        ):
            with pytest.raises(InvalidConsentRequest) as info:
                run()
            assert info.value.code == "MALFORMED"
        return
    cohort = index.cohort(query)
    expected = {}
    for merchant in MERCHANTS:
        decision = evaluate(recs, query.for_merchant(merchant))
        assert index.check(query.for_merchant(merchant)) == decision
        if decision.allowed:
            expected[merchant] = decision.consent_id

    assert dict(zip(cohort.merchant_ids.tolist(), cohort.consent_ids.tolist(), strict=True)) == (
        expected
    )
    assert cohort.merchant_ids.tolist() == sorted(expected)


def test_cohort_restricted_to_candidates() -> None:
    """``merchants=`` limits the cohort to the job's candidates."""
    recs = [
        ConsentRecord(
            SignedArtefact(
                ConsentArtefact(
                    f"c-{m}",
                    m,
                    "p-1",
                    "p-2",
                    ("credit_scoring",),
                    ("margins",),
                    date(2025, 1, 1),
                    date(2025, 12, 31),
                    Frequency(1, "day"),
                    30,
                    BASE,
                    BASE + timedelta(days=30),
                    BASE,
                ),
                "t",
                "0" * 64,
            ),
            ConsentState(f"c-{m}", Status.ACTIVE, 2, 0, 0, None, BASE),
        )
        for m in MERCHANTS
    ]
    index = ConsentIndex(recs)

    use = Use(
        data_provider="p-1",
        data_consumer="p-2",
        purpose="credit_scoring",
        categories=["margins"],
        at=BASE + timedelta(days=1),
    )
    cohort = index.cohort(use, merchants=["m-c", "m-a", "m-unknown"])

    assert cohort.merchant_ids.tolist() == ["m-a", "m-c"]
    assert [e.merchant_id for e in cohort.manifest_entries()] == ["m-a", "m-c"]
