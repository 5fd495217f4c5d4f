"""Retention: scores and job outputs about a merchant go once its consent's ``data_life_days`` pass.

A consent's ``data_life_days`` (signed by the merchant) bounds how long data
derived from its ERP rows may be kept. :func:`sweep` removes, as of a moment
``at``:

* **scores** — each row of a scoring job's ``scores.csv`` (merchant, ISV, ``g``)
  older than the shortest ``data_life_days`` of that merchant's consents with
  that ISV. Its age runs from the ISV node's signed ``query.score`` receipt in
  the job's ``result.json`` (``issued_at``), else from the file's modification
  time. A row no consent covers at all is removed too;
* **the ERP-derived PD of a credit-line decision** (``pd_with``) once the
  shortest ``data_life_days`` of the consents it names has passed since it was
  decided. The line amounts and the ISV attribution stay: they are the terms a
  loan was drawn under and what settlement pays ISVs from.

Models are kept: a global model is an aggregate of DP-noised, securely summed
updates over a cohort (no row of any merchant is in it), and the lineage keeps
naming the jobs and models a merchant's data shaped (``federation.node.models_shaped_by``)
so a revoked merchant can be told. The public ledger is append-only: its
``data.used`` and line-decision entries stay (they are the audit trail).

One sweep is one ledger entry, ``retention.sweep``, with counts only (rows,
files, decisions, merchants), written in the same transaction as the decision
updates; rewritten files replace the old ones only after that commit, so a
failed sweep leaves everything as it was and the next sweep does the work.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

import consent
import ledger

from .credit._models import LineDecisionRow

__all__ = ["RETENTION_SWEEP", "SweepReport", "sweep", "data_life"]

RETENTION_SWEEP = "retention.sweep"
"""Ledger entry kind of one retention sweep (counts only)."""

_SCORES = "scores.csv"
_RESULT = "result.json"
_SCORE_ACTION = "query.score"


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep removed (counts only) and its ledger entry (``None``: nothing to do)."""

    at: datetime
    scores_removed: int
    files_rewritten: int
    decisions_cleared: int
    merchants: int
    ledger_seq: int | None


def data_life(session: Session) -> dict[tuple[str, str], int]:
    """``(merchant, ISV)`` → the shortest ``data_life_days`` of their consents (any status)."""
    out: dict[tuple[str, str], int] = {}
    for signed, _ in consent.list_consents(session):
        a = signed.artefact
        key = (a.merchant_id, a.data_provider)
        out[key] = min(out.get(key, a.data_life_days), a.data_life_days)
    return out


def _consent_life(session: Session) -> dict[str, int]:
    rows = consent.list_consents(session)
    return {s.artefact.consent_id: s.artefact.data_life_days for s, _ in rows}


def _parse_time(text: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _score_times(job_dir: Path) -> dict[str, datetime]:
    """ISV → when its node signed the scores (its ``query.score`` receipt in result.json)."""
    try:
        doc = json.loads((job_dir / _RESULT).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    out: dict[str, datetime] = {}
    for r in doc.get("receipts", []) if isinstance(doc, dict) else []:
        if isinstance(r, Mapping) and r.get("action") == _SCORE_ACTION:
            t = _parse_time(str(r.get("issued_at", "")))
            if t is not None:
                out[str(r.get("data_provider"))] = t
    return out


def _expired(produced: datetime, days: int | None, at: datetime) -> bool:
    return days is None or produced + timedelta(days=days) <= at


def _plan_scores(
    jobs_dir: Path, life: Mapping[tuple[str, str], int], at: datetime
) -> tuple[list[tuple[Path, str]], int, set[str]]:
    """Files to rewrite (path, new text), rows removed, merchants concerned."""
    rewrites: list[tuple[Path, str]] = []
    removed, merchants = 0, set()
    for path in sorted(jobs_dir.glob(f"*/{_SCORES}")) if jobs_dir.is_dir() else []:
        times = _score_times(path.parent)
        fallback = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = list(reader.fieldnames or [])
            rows = list(reader)
        if not {"merchant_id", "isv_id"} <= set(fields):
            continue
        keep = []
        for row in rows:
            key = (row["merchant_id"], row["isv_id"])
            if _expired(times.get(row["isv_id"], fallback), life.get(key), at):
                removed += 1
                merchants.add(row["merchant_id"])
            else:
                keep.append(row)
        if len(keep) != len(rows):
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(keep)
            rewrites.append((path, buf.getvalue()))
    return rewrites, removed, merchants


def _plan_decisions(
    session: Session, life: Mapping[str, int], at: datetime
) -> tuple[list[int], set[str]]:
    ids, merchants = [], set()
    rows = session.execute(
        select(LineDecisionRow.id, LineDecisionRow.merchant_id, LineDecisionRow.inputs,
               LineDecisionRow.decided_at).where(LineDecisionRow.pd_with.is_not(None))
    )
    for rid, mid, inputs, decided in rows:
        consents: Iterable[str] = (inputs or {}).get("consents", {}).values()
        days = min((life[c] for c in consents if c in life), default=None)
        when = decided if decided.tzinfo else decided.replace(tzinfo=UTC)
        if _expired(when, days, at):
            ids.append(int(rid))
            merchants.add(mid)
    return ids, merchants


def sweep(session: Session, *, jobs_dir: Path, at: datetime | None = None) -> SweepReport:
    """Remove scores and ERP-derived PDs past their consents' ``data_life_days``.

    Parameters
    ----------
    session : Session
        A session with no transaction begun; the sweep commits its own.
    jobs_dir : Path
        The folder of job output folders (``<data_dir>/jobs``).
    at : datetime | None, default now
        The moment of the sweep (timezone-aware).

    Returns
    -------
    SweepReport

    Raises
    ------
    ValueError
        ``at`` is naive.
    """
    at = at or datetime.now(UTC)
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    with session.begin():
        rewrites, removed, score_merchants = _plan_scores(jobs_dir, data_life(session), at)
        decision_ids, decision_merchants = _plan_decisions(session, _consent_life(session), at)
        seq = None
        if removed or decision_ids:
            if decision_ids:
                session.execute(
                    update(LineDecisionRow)
                    .where(LineDecisionRow.id.in_(decision_ids))
                    .values(pd_with=None)
                )
            body = {
                "at": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "scores_removed": removed,
                "files_rewritten": len(rewrites),
                "decisions_cleared": len(decision_ids),
                "merchants": len(score_merchants | decision_merchants),
            }
            seq = ledger.append_entry(session, RETENTION_SWEEP, body).seq
    for path, text in rewrites:  # after the commit: a failed sweep changes no file
        tmp = path.with_name(f".{path.name}.sweep{os.getpid()}")
        tmp.write_text(text, "utf-8")
        os.replace(tmp, path)
    return SweepReport(
        at=at,
        scores_removed=removed,
        files_rewritten=len(rewrites),
        decisions_cleared=len(decision_ids),
        merchants=len(score_merchants | decision_merchants),
        ledger_seq=seq,
    )
