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

from ..keys import load_or_create_key, public_key_pem
from ._common import console, fail, sessions, settings

app = typer.Typer(no_args_is_help=True)

DEFAULT_CONSUMER = "platform"


def _world(world: Path) -> dict[str, Any]:
    meta = world / "world.json"
    if not meta.is_file():
        fail("BAD_WORLD", f"{world} has no world.json (write one with `fedgate data synth`)")
    doc: dict[str, Any] = json.loads(meta.read_text("utf-8"))
    return doc


def _nodes(world: Path, doc: dict[str, Any]) -> tuple[list[Any], Path]:
    """Node configs for the world's ISVs, their keys, and the node-keys registry file."""
    from federation.apps import NodeConfig

    cfg = settings()
    key_dir = cfg.resolved_key_dir
    gateway_pub = key_dir / "gateway.pub.pem"
    gateway_pub.write_text(public_key_pem(load_or_create_key(key_dir, "gateway")), "utf-8")
    nodes, registry = [], {}
    for isv, info in sorted(doc.get("isvs", {}).items()):
        node_key_dir = key_dir / "nodes"
        key = load_or_create_key(node_key_dir, isv)
        pub = node_key_dir / f"{isv}.pub.pem"
        pub.write_text(public_key_pem(key), "utf-8")
        registry[isv] = str(pub.resolve())
        nodes.append(
            NodeConfig(
                isv_id=isv,
                erp_path=(world / str(info["file"])).resolve(),
                node_key=(node_key_dir / f"{isv}.pem").resolve(),
                gateway_key=gateway_pub.resolve(),
                state_dir=(cfg.data_dir / "nodes" / isv).resolve(),
            )
        )
    if not nodes:
        fail("BAD_WORLD", f"{world}/world.json lists no ISVs")
    registry_path = key_dir / "node-keys.json"
    registry_path.write_text(json.dumps(registry, indent=2), "utf-8")
    return nodes, registry_path


def _base_config(
    *, job_id: str, mode: str, spec: str, consumer: str, out: Path | None, registry: Path
) -> dict[str, Any]:
    cfg = settings()
    sessions()  # creates the schema on first use
    return {
        "job-id": job_id,
        "mode": mode,
        "spec": spec,
        "db-url": cfg.resolved_database_url,
        "gateway-key": str((cfg.resolved_key_dir / "gateway.pem").resolve()),
        "node-keys": str(registry.resolve()),
        "data-consumer": consumer,
        "out-dir": str((out or cfg.data_dir / "jobs" / job_id).resolve()),
    }


def _overrides(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _run(config: dict[str, Any], nodes: list[Any], verbose: bool) -> Any:
    from federation import FederationError, SimulationRuntime, run_job

    try:
        return run_job(config, nodes, runtime=SimulationRuntime(verbose=verbose))
    except FederationError as exc:
        reasons = getattr(exc, "reasons", ())
        detail = "".join(f"\n  - {r}" for r in reasons[:20])
        fail(exc.code, f"{exc}{detail}" if detail else str(exc))


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
    secagg: Annotated[bool, typer.Option("--secagg", help="Aggregate with SecAgg+.")] = False,
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
    doc = _world(world)
    nodes, registry = _nodes(world, doc)
    job = job_id or f"train-{uuid.uuid4().hex[:12]}"
    config = _base_config(
        job_id=job, mode="train", spec=spec, consumer=consumer, out=out, registry=registry
    )
    config["labels-path"] = str((world / str(doc["platform_file"])).resolve())
    config.update(_overrides(rounds=rounds, strategy=strategy, **{"dp-epsilon": dp_epsilon}))
    config["secagg"] = secagg
    if strategy == "fedprox":
        config.setdefault("proximal-mu", 0.01)
    result = _run(config, nodes, verbose)
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
    lineage_file = model_dir / "lineage.json"
    if not lineage_file.is_file():
        fail("BAD_MODEL", f"{model_dir} has no lineage.json (not a training job's output)")
    lineage = json.loads(lineage_file.read_text("utf-8"))
    nodes, registry = _nodes(world, _world(world))
    job = job_id or f"score-{uuid.uuid4().hex[:12]}"
    config = _base_config(
        job_id=job,
        mode="score",
        spec=str(lineage["spec"]["spec"]),
        consumer=consumer,
        out=out,
        registry=registry,
    )
    config.update({k: v for k, v in lineage["spec"].items() if k != "spec"})
    config["model-dir"] = str(model_dir.resolve())
    result = _run(config, nodes, verbose)
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

    nodes, registry = _nodes(world, _world(world))
    run_config = _base_config(
        job_id=job_id, mode="train", spec=spec, consumer=consumer, out=None, registry=registry
    )
    run_config.update(_overrides(**{"dp-epsilon": dp_epsilon}))
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
        jobs = ", ".join(
            f"{j}:{epsilon_of([tuple(h) for h in v['history']], float(v['delta'])):.2f}"
            for j, v in sorted(state["jobs"].items())
        )
        table.add_row(node.isv_id, jobs or "-", f"{worst:.2f}", str(len(merchants)))
    console.print(table)
    if model.dp is None:
        console.print(f"{spec} trains without DP: no budget applies")
        return
    from federation import check_budget

    try:
        check_budget(run_config, nodes)
    except BudgetExceeded as exc:
        fail(exc.code, str(exc), exit_code=2)
    console.print(f"a {spec} job (ε={model.dp.epsilon}, lifetime {model.dp.lifetime_epsilon}) fits")
