"""``fedgate fl …``: train federatedly, score, fit f_platform and the combiner, check budgets.

Thin: each command builds the embedded default around a job configuration
(``--config job.toml``, :mod:`federation.jobconfig`: the platform table, each
ISV's source with its column mapping, the label, the hold-out rule) or a world
directory (``--world``, the output of ``fedgate data synth``), calls
:func:`federation.run_job` on Flower's simulation runtime, and prints a table
(or JSON with ``--json``). Keys are generated on first use under the key
directory (gateway key, one key per simulated node); each simulated node keeps
its DP ledger and replay guard under ``<data-dir>/nodes/<isv>/``. Consents come
from the local database (``fedgate consent grant|import``). Flower and Ray logs
go to ``<job dir>/job.log`` (``--verbose`` keeps them on the terminal). Failures
print ``error[CODE]: …`` and exit non-zero.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from .. import jobs
from ._common import console, fail, session, sessions, settings

if TYPE_CHECKING:
    from federation.runner import RoundMetrics

app = typer.Typer(no_args_is_help=True)

DEFAULT_CONSUMER = jobs.DEFAULT_CONSUMER


def _nodes(world: Path) -> jobs.WorldNodes:
    """The world's simulated nodes (keys created on first use); exits on a bad world."""
    try:
        return jobs.world_nodes(settings(), world)
    except jobs.JobSetupError as exc:
        fail(exc.code, str(exc))


def _job_config(path: Path, *, check: bool = True, extras: Any = ()) -> Any:
    """Load (and, by default, validate every table of) a job config; exits on any error.

    Runs before any Flower or Ray start-up, with the validator ``fedgate data check`` uses;
    ``extras`` are the job's extra fields, which every ISV must declare identically.
    """
    from federation import DataError
    from federation.jobconfig import check_job_config, load_job_config

    try:
        cfg = load_job_config(path)
        if check:
            check_job_config(cfg, extras)
    except DataError as exc:
        fail(exc.code, str(exc))
    return cfg


_WorldOption = Annotated[
    Path | None, typer.Option("--world", help="World directory (fedgate data synth).")
]
_ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="Job configuration TOML (tables, mappings).")
]


def _job_nodes(world: Path | None, config: Path | None, *, label: str | None,
               out_dir: Path, extras: Any = ()) -> jobs.WorldNodes:
    """Nodes of a job config (validated first; labels under ``out_dir``) or of a world."""
    if (world is None) == (config is None):
        fail("BAD_ARGUMENT", "give exactly one of --config (job TOML) or --world (data synth)")
    if config is None:
        return _nodes(world)  # type: ignore[arg-type]
    cfg = _job_config(config, extras=extras)  # every table validated before any Ray start-up
    try:
        return jobs.config_nodes(settings(), cfg, label=str(label), labels_dir=out_dir)
    except jobs.JobSetupError as exc:
        fail(exc.code, str(exc))


def _holdout_buckets(config: Path | None) -> int | None:
    """The job config's hold-out buckets (``None`` for a world: the nodes' default)."""
    return None if config is None else int(_job_config(config, check=False).holdout.buckets)


def _spec_options(spec: str) -> dict[str, Any]:
    """``--spec``: a built-in name, or a TOML file (its name becomes the job's spec name)."""
    from federation import SpecError, get_spec
    from federation.specs import SPEC_FILE_KEY, load_spec_file

    try:
        if spec.endswith(".toml"):
            model = load_spec_file(Path(spec))
            return {"spec": model.name, SPEC_FILE_KEY: str(Path(spec).resolve()), "_model": model}
        return {"spec": spec, "_model": get_spec(spec)}
    except SpecError as exc:
        fail(exc.code, str(exc))


def _round_json(r: RoundMetrics) -> dict[str, object]:
    """One round for ``--json``: the pooled AUC and its noise std (null if unknown)."""
    pooled, noise = r.pooled_auc()
    return {
        "round": r.round,
        "per_node": r.per_node,
        "auc": None if math.isnan(pooled) else pooled,
        "auc_std": None if math.isinf(noise) else noise,
    }


def _refusals(wn: jobs.WorldNodes, config: dict[str, Any], mode: str) -> Any:
    """Per-ISV consent refusals for this job (before it starts)."""
    from federation import FederationError, spec_from_run_config
    from federation.apps.server_app import load_public_key

    from ..preflight import consent_refusals, uses_needed

    model = spec_from_run_config(config)
    merchants: dict[str, list[str]] = {}
    for node in wn.nodes:
        try:
            merchants[node.isv_id] = node.erp_connector().merchant_ids()
        except FederationError:  # the job itself reports an unreadable table
            continue
    purpose = model.purpose if mode == "train" else "credit_scoring"
    with session() as s:
        return consent_refusals(
            s, merchants, data_consumer=str(config["data-consumer"]), purpose=purpose,
            categories=model.categories, needed=uses_needed(mode, model.rounds),
            consent_manager_key=load_public_key(Path(str(config["consent-key"]))),
        )


