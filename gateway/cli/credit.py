"""``fedgate credit …``: the credit policy in force, line decisions, and their explanation.

Thin: the work is in :mod:`gateway.credit`. The policy is read from the settings'
policy file (``<data-dir>/credit-policy.toml``) when it exists and activated if its
text changed (a ``credit.policy`` ledger entry); otherwise fedgate's default
policy is in force. A refusal prints ``error[CODE]: …`` and exits 1 with nothing stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from sqlalchemy.orm import Session
from threadpoolctl import threadpool_limits

from .. import credit
from ._common import console, fail, read_session, session, settings

app = typer.Typer(no_args_is_help=True)

__all__ = ["app", "policy_in_force"]


def policy_in_force(s: Session) -> tuple[int, credit.CreditPolicy]:
    """The policy file's text activated (if it changed), else the current or default policy."""
    path = settings().resolved_credit_policy_file
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        version = credit.activate_policy(s, text)
        return version, credit.parse_policy(text)
    return credit.current_policy(s)


@app.command("policy")
def policy(
    show_default: Annotated[
        bool, typer.Option("--default", help="Print fedgate's default policy text instead.")
    ] = False,
) -> None:
    """Print the credit policy in force (version, SHA-256, text); activates a changed file."""
    if show_default:
        console.print(credit.DEFAULT_POLICY_TOML, markup=False, highlight=False)
        return
    try:
        with session() as s:
            version, pol = policy_in_force(s)
    except credit.CreditError as exc:
        fail(exc.code, str(exc))
    console.print(f"credit policy v{version}  sha256 {pol.text_hash}", highlight=False)
    console.print(pol.text, markup=False, highlight=False)


@app.command("decide")
def decide(
    world: Annotated[Path, typer.Option("--world", help="World directory (fedgate data synth).")],
    scores: Annotated[
        Path, typer.Option("--scores", help="scores.csv of a scoring job (merchant_id,isv_id,g).")
    ],
    seed: Annotated[int, typer.Option("--seed")] = 0,
    g_version: Annotated[str, typer.Option("--g-version", help="The g model's id.")] = "g",
) -> None:
    """Pre-approve every platform merchant: lines with f only and with consented ERP scores."""
    from federation.schema import LABEL

    from .. import jobs
    from ..keys import load_or_create_key

    cfg = settings()
    try:
        wn = jobs.world_nodes(cfg, world)
        platform = pd.read_parquet(wn.platform_path)
        g = pd.read_csv(scores, dtype={"merchant_id": str, "isv_id": str})
    except (jobs.JobSetupError, OSError, ValueError) as exc:
        fail(getattr(exc, "code", "BAD_INPUT"), str(exc))
    if not {"merchant_id", "isv_id", "g"} <= set(g.columns):
        fail("BAD_INPUT", f"{scores} needs columns merchant_id, isv_id, g")
    key = load_or_create_key(cfg.resolved_key_dir, jobs.CONSENT_MANAGER_KEY).public_key()
    now = datetime.now(UTC)
    from federation import get_spec

    cats = get_spec("pd-erp").categories
    try:
        with session() as s:
            version, pol = policy_in_force(s)
            allowed = credit.covering_consents(
                s,
                {(str(m), str(k)) for m, k in zip(g["merchant_id"], g["isv_id"], strict=True)},
                purpose=credit.SCORING_PURPOSE,
                categories=cats,
                consumer=jobs.DEFAULT_CONSUMER,
                at=now,
                consent_manager_key=key,
            )
            gated = credit.consented_scores(g, allowed)
            # One OpenMP thread, as the demo: on a small busy box boosting threads fight.
            with threadpool_limits(1):
                pds = credit.platform_pds(platform, platform[LABEL].to_numpy(), gated, seed=seed)
            merchants = credit.merchant_scores(
                pds, platform["sales"].to_numpy(), lambda m, k: allowed.get((m, k))
            )
            # Persisted (hash in the ledger) so monitoring can map a re-scored g to a PD.
            stored = credit.save_combiner(
                s, cfg.data_dir / credit.COMBINER_SUBDIR, pds.combiner, pds.merchant_id,
                pds.f_scores,
            )
            decisions = credit.decide_lines(
                s,
                version,
                pol,
                merchants,
                models={"f": f"hgb-oof-seed{seed}", "g": g_version, "combiner": stored.model_id},
            )
    except credit.CreditError as exc:
        fail(exc.code, str(exc))
    up = sum(1 for d in decisions if d.uplift > 0)
    down = sum(1 for d in decisions if d.uplift < 0)
    new = sum(1 for d in decisions if d.line_f == 0 and d.line_with > 0)
    console.print(
        f"{len(decisions)} merchants decided under policy v{version}: {up} raised, {down} "
        f"lowered, {new} given a line they did not have; {len(g) - len(gated)} g scores "
        "without a covering consent were not used"
    )
    console.print(
        f"combiner v{stored.version} ({stored.model_id}) stored for monitoring's re-scoring",
        highlight=False,
    )


@app.command("explain")
def explain(merchant: Annotated[str, typer.Argument(help="Merchant id.")]) -> None:
    """Explain a merchant's latest line decision in words."""
    try:
        with read_session() as s:
            text = credit.explain(s, merchant)
    except credit.CreditError as exc:
        fail(exc.code, str(exc))
    console.print(text, markup=False, highlight=False)
