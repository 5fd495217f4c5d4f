"""Re-scoring merchants with open loans under ``post_loan_monitoring``: monitoring's PD input.

A real scoring job through the one federation job function (:func:`federation.run_job`,
built by :func:`gateway.jobs.score_run_config` with ``purpose="post_loan_monitoring"``):
the gateway's manifests name that purpose, so only merchants whose consent covers it are
in them, and :class:`OpenLoanCohort` narrows the consent cohort further to merchants with
an open loan. Each node checks every entry against its own approvals, as for any job. The
scores come back as ``merchant_id, isv_id, g``; the caller maps ``g`` to a PD with the
origination's calibration (the demo: its combiner, with the merchant's ``f``).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from ._consents import MONITORING_PURPOSE
from ._errors import CreditError
from ._models import LoanRow
from ._monitoring import loan_positions

REFUSAL_RECORDED = "(REFUSAL_RECORDED ledger="
"""How a failure line ends when the node's signed refusal was verified and ledgered
(:func:`federation.refusals.refusal_note`)."""

__all__ = ["OpenLoanCohort", "open_loan_merchants", "rescore_open_loans"]


class OpenLoanCohort:
    """A cohort source that keeps only merchants with an open loan.

    Parameters
    ----------
    inner : CohortSource
        The consent cohort (every merchant whose consent covers the job's use).
    merchants : Collection[str]
        Merchants with an open loan; nobody else enters a manifest.
    """

    def __init__(self, inner: Any, merchants: Collection[str]) -> None:
        self._inner = inner
        self._merchants = frozenset(merchants)

    def entries(self, use: Any) -> list[Any]:
        """The inner source's entries for ``use``, narrowed to the open-loan merchants."""
        return [e for e in self._inner.entries(use) if e.merchant_id in self._merchants]


def open_loan_merchants(session: Session, as_of: date, term_days: int) -> list[str]:
    """Merchants with a positive drawn balance on ``as_of``, sorted."""
    ids = sorted(loan_positions(session, as_of, term_days))
    out: set[str] = set()
    for start in range(0, len(ids), 5000):
        out.update(
            session.scalars(
                select(LoanRow.merchant_id).where(LoanRow.loan_id.in_(ids[start : start + 5000]))
            )
        )
    return sorted(out)


def rescore_open_loans(
    settings: Any,
    wn: Any,
    *,
    model_dir: Path,
    merchants: Collection[str],
    cohort_source: Any,
    job_id: str,
    runtime: Any = None,
) -> pd.DataFrame:
    """Run one scoring job under ``post_loan_monitoring`` for ``merchants``; their g scores.

    Parameters
    ----------
    settings : Settings
        The gateway's settings (database, keys, data directory).
    wn : WorldNodes
        The nodes to ask (:func:`gateway.jobs.load_world_nodes` or the demo's).
    model_dir : Path
        A training job's output directory (the model the nodes trained in).
    merchants : Collection[str]
        Merchants with an open loan.
    cohort_source : CohortSource
        The consent cohort, narrowed here by :class:`OpenLoanCohort`.
    job_id : str
    runtime : SimulationRuntime | None, default None

    Returns
    -------
    pandas.DataFrame
        ``merchant_id``, ``isv_id``, ``g``: only merchants with an open loan whose consent
        covers ``post_loan_monitoring`` (and whose node approved it).

    Raises
    ------
    CreditError
        ``RESCORE_FAILED`` when the job leaves no scores (a node's verified policy
        refusal is not an error: its merchants are left out), ``RESCORE_OUTSIDE_COHORT`` when a
        score names a merchant without an open loan.
    """
    from federation import JobFailed, run_job

    from .. import jobs

    config = jobs.score_run_config(
        settings, wn, job_id=job_id, model_dir=model_dir, purpose=MONITORING_PURPOSE
    )
    try:
        result = run_job(
            config,
            list(wn.nodes),
            cohort_source=OpenLoanCohort(cohort_source, merchants),
            runtime=runtime,
        )
        scores_path = result.scores_path
    except JobFailed as exc:
        # A node may refuse under its own policy (e.g. fewer open-loan merchants than its
        # minimum scoring cohort). Once its signed refusal is verified and ledgered, that
        # is an expected outcome: its merchants keep their last PD, the others' scores
        # stand. Any other failure (or an unverified refusal) fails the pass.
        verified = [r for r in exc.reasons if REFUSAL_RECORDED in r and r.endswith(")")]
        if not exc.reasons or len(verified) != len(exc.reasons):
            raise
        scores_path = exc.scores_path
    if scores_path is None:
        raise CreditError("the monitoring scoring job left no scores", code="RESCORE_FAILED")
    scores = pd.read_csv(scores_path, dtype={"merchant_id": str, "isv_id": str})
    outside = set(scores["merchant_id"]) - set(merchants)
    if outside:
        raise CreditError(
            f"{len(outside)} monitoring scores name merchants without an open loan",
            code="RESCORE_OUTSIDE_COHORT",
        )
    return scores
