"""Counting consent uses: one checked use (``consent.used``) or a round's batch (``consent.uses``).

:func:`record_use` checks a use against one consent and writes its event like
any transition; :func:`count_round_uses` is what the platform runs once per node and
round, after the node's receipt verified, for every consent of that round's
manifest — set-based counters and one ledger entry for the batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from ledger import Entry, append_entry, canonical_json

from ._artefact import (
    Frequency,
    FrequencyUnit,
)
from ._check import ConsentRecord, evaluate_one
from ._errors import (
    ConsentNotFound,
    InvalidConsentRequest,
)
from ._integrity import derive_records
from ._models import ArtefactRow, StateRow
from ._reads import _now, _state_from_row, _stored_artefact
from ._receipt import DEFAULT_NOTICE, ConsentReceipt, ReceiptNotice
from ._writes import _plan, _write

__all__ = ["USES_KIND", "record_use", "count_round_uses", "consent_ids_hash"]

USES_KIND = "consent.uses"
"""Ledger kind of one :func:`count_round_uses` batch (``consent.used`` is one consent's event)."""
_CHUNK = 5000  # ids per IN (...) list: under SQLite's and PostgreSQL's bind-parameter caps

def record_use(
    session: Session,
    consent_id: str,
    *,
    purpose: str,
    categories: Iterable[str],
    at: datetime | None = None,
    data_range: tuple[date, date] | None = None,
    consent_manager_key: Ed25519PublicKey,
    job_id: str | None = None,
    notice: ReceiptNotice = DEFAULT_NOTICE,
) -> ConsentReceipt:
    """Check a use against one consent and, if allowed, count it (``consent.used``).

    Raises
    ------
    ConsentDenied
        With the deny code when the use is not allowed; nothing is written.
    """
    when = _now(at)
    wanted = tuple(categories)
    state_row = session.execute(
        select(StateRow).where(StateRow.consent_id == consent_id).with_for_update()
    ).scalar_one_or_none()
    art_row = session.get(ArtefactRow, consent_id)
    if state_row is None or art_row is None:
        raise ConsentNotFound(f"no consent {consent_id!r}")
    parties = (
        art_row.consent_id,
        art_row.merchant_id,
        art_row.data_provider,
        art_row.data_consumer,
    )
    signed, ok = _stored_artefact(
        session, parties, art_row.token, art_row.artefact_hash, consent_manager_key
    )
    record = derive_records(session, [ConsentRecord(signed, _state_from_row(state_row), ok)])[0]
    evaluate_one(
        record, purpose=purpose, categories=wanted, at=when, data_range=data_range
    ).require()
    detail = {"purpose": purpose, "categories": sorted(wanted), "job_id": job_id}
    pending = _plan(record.signed, record.state, "used", when, detail)
    return _write(session, [pending], notice)[0]

def consent_ids_hash(consent_ids: Iterable[str]) -> str:
    """Hex SHA-256 of the canonical JSON list of the sorted, distinct consent ids."""
    return hashlib.sha256(canonical_json(sorted(set(consent_ids)))).hexdigest()


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]

def count_round_uses(
    session: Session,
    consent_ids: Iterable[str],
    *,
    at: datetime,
    job_id: str | None = None,
    round: int | None = None,
    data_provider: str | None = None,
    manifest_root: str | None = None,
) -> Entry | None:
    """Count one use of each consent, set-based, and log the batch as ONE ledger entry.

    What the platform calls once per node and round for the consents of the
    round's cohort manifest, after the node's usage receipt verified: the data
    *was* used, so every listed consent is counted whatever its status is now
    (a manifest issued before a revocation stays usable until its valid-until).
    The counters that :func:`consent.check` and the cohort check read
    (``use_count``, ``period_uses``, ``last_used_at``) advance in one UPDATE per
    frequency unit (per 5,000 ids), not one query per merchant. Unlike
    :func:`record_use`, no per-consent event row is written (an event row needs
    its own ledger entry); the batch's ``consent.uses`` entry (job, round,
    provider, manifest root, count and :func:`consent_ids_hash`) is the audit
    record, and :func:`get_consent` accepts counters ahead of the event fold.

    Parameters
    ----------
    session : Session
        The caller's session; written in its transaction (e.g. with the
        ``data.used`` entry of the receipt that proves the use).
    consent_ids : Iterable[str]
        Consents used (duplicates count once).
    at : datetime
        Time of the use (timezone-aware); no consent may have a later use already.
    job_id, round, data_provider, manifest_root : default None
        Copied into the ledger entry.

    Returns
    -------
    ledger.Entry | None
        The ``consent.uses`` entry; ``None`` (nothing written) for no ids.

    Raises
    ------
    ConsentNotFound
        An id is unknown; nothing is written.
    InvalidConsentRequest
        ``MALFORMED`` for a naive time, ``OUT_OF_ORDER`` when a consent was last
        used after ``at``; nothing is written.
    """
    when = _now(at)
    ids = sorted(set(consent_ids))
    if not ids:
        return None
    # Read and validate everything before the first write.
    by_unit: dict[FrequencyUnit, list[str]] = {}
    for chunk in _chunks(ids):
        # The unit is a column (no token parsed per consent); the state rows are
        # locked now so the order check below still holds when the UPDATEs run.
        rows = session.execute(
            select(ArtefactRow.consent_id, ArtefactRow.frequency_unit, StateRow.last_used_at)
            .join(StateRow, StateRow.consent_id == ArtefactRow.consent_id)
            .where(ArtefactRow.consent_id.in_(chunk))
            .with_for_update(of=StateRow)
        ).all()
        if len(rows) != len(chunk):
            missing = sorted(set(chunk) - {r.consent_id for r in rows})
            raise ConsentNotFound(f"no consent {missing[0]!r} ({len(missing)} unknown ids)")
        for consent_id, unit, last_used in rows:
            if last_used is not None and last_used > when:
                raise InvalidConsentRequest(
                    f"consent {consent_id} was used at {last_used}, after {when}",
                    code="OUT_OF_ORDER",
                )
            by_unit.setdefault(cast(FrequencyUnit, unit), []).append(consent_id)
    for unit, unit_ids in sorted(by_unit.items()):
        # Same period as the last use <=> last use at or after this period's start.
        period_start = Frequency(1, unit).period_start(when)
        for chunk in _chunks(unit_ids):
            session.execute(
                update(StateRow)
                .where(StateRow.consent_id.in_(chunk))
                .values(
                    use_count=StateRow.use_count + 1,
                    period_uses=case(
                        (StateRow.last_used_at >= period_start, StateRow.period_uses + 1),
                        else_=1,
                    ),
                    last_used_at=when,
                )
                .execution_options(synchronize_session=False)
            )
    body = {
        "job_id": job_id,
        "round": round,
        "data_provider": data_provider,
        "manifest_root": manifest_root,
        "count": len(ids),
        "consent_ids_hash": consent_ids_hash(ids),
    }
    entry = append_entry(session, USES_KIND, body, at=when)
    session.expire_all()  # loaded StateRow objects must not hide the new counters
    return entry
