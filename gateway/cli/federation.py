"""``fedgate fl …`` commands: run a federated training job, score merchants, check DP budgets.

Thin: each command builds the embedded default around a world directory (the
output of ``fedgate data synth``: ``world.json``, ``platform.<fmt>``, one ERP
table per ISV), calls :func:`federation.run_job` on Flower's simulation
runtime, and prints a table (or JSON with ``--json``). Keys are generated on
first use under the key directory (gateway key, one key per simulated node);
each simulated node keeps its DP ledger and replay guard under
``<data-dir>/nodes/<isv>/``. Consents come from the local database
(``fedgate consent grant``). Failures print ``error[CODE]: …`` and exit non-zero.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .. import jobs
from ._common import console, fail, sessions, settings

app = typer.Typer(no_args_is_help=True)

DEFAULT_CONSUMER = jobs.DEFAULT_CONSUMER


def _nodes(world: Path) -> jobs.WorldNodes:
    """The world's simulated nodes (keys created on first use); exits on a bad world."""
    try:
        return jobs.world_nodes(settings(), world)
    except jobs.JobSetupError as exc:
        fail(exc.code, str(exc))


def _run(config: dict[str, Any], nodes: list[Any], verbose: bool) -> Any:
    from federation import FederationError, SimulationRuntime, run_job

    cohort = jobs.ConsentCohort(settings())
    try:
        return run_job(
            config, nodes, cohort_source=cohort, runtime=SimulationRuntime(verbose=verbose)
        )
    except FederationError as exc:
        reasons = getattr(exc, "reasons", ())
        detail = "".join(f"\n  - {r}" for r in reasons[:20])
        fail(exc.code, f"{exc}{detail}" if detail else str(exc))
    finally:
        cohort.close()


@app.command("run")
def run(
    spec: Annotated[
        str, typer.Option("--spec", help="Model spec: pd-erp, pd-erp-only, fake-trade.")
    ],
    world: Annotated[Path, typer.Option("--world", help="World directory (fedgate data synth).")],
    job_id: Annotated[str | None, typer.Option("--job-id")] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", min=1)] = None,
    dp_epsilon: Annotated[
        float | None, typer.Option("--dp-epsilon", min=0.0, help="Job ε; 0 = no DP.")
    ] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", help="fedavg or fedprox.")] = None,
    secagg: Annotated[
        bool | None,
        typer.Option(
            "--secagg/--no-secagg", help="SecAgg+ (default: on wherever 3 or more nodes join)."
        ),
    ] = None,
    consumer: Annotated[str, typer.Option("--consumer")] = DEFAULT_CONSUMER,
    out: Annotated[Path | None, typer.Option("--out", help="Job output directory.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    verbose: Annotated[bool, typer.Option("--verbose")] = False,
) -> None:
    """Train a federated model on the world's ISV nodes (simulation runtime)."""
    from federation import SpecError, get_spec

    try:
        label = get_spec(spec).label
    except SpecError as exc:
        fail(exc.code, str(exc))
    wn = _nodes(world)
    sessions()  # creates the schema on first use
    job = job_id or f"train-{uuid.uuid4().hex[:12]}"
    try:
        config = jobs.train_run_config(
            settings(),
            wn,
            job_id=job,
            spec=spec,
            consumer=consumer,
            out=out,
            rounds=rounds,
            strategy=strategy,
            secagg=secagg,
            **{"dp-epsilon": dp_epsilon},
        )
    except jobs.JobSetupError as exc:
        fail(exc.code, str(exc))
    result = _run(config, list(wn.nodes), verbose)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "job_id": result.job_id,
                    "label": label,
                    "rounds": [
                        {"round": r.round, "per_node": r.per_node, "auc": r.weighted("auc")}
                        for r in result.rounds
                    ],
                    "epsilon": result.epsilon,
                    "model_path": str(result.model_path),
                    "seconds": result.seconds,
                },
                indent=2,
            )
        )
        return
    table = Table("round", "AUC", "KS", "Brier", *result.nodes, title=f"{job} ({spec}, {label})")
    for r in result.rounds:
        per = [f"{r.per_node[n]['auc']:.3f}" if n in r.per_node else "-" for n in result.nodes]
        table.add_row(
            str(r.round),
            f"{r.weighted('auc'):.3f}",
            f"{r.weighted('ks'):.3f}",
            f"{r.weighted('brier'):.4f}",
            *per,
        )
    console.print(table)
    eps = ", ".join(f"{k}={v:.2f}" for k, v in sorted(result.epsilon.items())) or "no DP"
    console.print(f"ε spent: {eps}; model: {result.model_path}; {result.seconds:.1f} s")


