"""``fedgate monitor run``: one post-loan monitoring pass.

Observations (re-scored PDs, the nodes' ERP signals, payment-account balances) come
as a JSON Lines file, one object per merchant: ``merchant_id``, ``isv`` (whose
consent must cover ``post_loan_monitoring``), optional ``pd_now``, ``erp_then``,
``erp_now``, ``payment_balance``. Without a file only the overdue rule runs.
"""

from __future__ import annotations

import json
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


@app.command("run")
def run(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Date of the pass, YYYY-MM-DD (default today).")
    ] = None,
    observations: Annotated[
        Path | None, typer.Option("--observations", help="JSON Lines of merchant observations.")
    ] = None,
    model_version: Annotated[str, typer.Option("--model-version")] = "g",
) -> None:
    """Run every monitoring rule over the open loans, act, and print what was done."""
    from .. import jobs
    from ..keys import load_or_create_key

    try:
        day = date.fromisoformat(as_of) if as_of else datetime.now(UTC).date()
    except ValueError:
        fail("BAD_DATE", f"--as-of must be YYYY-MM-DD, got {as_of!r}")
    obs, isv = _observations(observations) if observations else ({}, {})
    cfg = settings()
    key = load_or_create_key(cfg.resolved_key_dir, jobs.CONSENT_MANAGER_KEY).public_key()
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
