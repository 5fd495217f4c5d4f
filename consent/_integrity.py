"""A consent's status proven from the log: signed artefact plus logged transitions.

``consent_state`` is a convenience: the truth is the ledger. Every transition
is a ``consent.<kind>`` log entry (written in the same transaction as its
``consent_events`` row) whose body names the consent, its artefact hash, the
event version and the status after it. Before a check uses a consent,
:func:`derive_records` refolds those entries and compares:

* each event row's log entry exists, hashes to its recorded leaf hash, and its
  body names this consent, this event's version and kind, the status after it,
  and the artefact hash of the signed token being checked;
* the statuses follow :data:`consent.TRANSITIONS` from ``granted`` (PENDING);
* the folded (status, version) equals the ``consent_state`` row.

A record whose signature does not verify is left as it is: it is denied
``SIGNATURE_INVALID`` before its status is looked at. Any difference raises
:class:`~consent.ConsentIntegrityError` (code
``INTEGRITY``) naming the consent and the log index: the check refuses rather
than decide on a row the log does not support. Deleting trailing events *and*
rewinding the row is caught by :func:`verify_consent_log`, which folds every
``consent.*`` entry of the log (``fedgate ledger verify`` runs it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from ledger._models import LogEntryRow

from ._check import ConsentRecord
from ._errors import ConsentIntegrityError
from ._lifecycle import TRANSITIONS, Status
from ._models import EventRow, StateRow

__all__ = ["IntegrityFailure", "derive_records", "verify_consent_log"]

_CHUNK = 500
_BATCH = 10_000
USES_KIND = "consent.uses"


@dataclass(frozen=True, slots=True)
class IntegrityFailure:
    """The first consent whose stored state the log does not prove."""

    code: str
    index: int | None
    consent_id: str
    message: str


def _refuse(consent_id: str, seq: int | None, why: str) -> ConsentIntegrityError:
    where = "" if seq is None else f" (log index {seq})"
    return ConsentIntegrityError(
        f"consent {consent_id}: {why}{where}; the stored state is not what the log proves",
        code="INTEGRITY",
    )


def _next_status(status: Status | None, kind: str) -> Status | None:
    """The status after ``kind`` from ``status``; None when the transition is impossible."""
    if status is None:
        return Status.PENDING if kind == "granted" else None
    rule = TRANSITIONS.get(kind)
    if rule is None or status not in rule[0]:
        return None
    return status if rule[1] is None else rule[1]


def _body(leaf: bytes) -> tuple[str, dict[str, Any]] | None:
    try:
        value = json.loads(leaf)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("body"), dict):
        return None
    return str(value.get("kind")), value["body"]


def _derive(record: ConsentRecord, events: Sequence[Any]) -> ConsentRecord:
    if not record.signature_ok:
        return record  # denied SIGNATURE_INVALID whatever its status: nothing to prove
    cid = record.signed.artefact.consent_id
    status: Status | None = None
    version = 0
    for ev in events:
        seq = int(ev.ledger_seq)
        if ev.leaf_data is None:
            raise _refuse(cid, seq, f"event v{ev.version} ({ev.kind}) has no log entry")
        leaf = bytes(ev.leaf_data)
        if hashlib.sha256(b"\x00" + leaf).digest() != bytes(ev.leaf_hash):
            raise _refuse(cid, seq, "the log entry does not hash to its leaf hash")
        parsed = _body(leaf)
        if parsed is None:
            raise _refuse(cid, seq, "the log entry is not a consent entry")
        kind, body = parsed
        expected = {
            "consent_id": cid,
            "event_version": ev.version,
            "status": ev.status,
            "artefact_hash": record.signed.hash,
        }
        wrong = [k for k, v in expected.items() if body.get(k) != v]
        if kind != f"consent.{ev.kind}" or wrong:
            raise _refuse(cid, seq, f"the log entry disagrees on {wrong or ['kind']}")
        after = _next_status(status, ev.kind)
        if ev.version != version + 1 or after is None or after.value != ev.status:
            raise _refuse(cid, seq, f"event v{ev.version} ({ev.kind}) does not follow the log")
        status, version = after, ev.version
    state = record.state
    if status is None:
        raise _refuse(cid, None, "no logged events")
    if (status, version) != (state.status, state.version):
        raise _refuse(
            cid,
            int(events[-1].ledger_seq),
            f"row says {state.status.value} v{state.version}, the log {status.value} v{version}",
        )
    return replace(record, state=replace(state, status=status))


_EVENTS = (
    select(
        EventRow.consent_id,
        EventRow.version,
        EventRow.kind,
        EventRow.status,
        EventRow.ledger_seq,
        LogEntryRow.leaf_data,
        LogEntryRow.leaf_hash,
    )
    .outerjoin(LogEntryRow, LogEntryRow.seq == EventRow.ledger_seq)
    .where(EventRow.consent_id.in_(bindparam("ids", expanding=True)))
    .order_by(EventRow.consent_id, EventRow.version)
)
"""Built once: a consent check pays for running it, not for constructing it."""


def derive_records(session: Session, records: Sequence[ConsentRecord]) -> list[ConsentRecord]:
    """``records`` with each status refolded from the log; refuse any the log contradicts.

    One query per 500 consents (events joined to their log entries).

    Raises
    ------
    ConsentIntegrityError
        ``code="INTEGRITY"`` for the first consent whose row or events the log
        does not prove.
    """
    by_id: dict[str, list[Any]] = {}
    ids = [r.signed.artefact.consent_id for r in records if r.signature_ok]
    for start in range(0, len(ids), _CHUNK):
        rows = session.execute(_EVENTS, {"ids": ids[start : start + _CHUNK]}).all()
        for row in rows:
            by_id.setdefault(row.consent_id, []).append(row)
    return [_derive(r, by_id.get(r.signed.artefact.consent_id, [])) for r in records]


def _consent_entries(session: Session) -> Iterator[tuple[int, bytes]]:
    stmt = (
        select(LogEntryRow.seq, LogEntryRow.leaf_data)
        .where(LogEntryRow.kind.like("consent.%"), LogEntryRow.kind != USES_KIND)
        .order_by(LogEntryRow.seq)
        .execution_options(yield_per=_BATCH)
    )
    for part in session.execute(stmt).partitions():
        for seq, leaf in part:
            yield int(seq), bytes(leaf)


def verify_consent_log(session: Session) -> IntegrityFailure | None:
    """Fold every consent transition in the log; compare with every state and event row.

    Catches what a per-check derivation cannot: events deleted together with a
    rewound state row (the log still holds them), and rows with no log at all.
    """
    folded: dict[str, tuple[Status, int, int]] = {}
    for seq, leaf in _consent_entries(session):
        parsed = _body(leaf)
        if parsed is None:
            return IntegrityFailure("INTEGRITY", seq, "?", "a consent entry is not JSON")
        kind, body = parsed
        cid, version = body.get("consent_id"), body.get("event_version")
        if not isinstance(cid, str) or type(version) is not int:
            return IntegrityFailure("INTEGRITY", seq, str(cid), "consent entry lacks id/version")
        status, last, _ = folded.get(cid, (None, 0, -1))
        after = _next_status(status, kind.removeprefix("consent."))
        if version != last + 1 or after is None or body.get("status") != after.value:
            return IntegrityFailure(
                "INTEGRITY", seq, cid, f"logged {kind} v{version} does not follow v{last}"
            )
        folded[cid] = (after, version, seq)
    rows = session.execute(select(StateRow.consent_id, StateRow.status, StateRow.version)).all()
    stored = {cid: (status, int(version)) for cid, status, version in rows}
    for cid, (status, version, seq) in sorted(folded.items(), key=lambda kv: kv[1][2]):
        row = stored.pop(cid, None)
        if row != (status.value, version):
            return IntegrityFailure(
                "INTEGRITY",
                seq,
                cid,
                f"state row says {row}, the log folds to ({status.value}, {version})",
            )
    if stored:
        cid = sorted(stored)[0]
        return IntegrityFailure("INTEGRITY", None, cid, "state row with no logged grant")
    events = session.execute(
        select(EventRow.consent_id, EventRow.version, EventRow.ledger_seq)
    ).all()
    counts: dict[str, int] = {}
    for cid, _, _ in events:
        counts[cid] = counts.get(cid, 0) + 1
    for cid, (_, version, seq) in folded.items():
        if counts.get(cid, 0) != version:
            return IntegrityFailure(
                "INTEGRITY", seq, cid, f"{counts.get(cid, 0)} event rows, the log has {version}"
            )
    return None
