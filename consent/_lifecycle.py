"""Consent lifecycle as append-only events folded into current state.

    PENDING ──activated──▶ ACTIVE ◀──resumed── PAUSED
       │                     │ └────paused────▶  │
       ├──rejected──▶ REJECTED                    │
       └──────────┬──────────┴────────────────────┘
                  ├──revoked────▶ REVOKED
                  ├──expired────▶ EXPIRED
                  └──superseded─▶ SUPERSEDED   (a new artefact replaced the terms)

REVOKED, EXPIRED, REJECTED and SUPERSEDED are terminal. ``used`` events keep
the status (ACTIVE only) and advance the use counters. Batched uses
(``consent.count_round_uses``, one ledger entry per job round and node) advance the
stored counters without events, so stored counters may run ahead of this fold.
Each event carries the next version of its consent; :func:`apply` refuses
anything else, in the manner of eventsourcing's aggregate versioning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from ._artefact import Frequency
from ._errors import ConsentIntegrityError, TransitionRefused

__all__ = [
    "Status",
    "TERMINAL",
    "TRANSITIONS",
    "ConsentEvent",
    "ConsentState",
    "apply_event",
    "fold_events",
    "effective_status",
]


class Status(StrEnum):
    """Where a consent is in its lifecycle."""

    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"
    SUPERSEDED = "SUPERSEDED"


TERMINAL: Final = frozenset({Status.REVOKED, Status.EXPIRED, Status.REJECTED, Status.SUPERSEDED})
_LIVE: Final = frozenset({Status.PENDING, Status.ACTIVE, Status.PAUSED})

TRANSITIONS: Final[Mapping[str, tuple[frozenset[Status], Status | None]]] = {
    "activated": (frozenset({Status.PENDING}), Status.ACTIVE),
    "rejected": (frozenset({Status.PENDING}), Status.REJECTED),
    "paused": (frozenset({Status.ACTIVE}), Status.PAUSED),
    "resumed": (frozenset({Status.PAUSED}), Status.ACTIVE),
    "revoked": (_LIVE, Status.REVOKED),
    "expired": (_LIVE, Status.EXPIRED),
    "superseded": (_LIVE, Status.SUPERSEDED),
    "used": (frozenset({Status.ACTIVE}), None),  # None: the status stays
}
"""Event kind -> (statuses it may follow, status after). ``granted`` starts a history."""


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    """A recorded lifecycle fact: never edited, only appended."""

    consent_id: str
    version: int
    kind: str
    at: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConsentState:
    """A consent's current state, the fold of its events."""

    consent_id: str
    status: Status
    version: int
    use_count: int
    period_uses: int  # uses in the frequency period that contains last_used_at
    last_used_at: datetime | None
    updated_at: datetime

    def uses_in_period(self, frequency: Frequency, at: datetime) -> int:
        """Uses already made in the frequency period containing ``at``."""
        if self.last_used_at is None:
            return 0
        same = frequency.period_start(self.last_used_at) == frequency.period_start(at)
        return self.period_uses if same else 0


def apply_event(
    state: ConsentState | None, event: ConsentEvent, frequency: Frequency
) -> ConsentState:
    """The state after ``event``.

    Raises
    ------
    ConsentIntegrityError
        The event is not the next version of this consent.
    TransitionRefused
        The current status does not allow the event (e.g. anything after REVOKED).
    """
    expected = 1 if state is None else state.version + 1
    if event.version != expected or (state is not None and state.consent_id != event.consent_id):
        raise ConsentIntegrityError(
            f"event {event.kind} v{event.version} for {event.consent_id} is not the next "
            f"event (expected v{expected})"
        )
    if state is None:
        if event.kind != "granted":
            raise ConsentIntegrityError(f"history of {event.consent_id} must start with granted")
        return ConsentState(event.consent_id, Status.PENDING, 1, 0, 0, None, event.at)
    if event.kind not in TRANSITIONS:
        raise ConsentIntegrityError(f"unknown event kind {event.kind!r}")
    allowed, after = TRANSITIONS[event.kind]
    if state.status not in allowed:
        raise TransitionRefused(
            f"consent {state.consent_id} is {state.status}; cannot apply {event.kind}",
            code="INVALID_TRANSITION",
        )
    if after is None:  # a use
        period = state.uses_in_period(frequency, event.at)
        return ConsentState(
            state.consent_id,
            state.status,
            event.version,
            state.use_count + 1,
            period + 1,
            event.at,
            event.at,
        )
    return ConsentState(
        state.consent_id,
        after,
        event.version,
        state.use_count,
        state.period_uses,
        state.last_used_at,
        event.at,
    )


def fold_events(events: Iterable[ConsentEvent], frequency: Frequency) -> ConsentState:
    """Replay a consent's whole history into its current state."""
    state: ConsentState | None = None
    for event in events:
        state = apply_event(state, event, frequency)
    if state is None:
        raise ConsentIntegrityError("a consent needs at least its granted event")
    return state


def effective_status(status: Status, expiry: datetime, at: datetime) -> Status:
    """The status at ``at``: a live consent past its expiry is EXPIRED even before the sweep."""
    if status not in TERMINAL and at >= expiry:
        return Status.EXPIRED
    return status
