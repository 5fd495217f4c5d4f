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
        Path | None,
        typer.Option("--scores", help="scores.csv of a scoring job (merchant_id,isv_id,g): "
                     "lines of the platform merchants."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    g_version: Annotated[str, typer.Option("--g-version", help="The g model's id.")] = "g",
    off_scores: Annotated[
        Path | None,
        typer.Option("--off-platform-scores", help="scores.csv of a pd-erp-only scoring job: "
                     "lines of the merchants with no platform row."),
    ] = None,
    off_turnover: Annotated[
        Path | None,
        typer.Option("--off-platform-turnover", help="signals.csv (merchant_id,isv_id,signal,"
                     "value): the revenue_3m rows are the ERP-reported 3-month revenue in fen."),
    ] = None,
    off_model_dir: Annotated[
        Path | None,
        typer.Option("--off-platform-model-dir", help="The training job's output directory of "
                     "the model that scored --off-platform-scores (lineage.json, model.npz)."),
    ] = None,
    off_calibrate: Annotated[
        bool,
        typer.Option("--off-platform-calibrate", help="The off-platform scores are pd-erp g: map "
                     "them to a PD on the platform merchants' labels."),
    ] = False,
) -> None:
    """Pre-approve merchants: platform merchants with f only and with consented ERP scores
    (--scores); off-platform merchants from an ERP-only PD and ERP-reported turnover
    (--off-platform-scores, --off-platform-turnover, --off-platform-model-dir)."""
    from federation.schema import LABEL

    from .. import jobs
    from ..keys import load_or_create_key

    off_parts = (off_turnover, off_model_dir)
    if scores is None and off_scores is None:
        fail("BAD_ARGUMENT", "give --scores, --off-platform-scores, or both")
    if off_scores is not None and None in off_parts:
        fail("BAD_ARGUMENT", "--off-platform-scores needs --off-platform-turnover and "
             "--off-platform-model-dir")
    if off_scores is None and (off_calibrate or any(p is not None for p in off_parts)):
        fail("BAD_ARGUMENT", "--off-platform-turnover, --off-platform-model-dir and "
             "--off-platform-calibrate go with --off-platform-scores")
    cfg = settings()
    try:
        wn = jobs.world_nodes(cfg, world)
        platform = pd.read_parquet(wn.platform_path)
        g = None
        if scores is not None:
            g = pd.read_csv(scores, dtype={"merchant_id": str, "isv_id": str})
    except (jobs.JobSetupError, OSError, ValueError) as exc:
        fail(getattr(exc, "code", "BAD_INPUT"), str(exc))
    if g is not None and not {"merchant_id", "isv_id", "g"} <= set(g.columns):
        fail("BAD_INPUT", f"{scores} needs columns merchant_id, isv_id, g")
    off = None
    if off_scores is not None:
        # Every off-platform input is read and checked before the database is touched.
        try:
            model = credit.read_offplatform_model(
                off_model_dir, calibrate=off_calibrate  # type: ignore[arg-type]
            )
            off = (
                model,
                credit.read_score_rows(off_scores),
                *credit.read_turnover(off_turnover),  # type: ignore[arg-type]
            )
        except credit.CreditError as exc:
            fail(exc.code, str(exc))
    key = load_or_create_key(cfg.resolved_key_dir, jobs.CONSENT_MANAGER_KEY).public_key()
    now = datetime.now(UTC)
    from federation import get_spec

    cats = get_spec("pd-erp").categories
    decisions: list[credit.LineDecision] = []
    off_decisions: list[credit.LineDecision] = []
    stored = outcome = None
    try:
        with session() as s:
            version, pol = policy_in_force(s)
            if g is not None:
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
                    pds = credit.platform_pds(
                        platform, platform[LABEL].to_numpy(), gated, seed=seed
                    )
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
                    models={"f": f"hgb-oof-seed{seed}", "g": g_version,
                            "combiner": stored.model_id},
                )
            if off is not None:
                model, off_g, revenue, digest = off
                off_allowed = credit.covering_consents(
                    s,
                    set(off_g),
                    purpose=credit.SCORING_PURPOSE,
                    categories=model.categories,
                    consumer=jobs.DEFAULT_CONSUMER,
                    at=now,
                    consent_manager_key=key,
                )
                labels = dict(
                    zip(platform["merchant_id"].astype(str), platform[LABEL].astype(int),
                        strict=True)
                )
                outcome = credit.offplatform_decision_inputs(
                    off_g, revenue, platform_labels=labels, allowed=off_allowed, model=model,
                    turnover_digest=digest,
                )
                off_decisions = credit.decide_lines(
                    s,
                    version,
                    pol,
                    outcome.merchants,
                    models={"g_only": model.recorded_as,
                            "turnover": f"{credit.TURNOVER_SIGNAL}@sha256:{digest[:16]}"},
                )
    except credit.CreditError as exc:
        fail(exc.code, str(exc))
    if g is not None and stored is not None:
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
    if off is not None and outcome is not None:
        lined = [d for d in off_decisions if d.line_with > 0]
        priced = [d.pd_with for d in off_decisions if d.pd_with is not None]
        # The mean PD is printed because nothing else checks the model's calibration: a
        # DP-trained pd-erp-only can rank well and still put its PDs far under the default
        # rate (README: "Off-platform merchants: measured").
        mean_pd = f"mean PD {100 * sum(priced) / len(priced):.2f} % over {len(priced)}; " \
            if priced else ""
        console.print(
            f"{len(off_decisions)} off-platform merchants decided under policy v{version} with "
            f"{off[0].recorded_as}: {mean_pd}{len(lined)} given a line (all ISV uplift, "
            f"{sum(d.line_with for d in lined) // 100:,} yuan); "
            f"{outcome.without_turnover} without a revenue_3m row got no line; "
            f"{outcome.without_consent} scores without a covering consent were not used; "
            f"{outcome.on_platform_ignored} scores of merchants with a platform row were "
            "ignored (the platform path decides them)"
            + (f"; calibrated on {outcome.calibration_size} platform merchants"
               if outcome.calibration_size else ""),
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