def _run(config: dict[str, Any], nodes: list[Any], verbose: bool, refusals: Any = None,
         phases: tuple[str, int] = ("rounds", 0), merchants: list[str] | None = None) -> Any:
    from federation import FederationError, SimulationRuntime, run_job

    from ._progress import LOG_FILE, job_output

    out_dir = Path(str(config["out-dir"]))
    cohort = jobs.ConsentCohort(settings())
    source: Any = cohort if merchants is None else jobs.ListedCohort(cohort, merchants)
    name, total = phases
    try:
        with job_output(out_dir, verbose=verbose) as progress:
            progress.phase("starting nodes + statistics" if name == "rounds" else name)

            def on_round(log: Any) -> None:
                if log.round == 1:
                    progress.phase("training rounds", total)
                auc = [m.get("auc") for m in log.evaluate.values() if "auc" in m]
                note = f"(round {log.round}" + (f", node AUC {max(auc):.3f})" if auc else ")")
                progress.advance("training rounds", note)

            result = run_job(
                config, nodes, cohort_source=source, on_round=on_round,
                runtime=SimulationRuntime(verbose=verbose),
            )
            progress.finish("training rounds" if name == "rounds" else name)
        return result
    except FederationError as exc:
        reasons = list(getattr(exc, "reasons", ()))
        if refusals is not None:
            reasons += [f"consent: {line}" for line in refusals.lines()]
        detail = "".join(f"\n  - {r}" for r in reasons[:20])
        log_note = "" if verbose else f"\n  (Flower and Ray logs: {out_dir / LOG_FILE})"
        fail(exc.code, f"{exc}{detail}{log_note}" if detail else f"{exc}{log_note}")
    finally:
        cohort.close()


@app.command("run")
def run(
    spec: Annotated[
        str,
        typer.Option("--spec", help="Built-in spec (pd-erp, pd-erp-only, fake-trade) or a "
                     "spec TOML file."),
    ],
    world: _WorldOption = None,
    config_file: _ConfigOption = None,
    job_id: Annotated[str | None, typer.Option("--job-id")] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", min=1)] = None,
    dp_epsilon: Annotated[
        float | None, typer.Option("--dp-epsilon", min=0.0, help="Job ε; 0 = no DP.")
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", min=0.0, help="Learning rate.")] = None,
    local_epochs: Annotated[int | None, typer.Option("--local-epochs", min=1)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    bins: Annotated[int | None, typer.Option("--bins", min=2, help="Quantile bins.")] = None,
    scaling: Annotated[
        str | None,
        typer.Option("--scaling", help="Preprocessing: bins or standardise (levels = --bins)."),
    ] = None,
    family: Annotated[
        str | None, typer.Option("--family", help="Model family: logistic or mlp.")
    ] = None,
    size: Annotated[int | None, typer.Option("--size", min=1, help="MLP hidden units.")] = None,
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
    verbose: Annotated[bool, typer.Option("--verbose", help="Flower/Ray logs on the terminal.")]
    = False,
) -> None:
    """Train a federated model on the ISV nodes (simulation runtime); keeps the best round."""
    from federation import SpecError, spec_from_run_config

    spec_opts = _spec_options(spec)
    chosen = spec_opts.pop("_model")
    job = job_id or f"train-{uuid.uuid4().hex[:12]}"
    out_dir = (out or settings().data_dir / "jobs" / job).resolve()
    wn = _job_nodes(world, config_file, label=chosen.label, out_dir=out_dir,
                    extras=chosen.extras)
    sessions()  # creates the schema on first use
    overrides = {
        "rounds": rounds, "lr": lr, "local-epochs": local_epochs, "batch-size": batch_size,
        "n-bins": bins, "scaling": scaling, "arch": family, "hidden": size, "strategy": strategy,
        "dp-epsilon": dp_epsilon,
        "holdout-buckets": _holdout_buckets(config_file),
    }
    try:
        config = jobs.train_run_config(
            settings(), wn, job_id=job, spec=str(spec_opts["spec"]), consumer=consumer,
            out=out_dir, secagg=secagg, **{k: v for k, v in spec_opts.items() if k != "spec"},
            **overrides,
        )
        model = spec_from_run_config(config)  # a bad override fails here, before Ray
    except jobs.JobSetupError as exc:
        fail(exc.code, str(exc))
    except SpecError as exc:
        fail(exc.code, str(exc))
    refusals = _refusals(wn, config, "train")
    result = _run(config, list(wn.nodes), verbose, refusals, ("rounds", model.rounds))
    doc = json.loads((result.out_dir / "result.json").read_text("utf-8"))
    best = doc.get("best_round")
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "job_id": result.job_id,
                    "label": model.label,
                    "rounds": [
                        _round_json(r) for r in result.rounds
                    ],
                    "best_round": best,
                    "epsilon": result.epsilon,
                    "model_path": str(result.model_path),
                    "consent_refusals": refusals.denied,
                    "seconds": result.seconds,
                },
                indent=2,
            )
        )
        return
    table = Table("round", "AUC ± noise", "KS", "Brier", *result.nodes,
                  title=f"{job} ({model.name}, {model.label}): validation on the nodes' hold-out")
    for r in result.rounds:
        per = [f"{r.per_node[n]['auc']:.3f}" if n in r.per_node else "-" for n in result.nodes]
        pooled, noise = r.pooled_auc()
        table.add_row(
            f"{r.round}{' (kept)' if r.round == best else ''}",
            f"{pooled:.3f} ± {noise:.3f}",
            f"{r.weighted('ks'):.3f}",
            f"{r.weighted('brier'):.4f}",
            *per,
        )
    console.print(table)
    for line in refusals.lines():
        console.print(f"consent refusals: {line}")
    eps = ", ".join(f"{k}={v:.2f}" for k, v in sorted(result.epsilon.items())) or "no DP"
    kept = f"round {best}" if best is not None else "last round"
    console.print(f"ε spent: {eps}; model ({kept}): {result.model_path}; "
                  f"{result.seconds:.1f} s")


