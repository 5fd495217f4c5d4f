"""The nodes' ERP signals for a set of merchants: one real signals job (:mod:`federation.signals`).

:func:`query_signals` runs a ``mode = "signals"`` job through the one federation job
function (:func:`federation.run_job`, built by :func:`gateway.jobs.signals_run_config`):
the gateway's manifests name the kind's purpose (``post_loan_monitoring`` for
``erp-changes``, ``credit_scoring`` for ``revenue-3m``) and categories, so only
merchants whose consent covers that use are in them, and :class:`OpenLoanCohort`
narrows them further to ``merchants``. Each node checks every entry against its own
approvals and releases only what its own policy allows, coarsened as that policy
says; the platform gets ``signals.csv`` (``merchant_id,isv_id,signal,value``) and
each node's verified receipt in the ledger (``data.used``, ε 0).

:func:`erp_changes_by_merchant` turns an ``erp-changes`` release into what the
monitoring rules read (:class:`~gateway.credit.Observation`'s ``erp_changes``) with
where it came from (job id, the node, the ledger index of its receipt).
"""

from __future__ import annotations

import csv
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from ._errors import CreditError
from ._models import LineDecisionRow, LoanRow
from ._rescore import REFUSAL_RECORDED, OpenLoanCohort

__all__ = [
    "SignalRelease",
    "query_signals",
    "erp_changes_by_merchant",
    "line_decision_days",
    "SIGNAL_SOURCE",
]

SIGNAL_SOURCE = "node-query"
"""What an alert's ``erp_source.kind`` says when its ERP changes came from a signals job."""


@dataclass(frozen=True, slots=True)
class SignalRelease:
    """One signals job's result.

    Attributes
    ----------
    job_id : str
    kind : str
    frame : pandas.DataFrame
        ``merchant_id, isv_id, signal, value`` (``signals.csv``).
    path : Path
        The job's ``signals.csv``.
    receipts : Mapping[str, int]
        ISV → ledger index of its node's verified ``data.used`` receipt.
    refused : tuple[str, ...]
        The failure lines of nodes whose signed refusal was verified and ledgered.
    """

    job_id: str
    kind: str
    frame: pd.DataFrame
    path: Path
    receipts: Mapping[str, int] = field(default_factory=dict)
    refused: tuple[str, ...] = ()


def _receipt_seqs(receipts: Any) -> dict[str, int]:
    return {
        str(r["data_provider"]): int(r["ledger_seq"])
        for r in receipts
        if isinstance(r, Mapping) and "ledger_seq" in r and "data_provider" in r
    }


