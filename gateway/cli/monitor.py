"""``fedgate monitor run``: one post-loan monitoring pass.

Observations (re-scored PDs, the nodes' ERP signals, payment-account balances) come
as a JSON Lines file, one object per merchant: ``merchant_id``, ``isv`` (whose
consent must cover ``post_loan_monitoring``), optional ``pd_now``, ``erp_then``,
``erp_now``, ``payment_balance``. Without a file only the overdue rule runs.

``--rescore --world W --model-dir M`` first runs a real scoring job under
``post_loan_monitoring`` for the merchants with an open loan
(:func:`gateway.credit.rescore_open_loans`) and turns each new g into a PD with the
combiner persisted when the lines were computed (:func:`gateway.credit.load_combiner`,
its file checked against the ledger's hash); that PD feeds the ``pd_rise`` rule unless
the observations file gives one. No combiner yet: ``error[NO_COMBINER]``, exit 1, before
any job starts.

``--signals --world W`` runs a real ERP signals job first (``erp-changes`` under
``post_loan_monitoring``, :func:`gateway.credit.query_signals`) for the merchants with
an open loan: each node releases, per merchant whose consent covers monitoring and whose
approval it holds, the changes between its snapshot at or before ``since`` (each line's
decision day, or ``--since``) and its latest at or before ``--as-of``, coarsened by the
node's own policy. Those changes feed the ERP rules (they win over an observations
file's values) and each alert records them with the job id and the node receipt's
ledger index. A merchant a node did not release (no two snapshots in the window) gets
no ERP rule.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import credit
from ._common import console, fail, session, settings
from .credit import policy_in_force

app = typer.Typer(no_args_is_help=True)

__all__ = ["app"]


def _observations(path: Path) -> tuple[dict[str, credit.Observation], dict[str, str]]:
    obs: dict[str, credit.Observation] = {}
    isv: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc: dict[str, Any] = json.loads(line)
            m = str(doc["merchant_id"])
            obs[m] = credit.Observation(
                merchant_id=m,
                pd_now=None if doc.get("pd_now") is None else float(doc["pd_now"]),
                erp_then=doc.get("erp_then"),
                erp_now=doc.get("erp_now"),
                payment_balance=int(doc.get("payment_balance", 0)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            fail("BAD_ROW", f"{path}: line {n}: {exc}")
        if doc.get("isv"):
            isv[m] = str(doc["isv"])
    return obs, isv


def _rescore(
    cfg: Any,
    day: date,
    world: Path,
    model_dir: Path,
    obs: dict[str, credit.Observation],
    isv: dict[str, str],
) -> str:
    """Run the monitoring scoring job; add each re-scored PD to ``obs``; the combiner's id.

    A PD from the observations file wins over the re-scored one (the operator's input).
    """
    from dataclasses import replace

    from federation import FederationError

    from .. import jobs

    try:
        with session() as s:
            stored = credit.load_combiner(s, cfg.data_dir / credit.COMBINER_SUBDIR)
            _, pol = policy_in_force(s)
            merchants = credit.open_loan_merchants(s, day, pol.monitoring.term_days)
    except credit.CreditError as exc:
        fail(exc.code, str(exc))
    if not merchants:
        console.print("re-score: no open loans, no scoring job run")
        return stored.model_id
    try:
        jobs.read_lineage(model_dir)  # a bad model dir is refused before any runtime starts
        wn = jobs.world_nodes(cfg, world)
    except jobs.JobSetupError as exc:
        fail(exc.code, str(exc))
    cohort = jobs.ConsentCohort(cfg)
    try:
        scores = credit.rescore_open_loans(
            cfg,
            wn,
            model_dir=model_dir,
            merchants=merchants,
            cohort_source=cohort,
            job_id=f"monitor-rescore-{uuid.uuid4().hex[:12]}",
        )
    except (credit.CreditError, FederationError, jobs.JobSetupError) as exc:
        fail(getattr(exc, "code", "RESCORE_FAILED"), str(exc))
    finally:
        cohort.close()
    pds = stored.pds_now(scores)
    for m, isv_id in zip(scores["merchant_id"], scores["isv_id"], strict=True):
        isv.setdefault(str(m), str(isv_id))
    for m, p in pds.items():
        o = obs.get(m)
        if o is None:
            obs[m] = credit.Observation(merchant_id=m, pd_now=p)
        elif o.pd_now is None:
            obs[m] = replace(o, pd_now=p)
    console.print(
        f"re-score: {len(merchants)} merchants with an open loan, {len(scores)} scores back "
        f"under post_loan_monitoring, {len(pds)} PDs from combiner v{stored.version} "
        f"({stored.model_id})",
        highlight=False,
    )
    return stored.model_id


def _signals(
    cfg: Any,
    day: date,
    world: Path,
    since: date | None,
    obs: dict[str, credit.Observation],
    isv: dict[str, str],
) -> None:
    """Run the monitoring signals job; put each released merchant's changes into ``obs``."""
    from dataclasses import replace

    from federation import FederationError

    from .. import jobs

    try:
        with session() as s:
            _, pol = policy_in_force(s)
            merchants = credit.open_loan_merchants(s, day, pol.monitoring.term_days)
            per = {} if since is not None else credit.line_decision_days(s, merchants)
    except credit.CreditError as exc:
        fail(exc.code, str(exc))
    if not merchants:
        console.print("signals: no open loans, no signals job run")
        return
    try:
        wn = jobs.world_nodes(cfg, world)
    except jobs.JobSetupError as exc:
        fail(exc.code, str(exc))
    cohort = jobs.ConsentCohort(cfg)
    try:
        release = credit.query_signals(
            cfg,
            wn,
            kind="erp-changes",
            merchants=merchants,
            cohort_source=cohort,
            job_id=f"monitor-signals-{uuid.uuid4().hex[:12]}",
            as_of=day,
            since=since,
            since_by_merchant=per,
        )
    except (credit.CreditError, FederationError, jobs.JobSetupError) as exc:
        fail(getattr(exc, "code", "SIGNALS_FAILED"), str(exc))
    finally:
        cohort.close()
    changes = credit.erp_changes_by_merchant(release)
    for m, (isv_id, values, source) in changes.items():
        isv.setdefault(m, isv_id)
        o = obs.get(m) or credit.Observation(merchant_id=m)
        obs[m] = replace(o, erp_changes=values, erp_source=source)
    seqs = ", ".join(f"{k} #{v}" for k, v in sorted(release.receipts.items()))
    console.print(
        f"signals: {len(merchants)} merchants with an open loan, {len(changes)} released by "
        f"the nodes under post_loan_monitoring (job {release.job_id}; receipts {seqs or '-'}"
        + (f"; {len(release.refused)} node(s) refused" if release.refused else "")
        + ")",
        highlight=False,
        markup=False,
    )


@app.command("run")
def run(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Date of the pass, YYYY-MM-DD (default today).")
    ] = None,
    observations: Annotated[
        Path | None, typer.Option("--observations", help="JSON Lines of merchant observations.")
    ] = None,
    model_version: Annotated[str, typer.Option("--model-version")] = "g",
    rescore: Annotated[
        bool,
        typer.Option(
            "--rescore",
            help="Re-score open-loan merchants with a post_loan_monitoring scoring job first.",
        ),
    ] = False,
    world: Annotated[
        Path | None, typer.Option("--world", help="World directory (--rescore, --signals).")
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option("--model-dir", help="A training job's output dir (--rescore).")
    ] = None,
    signals: Annotated[
        bool,
        typer.Option(
            "--signals",
            help="Ask the nodes for ERP changes (erp-changes, post_loan_monitoring) first.",
        ),
    ] = False,
    since: Annotated[
        str | None,
        typer.Option("--since", help="With --signals: 'then' day for all (default: decision day)."),
    ] = None,
) -> None:
    """Run every monitoring rule over the open loans, act, and print what was done."""
    from .. import jobs
    from ..keys import load_or_create_key

    try:
        day = date.fromisoformat(as_of) if as_of else datetime.now(UTC).date()
    except ValueError:
        fail("BAD_DATE", f"--as-of must be YYYY-MM-DD, got {as_of!r}")
    if rescore and (world is None or model_dir is None):
        fail("BAD_ARGUMENT", "--rescore needs --world and --model-dir")
    if signals and world is None:
        fail("BAD_ARGUMENT", "--signals needs --world")
    try:
        since_day = date.fromisoformat(since) if since else None
    except ValueError:
        fail("BAD_DATE", f"--since must be YYYY-MM-DD, got {since!r}")
    if since_day is not None and not signals:
        fail("BAD_ARGUMENT", "--since goes with --signals")
    obs, isv = _observations(observations) if observations else ({}, {})
    cfg = settings()
    key = load_or_create_key(cfg.resolved_key_dir, jobs.CONSENT_MANAGER_KEY).public_key()
    if rescore:
        model_version = _rescore(cfg, day, world, model_dir, obs, isv)  # type: ignore[arg-type]
    if signals:
        _signals(cfg, day, world, since_day, obs, isv)  # type: ignore[arg-type]
    try:
        with session() as s:
            version, pol = policy_in_force(s)
            allowed = credit.covering_consents(
                s,
                [(m, k) for m, k in isv.items()],
                purpose=credit.MONITORING_PURPOSE,
                categories=credit.MONITORING_CATEGORIES,
                consumer=jobs.DEFAULT_CONSUMER,
                at=datetime.now(UTC),
                consent_manager_key=key,
            )
            report = credit.monitor_pass(
                s,
                policy_version=version,
                rules=pol.monitoring,
                observations=obs,
                consented={m for (m, _), c in allowed.items() if c},
                as_of=day,
                model_version=model_version,
            )
    except credit.CreditError as exc:
        fail(exc.code, str(exc))
    if report.already_run:
        console.print(f"pass {report.pass_id[:16]}… ran before with these inputs; nothing to do")
        return
    console.print(
        f"monitoring pass {report.pass_id[:16]}… on {day}: {report.loans_checked} open loans"
    )
    for a in report.alerts:
        console.print(
            f"  {a.loan_id} ({a.merchant_id}): {a.rule} -> {a.action} {a.inputs}",
            markup=False,
            highlight=False,
        )
    if not report.alerts:
        console.print("  no rule fired")