@app.command("score")
def score(
    model_dir: Annotated[Path, typer.Option("--model-dir", help="A training job's output dir.")],
    world: Annotated[Path, typer.Option("--world", help="World directory (fedgate data synth).")],
    job_id: Annotated[str | None, typer.Option("--job-id")] = None,
    consumer: Annotated[str, typer.Option("--consumer")] = DEFAULT_CONSUMER,
    out: Annotated[Path | None, typer.Option("--out")] = None,
    verbose: Annotated[bool, typer.Option("--verbose")] = False,
) -> None:
    """Collect g-scores from the nodes for merchants whose consent covers credit_scoring."""
    try:
        jobs.read_lineage(model_dir)  # refuse a bad model dir before any key is made
    except jobs.JobSetupError as exc:
        fail(exc.code, str(exc))
    wn = _nodes(world)
    sessions()  # creates the schema on first use
    job = job_id or f"score-{uuid.uuid4().hex[:12]}"
    try:
        config = jobs.score_run_config(
            settings(), wn, job_id=job, model_dir=model_dir, consumer=consumer, out=out
        )
    except jobs.JobSetupError as exc:
        fail(exc.code, str(exc))
    result = _run(config, list(wn.nodes), verbose)
    console.print(f"scores: {result.scores_path} ({result.seconds:.1f} s)")


@app.command("budget")
def budget(
    world: Annotated[Path, typer.Option("--world", help="World directory (fedgate data synth).")],
    spec: Annotated[str, typer.Option("--spec")] = "pd-erp",
    job_id: Annotated[str, typer.Option("--job-id", help="Check this (new) job.")] = "next-job",
    dp_epsilon: Annotated[float | None, typer.Option("--dp-epsilon", min=0.0)] = None,
    consumer: Annotated[str, typer.Option("--consumer")] = DEFAULT_CONSUMER,
) -> None:
    """Show each node's DP spending and whether a job of ``--spec`` still fits."""
    from federation import BudgetExceeded, FederationError, PrivacyLedger, spec_from_run_config
    from federation.dp import epsilon_of

    wn = _nodes(world)
    sessions()  # creates the schema on first use
    nodes = list(wn.nodes)
    run_config = jobs.base_run_config(
        settings(), job_id=job_id, mode="train", spec=spec, registry=wn.registry, consumer=consumer
    )
    if dp_epsilon is not None:
        run_config["dp-epsilon"] = dp_epsilon
    try:
        model = spec_from_run_config(run_config)
    except FederationError as exc:
        fail(exc.code, str(exc))
    table = Table("node", "jobs", "max merchant ε", "merchants charged")
    for node in nodes:
        ledger = PrivacyLedger(node.privacy_ledger_path)
        state = ledger._read()  # noqa: SLF001 - a read-only summary of the node's own file
        merchants = state["merchants"]
        worst = max((float(m["epsilon"]) for m in merchants.values()), default=0.0)
        spent = ", ".join(
            f"{j}:{epsilon_of([tuple(h) for h in v['history']], float(v['delta'])):.2f}"
            for j, v in sorted(state["jobs"].items())
        )
        table.add_row(node.isv_id, spent or "-", f"{worst:.2f}", str(len(merchants)))
    console.print(table)
    from federation.lifetime import MerchantPrivacyAccount

    account = MerchantPrivacyAccount(jobs.privacy_account_path(settings()))
    charged, worst_platform = account.summary()
    console.print(
        f"platform account (all ISVs): {charged} merchants charged, max ε {worst_platform:.2f}"
    )
    if model.dp is None:
        console.print(f"{spec} trains without DP: no budget applies")
        return
    from federation import check_budget

    cohort = jobs.ConsentCohort(settings())
    try:
        check_budget(run_config, nodes, cohort_source=cohort)
    except BudgetExceeded as exc:
        fail(exc.code, str(exc), exit_code=2)
    finally:
        cohort.close()
    console.print(f"a {spec} job (ε={model.dp.epsilon}, lifetime {model.dp.lifetime_epsilon}) fits")