def query_signals(
    settings: Any,
    wn: Any,
    *,
    kind: str,
    merchants: Collection[str],
    cohort_source: Any,
    job_id: str,
    as_of: date,
    since: date | None = None,
    since_by_merchant: Mapping[str, date] | None = None,
    runtime: Any = None,
) -> SignalRelease:
    """Run one signals job of ``kind`` for ``merchants`` on the simulation runtime.

    Parameters
    ----------
    settings : Settings
    wn : WorldNodes
        The nodes to ask (:func:`gateway.jobs.world_nodes` or the demo's).
    kind : str
        ``erp-changes`` or ``revenue-3m``.
    merchants : Collection[str]
        Nobody else enters a manifest (e.g. merchants with an open loan).
    cohort_source : CohortSource
        The consent cohort, narrowed here by :class:`OpenLoanCohort`.
    job_id : str
    as_of : date
        ``now`` is each merchant's latest snapshot at or before it.
    since : date | None, default None
        ``then`` for merchants without their own day (``erp-changes``).
    since_by_merchant : Mapping[str, date] | None, default None
        Per-merchant ``since`` days (e.g. each line's decision date).
    runtime : SimulationRuntime | None, default None

    Raises
    ------
    CreditError
        ``SIGNALS_FAILED`` when the job leaves no release (a node's verified policy
        refusal is not an error: its merchants are absent), ``SIGNALS_OUTSIDE_COHORT``
        when a row names a merchant outside ``merchants``.
    """
    from federation import JobFailed, run_job

    from .. import jobs

    out = settings.data_dir / "jobs" / job_id
    out.mkdir(parents=True, exist_ok=True)
    since_file = None
    if since_by_merchant:
        since_file = out / "since.csv"
        with since_file.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["merchant_id", "since"])
            writer.writerows(sorted((m, d.isoformat()) for m, d in since_by_merchant.items()))
    config = jobs.signals_run_config(
        settings, wn, job_id=job_id, kind=kind, as_of=as_of, since=since,
        since_file=since_file, out=out,
    )  # fmt: skip
    refused: tuple[str, ...] = ()
    try:
        result = run_job(
            config,
            list(wn.nodes),
            cohort_source=OpenLoanCohort(cohort_source, merchants),
            runtime=runtime,
        )
        path, receipts = result.signals_path, result.receipts
    except JobFailed as exc:
        # A node may refuse under its own policy (a kind it does not serve, fewer merchants
        # than its minimum). Once its signed refusal is verified and ledgered, that is an
        # expected outcome: its merchants are absent, the others' signals stand.
        verified = [r for r in exc.reasons if REFUSAL_RECORDED in r and r.endswith(")")]
        if not exc.reasons or len(verified) != len(exc.reasons):
            raise
        path = Path(exc.signals_path) if exc.signals_path else None
        receipts, refused = exc.receipts, tuple(verified)
    if path is None:
        raise CreditError("the signals job left no release", code="SIGNALS_FAILED")
    frame = pd.read_csv(path, dtype={"merchant_id": str, "isv_id": str, "signal": str})
    outside = set(frame["merchant_id"]) - set(merchants)
    if outside:
        raise CreditError(
            f"{len(outside)} signals name merchants outside the request",
            code="SIGNALS_OUTSIDE_COHORT",
        )
    return SignalRelease(job_id, kind, frame, Path(path), _receipt_seqs(receipts), refused)


def erp_changes_by_merchant(
    release: SignalRelease,
) -> dict[str, tuple[str, dict[str, float], dict[str, Any]]]:
    """``merchant → (isv, {signal: change}, source)`` from an ``erp-changes`` release.

    ``source`` is ``{"kind": "node-query", "job": …, "isv": …, "receipt_seq": …}``: the
    ledger index of the node's signed receipt for the release. A merchant released by
    several ISVs takes the first ISV's in id order.
    """
    out: dict[str, tuple[str, dict[str, float], dict[str, Any]]] = {}
    for (m, isv), part in release.frame.groupby(["merchant_id", "isv_id"], sort=True):
        if m in out:
            continue
        values = {str(k): float(v) for k, v in zip(part["signal"], part["value"], strict=True)}
        source = {
            "kind": SIGNAL_SOURCE,
            "job": release.job_id,
            "isv": str(isv),
            "receipt_seq": release.receipts.get(str(isv)),
        }
        out[str(m)] = (str(isv), values, source)
    return out


def line_decision_days(session: Session, merchants: Collection[str]) -> dict[str, date]:
    """``merchant → day`` of the line decision its loans were drawn under (UTC).

    A merchant with loans under several decisions takes the latest. Merchants whose
    loans name no decision are absent (the caller gives them a ``since`` of its own).
    """
    ids = sorted(set(merchants))
    out: dict[str, date] = {}
    for start in range(0, len(ids), 5000):
        rows = session.execute(
            select(LoanRow.merchant_id, LineDecisionRow.decided_at)
            .join(LineDecisionRow, LineDecisionRow.id == LoanRow.decision_id)
            .where(LoanRow.merchant_id.in_(ids[start : start + 5000]))
        )
        for m, at in rows:
            day = at.date() if at.tzinfo is None else at.astimezone(UTC).date()
            if m not in out or day > out[m]:
                out[m] = day
    return out
