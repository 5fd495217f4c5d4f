"""The pure lifecycle: events folded into state, versions, terminal statuses, periods."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from consent import (
    ConsentEvent,
    ConsentIntegrityError,
    Frequency,
    Status,
    TransitionRefused,
    apply_event,
    fold_events,
)

AT = datetime(2026, 3, 15, 10, 30, tzinfo=UTC)
DAILY = Frequency(2, "day")


def _events(*kinds: str) -> list[ConsentEvent]:
    return [
        ConsentEvent("c-1", v, kind, AT + timedelta(hours=v))
        for v, kind in enumerate(("granted", *kinds), 1)
    ]


def test_fold_follows_the_transitions() -> None:
    """granted → activated → paused → resumed → used → revoked folds to REVOKED, one use."""
    state = fold_events(_events("activated", "paused", "resumed", "used", "revoked"), DAILY)

    assert (state.status, state.version, state.use_count) == (Status.REVOKED, 6, 1)


@pytest.mark.parametrize("terminal", ["revoked", "expired", "superseded"])
@pytest.mark.parametrize("after", ["activated", "paused", "resumed", "used", "revoked", "expired"])
def test_nothing_leaves_a_terminal_status(terminal: str, after: str) -> None:
    """No event applies after REVOKED, EXPIRED or SUPERSEDED."""
    with pytest.raises(TransitionRefused):
        fold_events(_events("activated", terminal, after), DAILY)


def test_rejected_is_terminal_and_only_from_pending() -> None:
    """A pending consent may be rejected; an active one may not, and nothing follows REJECTED."""
    assert fold_events(_events("rejected"), DAILY).status is Status.REJECTED
    with pytest.raises(TransitionRefused):
        fold_events(_events("activated", "rejected"), DAILY)
    with pytest.raises(TransitionRefused):
        fold_events(_events("rejected", "activated"), DAILY)


def test_paused_cannot_be_used() -> None:
    """A use while paused is refused by the fold itself."""
    with pytest.raises(TransitionRefused):
        fold_events(_events("activated", "paused", "used"), DAILY)


@pytest.mark.parametrize(
    "events",
    [
        [ConsentEvent("c-1", 2, "granted", AT)],
        [ConsentEvent("c-1", 1, "activated", AT)],
        [ConsentEvent("c-1", 1, "granted", AT), ConsentEvent("c-1", 3, "activated", AT)],
        [ConsentEvent("c-1", 1, "granted", AT), ConsentEvent("c-2", 2, "activated", AT)],
        [ConsentEvent("c-1", 1, "granted", AT), ConsentEvent("c-1", 2, "teleported", AT)],
        [],
    ],
    ids=["bad_first_version", "no_grant", "gap", "other_consent", "unknown_kind", "empty"],
)
def test_broken_histories_are_integrity_errors(events: list[ConsentEvent]) -> None:
    """Histories that skip versions, mix consents or start wrongly are integrity errors."""
    with pytest.raises(ConsentIntegrityError):
        fold_events(events, DAILY)


@pytest.mark.parametrize(
    ("unit", "start"),
    [
        ("hour", datetime(2026, 3, 15, 10, tzinfo=UTC)),
        ("day", datetime(2026, 3, 15, tzinfo=UTC)),
        ("month", datetime(2026, 3, 1, tzinfo=UTC)),
        ("year", datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_frequency_periods_are_utc_calendar_periods(unit: str, start: datetime) -> None:
    """Periods start on UTC calendar boundaries, whatever the input's offset."""
    shanghai = AT.astimezone(timezone(timedelta(hours=8)))

    assert Frequency(1, unit).period_start(shanghai) == start  # type: ignore[arg-type]


def test_uses_count_per_period() -> None:
    """Two uses in one day exhaust a 2-per-day limit; the next day starts again at zero."""
    state = fold_events(_events("activated", "used", "used"), DAILY)

    assert state.uses_in_period(DAILY, AT + timedelta(hours=5)) == 2
    assert state.uses_in_period(DAILY, AT + timedelta(days=1)) == 0
    nxt = apply_event(state, ConsentEvent("c-1", 5, "used", AT + timedelta(days=1)), DAILY)
    assert (nxt.period_uses, nxt.use_count) == (1, 3)