@app.command("score")
def score(
    model_dir: Annotated[Path, typer.Option("--model-dir", help="A training job's output dir.")],
    world: _WorldOption = None,
    config_file: _ConfigOption = None,
    job_id: Annotated[str | None, typer.Option("--job-id")] = None,
    consumer: Annotated[str, typer.Option("--consumer")] = DEFAULT_CONSUMER,
    out: Annotated[Path | None, typer.Option("--out")] = None,
    merchants_file: Annotated[
        Path | None,
        typer.Option("--merchants", help="Score only these merchants (one id per line, or a "
                     "CSV whose first column is merchant_id), e.g. the off-platform ones."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose")] = False,
) -> None:
    """Collect g-scores from the nodes for merchants whose consent covers credit_scoring."""
    try:
        lineage = jobs.read_lineage(model_dir)  # refuse a bad model dir before any key is made
        listed = None if merchants_file is None else jobs.read_merchant_list(merchants_file)
    except jobs.JobSetupError as exc:
        fail(exc.code, str(exc))
    job = job_id or f"score-{uuid.uuid4().hex[:12]}"
    out_dir = (out or settings().data_dir / "jobs" / job).resolve()
    wn = _job_nodes(world, config_file, label=str(lineage["spec"]["label"]), out_dir=out_dir)
    sessions()  # creates the schema on first use
    try:
        config = jobs.score_run_config(
            settings(), wn, job_id=job, model_dir=model_dir, consumer=consumer, out=out_dir
        )
    except jobs.JobSetupError as exc:
        fail(exc.code, str(exc))
    refusals = _refusals(wn, config, "score")
    result = _run(config, list(wn.nodes), verbose, refusals, ("scoring", 1), listed)
    for line in refusals.lines():
        console.print(f"consent refusals: {line}")
    console.print(f"scores: {result.scores_path} ({result.seconds:.1f} s)")


@app.command("platform")
def platform(
    config_file: Annotated[Path, typer.Option("--config", help="Job configuration TOML.")],
    out: Annotated[Path, typer.Option("--out", help="CSV of f scores to write.")],
    kind: Annotated[str, typer.Option("--kind", help="hgb or logistic.")] = "logistic",
    folds: Annotated[int, typer.Option("--folds", min=2)] = 5,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Fit f_platform on the labelled platform rows; write cross-fitted f for every merchant.

    Labelled merchants get out-of-fold scores (a model that never saw them);
    unlabelled ones the model fitted on all labelled rows.
    """
    from federation import DataError
    from federation.models import platform_scores

    cfg = _job_config(config_file, check=False)
    try:
        from federation.jobconfig import read_platform

        frame = read_platform(cfg)
        scores = platform_scores(frame, kind=kind, folds=folds, seed=seed)
    except (DataError, ValueError) as exc:
        fail(getattr(exc, "code", "BAD_ARGUMENT"), str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    scores.to_csv(out, index=False)
    console.print(f"f_platform ({kind}): {int(scores['labelled'].sum())} labelled merchants "
                  f"scored out of fold, {int((~scores['labelled']).sum())} unlabelled; "
                  f"cross-fitted AUC {scores.attrs['oof_auc']:.3f}; wrote {out}")


@app.command("combine")
def combine(
    config_file: Annotated[Path, typer.Option("--config", help="Job configuration TOML.")],
    f_scores: Annotated[Path, typer.Option("--f", help="f scores (fedgate fl platform).")],
    g_scores: Annotated[Path, typer.Option("--g", help="g scores (fedgate fl score).")],
    out: Annotated[Path, typer.Option("--out", help="CSV of PD estimates to write.")],
    evaluate: Annotated[
        Path | None,
        typer.Option("--evaluate", help="CSV with merchant_id and label of merchants held "
                     "back from everything (report AUC f vs f+g on them)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Fit the gated combiner on out-of-sample g scores and write both PDs per merchant.

    The combiner is fitted only on the nodes' hold-out merchants (g never trained
    on them); if adding g does not improve f's cross-validated AUC there, the
    gate closes and every merchant gets the platform-only PD.
    """
    import pandas as pd

    from federation import DataError
    from federation.jobconfig import read_platform
    from federation.models import fit_gated_combiner

    cfg = _job_config(config_file, check=False)
    try:
        frame = read_platform(cfg)
        f = pd.read_csv(f_scores, dtype={"merchant_id": str})
        g = pd.read_csv(g_scores, dtype={"merchant_id": str})
        for name, df, cols in (("--f", f, ("merchant_id", "f")), ("--g", g, ("merchant_id", "g"))):
            missing = [c for c in cols if c not in df.columns]
            if missing:
                fail("MISSING_COLUMNS", f"{name} file lacks {missing}")
        merged = frame[["merchant_id", "label"]].merge(f[["merchant_id", "f"]], on="merchant_id",
                                                       how="left")
        merged = merged.merge(g[["merchant_id", "g"]].drop_duplicates("merchant_id"),
                              on="merchant_id", how="left")
        if merged["f"].isna().any():
            fail("MISSING_SCORES", f"{int(merged['f'].isna().sum())} merchants have no f score")
        holdout = cfg.holdout.mask(merged["merchant_id"].tolist())
        gated = fit_gated_combiner(merged["f"].to_numpy(), merged["g"].to_numpy(),
                                   merged["label"].to_numpy(), holdout)
    except (DataError, OSError, ValueError) as exc:
        fail(getattr(exc, "code", "BAD_INPUT"), str(exc))
    est = gated.predict(merged["f"].to_numpy(), merged["g"].to_numpy())
    result = merged[["merchant_id"]].assign(
        pd_platform=est.platform_only, pd_with_erp=est.with_erp, has_erp=est.has_erp
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(out, index=False)
    report: dict[str, Any] = {"gate": gated.report(), "out": str(out)}
    if evaluate is not None:
        from federation.metrics import auc

        ev = pd.read_csv(evaluate, dtype={"merchant_id": str})
        if not {"merchant_id", "label"} <= set(ev.columns):
            fail("MISSING_COLUMNS", "--evaluate needs merchant_id and label columns")
        joined = ev.merge(result, on="merchant_id", how="inner")
        if joined.empty or joined["label"].nunique() < 2:
            fail("BAD_INPUT", "--evaluate merchants match none scored, or lack both classes")
        y = joined["label"].to_numpy()
        report["evaluate"] = {
            "merchants": len(joined),
            "with_g": int(joined["has_erp"].sum()),
            "auc_f": float(auc(y, joined["pd_platform"].to_numpy())),
            "auc_f_plus_g": float(auc(y, joined["pd_with_erp"].to_numpy())),
        }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    gate = report["gate"]
    console.print(
        f"combiner fitted on {gate['fit_merchants']} hold-out merchants with out-of-sample g; "
        f"cross-validated AUC f {gate['cv_auc_f']:.3f} → f+g {gate['cv_auc_f_plus_g']:.3f}: "
        + ("g improves f, lines use f+g" if gate["open"] else
           "g does not improve f, lines use f alone")
    )
    if "evaluate" in report:
        e = report["evaluate"]
        table = Table("merchants", "with g", "AUC f", "AUC f+g", title="held-back merchants")
        table.add_row(str(e["merchants"]), str(e["with_g"]), f"{e['auc_f']:.3f}",
                      f"{e['auc_f_plus_g']:.3f}")
        console.print(table)
    console.print(f"wrote {out}")


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
        summary = ledger.summary()
        spent = ", ".join(f"{j}:{eps:.2f}" for j, eps in sorted(summary.job_epsilon.items()))
        table.add_row(
            node.isv_id, spent or "-", f"{summary.max_merchant_epsilon:.2f}",
            str(summary.merchants_charged),
        )
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
