"""The column-at-a-time manifest paths agree with the per-entry definitions they speed up."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent import InvalidConsentRequest, ManifestEntry, ManifestRejected, build_manifest
from consent._entries import encode_entries, parse_entries
from consent._entries_encode import _encode_one_by_one
from consent._entries_parse import _parse_one_by_one

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ZONES = [
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=-8)),
    timezone(timedelta(seconds=1, microseconds=5)),  # sub-second offsets exist since 3.7
]


def _good_entry(i: int, **changes: Any) -> ManifestEntry:
    fields: dict[str, Any] = {
        "merchant_id": f"m{i:03d}",
        "consent_id": f"c-{i}",
        "artefact_hash": f"{i:064x}",
        "consent_start": NOW - timedelta(days=i + 1, microseconds=i),
        "consent_expiry": NOW + timedelta(days=i + 1),
        "data_from": date(2025, 1, 1),
        "data_to": date(2025, 1, 1) + timedelta(days=i),
        "label": None if i % 3 == 0 else i % 2,
        "data_life_days": None if i % 4 == 0 else 30 * i,
    }
    fields.update(changes)
    return ManifestEntry(**fields)


LATE = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))  # year 10000 in UTC
BAD: dict[str, list[Any]] = {  # one wrong value per kind of mistake, by field
    "merchant_id": ["m000", 'bad"id', "", 7],
    "consent_id": ["c 1", "x" * 129],
    "artefact_hash": ["AB" * 32, "a" * 63, "g" * 64, None],
    "consent_start": [datetime(2026, 1, 1), date(2026, 1, 1), NOW + timedelta(hours=1)],
    "consent_expiry": [NOW - timedelta(days=400), NOW, LATE],
    "data_from": [datetime(2025, 1, 1, tzinfo=UTC), date(2026, 12, 31), "2025-01-01"],
    "data_to": [date(2024, 1, 1), None],
    "label": [True, 1.0, "1", 2**53, -(2**53)],
    "data_life_days": [False, -1, 2.0, "30", 2**53],
}


@st.composite
def cohorts(draw: st.DrawFn) -> list[ManifestEntry]:
    """Up to 6 entries, valid in varied ways (zones, bounds, ranges), a few with one bad field."""
    zone = st.sampled_from(ZONES)
    span = st.integers(1, 10**14)  # microseconds, up to ~3 years
    batch = []
    for i in range(draw(st.integers(0, 6))):
        start = draw(st.dates(date(1, 1, 1), date(2025, 12, 31)))
        changes: dict[str, Any] = {
            "consent_start": (NOW - timedelta(microseconds=draw(span))).astimezone(draw(zone)),
            "consent_expiry": (NOW + timedelta(microseconds=draw(span))).astimezone(draw(zone)),
            "data_from": start,
            "data_to": start + timedelta(days=draw(st.integers(0, 400))),
            "label": draw(st.none() | st.integers(-(2**53) + 1, 2**53 - 1)),
            "data_life_days": draw(st.none() | st.integers(0, 2**53 - 1)),
        }
        if draw(st.integers(0, 7)) == 0:
            field = draw(st.sampled_from(sorted(BAD)))
            changes[field] = draw(st.sampled_from(BAD[field]))
        batch.append(_good_entry(i, **changes))
    return batch


def edited_lines(batch: list[ManifestEntry], edits: list[tuple[int, int]]) -> bytes:
    """The cohort's entry lines (none if it does not encode) with the given bytes changed."""
    try:
        lines = encode_entries(batch)
    except InvalidConsentRequest:
        lines = []
    blob = bytearray(b"\n".join(lines))
    for position, byte in edits:
        if blob:
            blob[position % len(blob)] = byte
    return bytes(blob)


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    """What ``fn`` returns, or the code and message of the refusal it raises."""
    try:
        return "ok", fn(*args)
    except (InvalidConsentRequest, ManifestRejected) as exc:
        return exc.code, str(exc)


@settings(max_examples=300, deadline=None)
@given(
    batch=cohorts(),
    issued=st.none() | st.sampled_from([NOW, NOW.astimezone(ZONES[1])]),
)
def test_column_encoding_equals_per_entry_encoding(
    batch: list[ManifestEntry], issued: datetime | None
) -> None:
    """Same bytes for good entries, the same refusal (code and message) for bad ones."""
    ordered = sorted(batch, key=lambda e: str(e.merchant_id))  # 7 is among the bad ids

    fast = _outcome(encode_entries, ordered, issued)
    slow = _outcome(_encode_one_by_one, ordered, issued)

    assert fast == slow


@settings(max_examples=300, deadline=None)
@given(
    batch=cohorts(),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(list(b'0159aZ"[]{},:-.T\n \xc3'))),
        max_size=2,
    ),
    offset=st.integers(-3, 3),
)
def test_column_parsing_equals_per_line_parsing(
    batch: list[ManifestEntry], edits: list[tuple[int, int]], offset: int
) -> None:
    """Same entries for good lines, the same refusal for lines with bytes changed."""
    blob = edited_lines(batch, edits)
    now = NOW + timedelta(days=offset)
    count = blob.count(b"\n") + 1 if blob else 0

    fast = _outcome(parse_entries, blob, count, now, timedelta(seconds=60))
    slow = _outcome(_parse_one_by_one, blob, now, timedelta(seconds=60))

    assert fast == (slow if slow[0] != "ok" else ("ok", tuple(slow[1])))


def test_time_beyond_year_9999_in_utc_is_refused() -> None:
    """An aware time that is year 10000 in UTC has no canonical form: ENTRY_INVALID, no crash."""
    entry = _good_entry(1, consent_expiry=LATE)

    with pytest.raises(InvalidConsentRequest) as info:
        build_manifest(
            job_id="job-1",
            round=1,
            data_provider="isv-a",
            data_consumer="lender-1",
            purpose="model_training",
            categories=["margins"],
            entries=[entry],
            issued_at=NOW,
            ttl=timedelta(minutes=10),
        )

    assert info.value.code == "ENTRY_INVALID"
