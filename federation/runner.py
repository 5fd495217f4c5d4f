"""Submit a federated job and wait for its result, whatever the runtime.

For now the runtime is Flower's **simulation runtime** (one process, Ray
actors as ISV nodes). The deployment runtime (SuperLink + SuperNodes) will
plug in behind the same :func:`run_job`.

Privacy defaults: :mod:`federation.apps` turns Flower's telemetry and update
check and Ray's usage stats off and keeps Ray on the loopback before either is
imported; here Ray gets ``_node_ip_address=127.0.0.1`` and no dashboard, and
nothing is installed at run time (no ``runtime_env`` packages).

A run counts as succeeded only if the ServerApp returned, wrote its result
document with status ``succeeded``, and no node failed; anything else raises
:class:`JobFailed` with the reasons (Flower's own CLI exits 0 on failure).

Several jobs run at once with :func:`run_jobs`: each in its own process with its
own Ray instance (Ray is one per process), on the same nodes if need be. What
they share is safe across processes: the platform database (ledger appends lock
the log head), each node's replay guard and privacy ledger (``flock``), and the
platform's lifetime ε account (``flock``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consent import Use

from ._errors import BudgetExceeded, FederationError, JobFailed
from .apps._node import SIM_NODES_KEY, NodeConfig
from .apps._strategy import RoundLog
from .apps.server_app import RESULT_FILE, CohortSource, cohort_source_from_run_config
from .dp import PrivacyLedger, check_job_budget
from .lifetime import PRIVACY_ACCOUNT_KEY, MerchantPrivacyAccount
from .specs import spec_from_run_config, with_extra_fields

if TYPE_CHECKING:
    from .deploy import DeploymentRuntime

_RAY_PRIVACY_ENV = (
    ("RAY_USAGE_STATS_ENABLED", "0"),
    ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"),
    ("RAY_DISABLE_DOCKER_CPU_WARNING", "1"),
    ("RAY_DEDUP_LOGS", "0"),
)

__all__ = [
    "SimulationRuntime",
    "JobResult",
    "RoundMetrics",
    "run_job",
    "run_jobs",
    "check_budget",
    "node_entry",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationRuntime:
    """Flower simulation runtime settings, sized for a 2-core machine.

    Parameters
    ----------
    num_cpus : int, default 2
        CPUs Ray may use in total.
    client_cpus : float, default 1.0
        CPUs per ClientApp actor (so ``num_cpus / client_cpus`` nodes run at once).
    host : str, default "127.0.0.1"
        The only address Ray binds to.
    verbose : bool, default False
    """

    num_cpus: int = 2
    client_cpus: float = 1.0
    host: str = "127.0.0.1"
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.num_cpus < 1:
            raise ValueError("num_cpus must be >= 1")
        if not 0 < self.client_cpus <= self.num_cpus:
            raise ValueError("client_cpus must be in (0, num_cpus]")

    def backend_config(self) -> dict[str, Any]:
        """Flower's ``backend_config``: Ray init args and client resources."""
        return {
            "init_args": {
                "num_cpus": self.num_cpus,
                "num_gpus": 0,
                "include_dashboard": False,
                "_node_ip_address": self.host,
                "logging_level": "WARNING",
                "log_to_driver": self.verbose,
            },
            "client_resources": {"num_cpus": self.client_cpus, "num_gpus": 0.0},
        }


@dataclass(frozen=True, slots=True)
class RoundMetrics:
    """One training round: evaluation metrics per node and the failures seen."""

    round: int
    per_node: Mapping[str, Mapping[str, float]]
    train: Mapping[str, Mapping[str, float]]
    failures: tuple[str, ...]
    manifest_roots: Mapping[str, str]
    merchants: Mapping[str, int]

    def weighted(self, key: str) -> float:
        """``key`` averaged over nodes, weighted by their evaluation examples."""
        pairs = [(m[key], m.get("num-examples", 0.0)) for m in self.per_node.values() if key in m]
        total = sum(w for _, w in pairs)
        return sum(v * w for v, w in pairs) / total if total else float("nan")

    def pooled_auc(self) -> tuple[float, float]:
        """The nodes' AUCs pooled by inverse noise variance, and that pool's noise std.

        What :class:`~federation.bestround.BestRound` compares rounds by: a node's
        noised AUC counts by ``1 / auc-std²``, so a node whose hold-out is too small
        for its noise barely moves it (``nan, inf`` when no node released ``auc-std``).
        """
        from .bestround import pooled_auc

        return pooled_auc(self.per_node)


@dataclass(frozen=True, slots=True)
class JobResult:
    """A finished job: per-round metrics, receipts, ε per node, where the outputs are."""

    job_id: str
    mode: str
    nodes: tuple[str, ...]
    rounds: tuple[RoundMetrics, ...]
    receipts: tuple[Mapping[str, Any], ...]
    epsilon: Mapping[str, float]
    out_dir: Path
    model_path: Path | None
    scores_path: Path | None
    seconds: float
    round_seconds: tuple[float, ...] = field(default=())
    aggregation: Mapping[str, Any] = field(default_factory=dict)
    """How updates were aggregated: ``strategy`` (``fedavg``/``fedprox``, with
    ``proximal_mu``), ``secure`` (``none`` or ``secagg+`` with its parameters and
    ``masked_rounds``, the rounds whose aggregate came from SecAgg+'s unmasking)."""
    signals_path: Path | None = None
    """A signals job's ``signals.csv`` (``merchant_id,isv_id,signal,value``)."""


def node_entry(node: NodeConfig) -> dict[str, str]:
    """A node's config as the node-config mapping a SuperNode (or a simulated one) reads."""
    return node.to_mapping()


def check_budget(
    run_config: Mapping[str, Any],
    nodes: Sequence[NodeConfig],
    *,
    cohort_source: CohortSource | None = None,
    at: datetime | None = None,
) -> None:
    """Refuse a DP job before submission if it would overrun a job or merchant budget.

    Each node's cohort (the live consents for the job's purpose and categories)
    is checked against that node's privacy ledger. On the simulation runtime the
    ledgers are local files; a deployment asks the nodes (they refuse too). With
    ``privacy-account`` in the run config, the cohorts are also checked against the
    platform's per-merchant lifetime account across ISVs
    (:class:`~federation.lifetime.MerchantPrivacyAccount`: a merchant at ``k`` of
    the job's ISVs would be charged ``k`` times the job's ε).

    Parameters
    ----------
    run_config : Mapping[str, Any]
        The job's run config (``spec`` and overrides, ``job-id``, ``data-consumer``,
        ``db-url`` and ``consent-key`` when ``cohort_source`` is not given).
    nodes : Sequence[NodeConfig]
    cohort_source : CohortSource | None, default consent's cohort check on ``db-url``
    at : datetime | None, default now

    Raises
    ------
    BudgetExceeded
    """
    spec = spec_from_run_config(run_config)
    if spec.dp is None:
        return
    source = cohort_source or cohort_source_from_run_config(run_config)
    when = at or datetime.now(UTC)
    job_id = str(run_config["job-id"])
    cohorts: dict[str, list[str]] = {}
    for node in nodes:
        entries = source.entries(
            Use(
                data_provider=node.isv_id,
                data_consumer=str(run_config["data-consumer"]),
                purpose=spec.purpose,
                categories=spec.categories,
                at=when,
            )
        )
        cohorts[node.isv_id] = [e.merchant_id for e in entries]
        del entries
        check_job_budget(
            [PrivacyLedger(node.privacy_ledger_path)],
            job_id=job_id,
            budget=spec.dp,
            merchant_ids=cohorts[node.isv_id],
        )
    account = run_config.get(PRIVACY_ACCOUNT_KEY)
    if account:
        MerchantPrivacyAccount(Path(str(account))).check(
            job_id=job_id, budget=spec.dp, cohorts=cohorts
        )


def _read_result(out_dir: Path, seconds: float, round_times: list[float]) -> JobResult:
    doc = json.loads((out_dir / RESULT_FILE).read_text("utf-8"))
    rounds = tuple(
        RoundMetrics(
            round=int(r),
            per_node=v["evaluate"],
            train=v["train"],
            failures=tuple(v["failures"]),
            manifest_roots=v["manifest_roots"],
            merchants=v["merchants"],
        )
        for r, v in sorted(doc.get("rounds", {}).items(), key=lambda kv: int(kv[0]))
    )
    return JobResult(
        job_id=doc["job_id"],
        mode=doc["mode"],
        nodes=tuple(doc["nodes"]),
        rounds=rounds,
        receipts=tuple(doc["receipts"]),
        epsilon=doc["epsilon"],
        out_dir=out_dir,
        model_path=Path(doc["model_path"]) if doc.get("model_path") else None,
        scores_path=Path(doc["scores_path"]) if doc.get("scores_path") else None,
        seconds=seconds,
        round_seconds=tuple(round_times),
        aggregation=doc.get("aggregation", {}),
        signals_path=Path(doc["signals_path"]) if doc.get("signals_path") else None,
    )


def _run_in_process(
    run_config: Mapping[str, Any], nodes: Sequence[NodeConfig], runtime: SimulationRuntime | None
) -> tuple[str, Any]:
    """:func:`run_job` in a worker process; errors come back as plain data (picklable)."""
    try:
        return "ok", run_job(run_config, nodes, runtime=runtime)
    except FederationError as exc:
        return "error", (type(exc).__name__, str(exc), exc.code, list(getattr(exc, "reasons", ())))


def run_jobs(
    jobs: Sequence[tuple[Mapping[str, Any], Sequence[NodeConfig]]],
    *,
    runtime: SimulationRuntime | None = None,
) -> list[JobResult | FederationError]:
    """Run several jobs at the same time, each in its own process (and Ray instance).

    Parameters
    ----------
    jobs : Sequence[tuple[Mapping[str, Any], Sequence[NodeConfig]]]
        ``(run_config, nodes)`` per job, as for :func:`run_job`; the cohort comes
        from consent on each run config's ``db-url`` (a custom source cannot cross
        processes). Distinct ``job-id`` and ``out-dir`` per job.
    runtime : SimulationRuntime | None, default ``SimulationRuntime()``
        Per job (each process starts its own Ray with these CPUs).

    Returns
    -------
    list[JobResult | FederationError]
        In the order of ``jobs``: each job's result, or the error it raised
        (:class:`JobFailed`, :class:`BudgetExceeded`, …, with its code and reasons).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ids = [str(rc.get("job-id")) for rc, _ in jobs]
    outs = [str(rc.get("out-dir")) for rc, _ in jobs]
    if len(set(ids)) != len(ids) or len(set(outs)) != len(outs):
        raise ValueError("concurrent jobs need distinct job-id and out-dir values")
    if not jobs:
        return []
    # Spawned, not forked: Ray and torch keep threads that a fork would copy half-way.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=ctx) as pool:
        futures = [pool.submit(_run_in_process, dict(rc), list(n), runtime) for rc, n in jobs]
        outcomes = [f.result() for f in futures]
    results: list[JobResult | FederationError] = []
    for kind, value in outcomes:
        if kind == "ok":
            results.append(value)
            continue
        name, message, code, reasons = value
        if name == "JobFailed" or reasons:
            results.append(JobFailed(message, code=code, reasons=reasons))
        elif name == "BudgetExceeded":
            results.append(BudgetExceeded(message, code=code))
        else:
            results.append(FederationError(message, code=code))
    return results


def run_job(
    run_config: Mapping[str, Any],
    nodes: Sequence[NodeConfig],
    *,
    cohort_source: CohortSource | None = None,
    on_round: Callable[[RoundLog], None] | None = None,
    runtime: SimulationRuntime | None = None,
    deployment: DeploymentRuntime | None = None,
) -> JobResult:
    """Run one job on the simulation runtime (or a SuperLink) and return its result, or raise.

    Parameters
    ----------
    run_config : Mapping[str, Any]
        The ServerApp's run config (kebab-case): ``job-id``, ``spec`` (+ overrides),
        ``mode``, ``db-url``, ``gateway-key``, ``node-keys``, ``data-consumer``,
        ``out-dir``, ``labels-path`` or ``model-dir``.
    nodes : Sequence[NodeConfig]
        One simulated ISV node each.
    cohort_source : CohortSource | None, default None
        Defaults to consent's cohort check on ``db-url``.
    on_round : Callable[[RoundLog], None] | None, default None
        Called after each training round (in this process).
    runtime : SimulationRuntime | None, default ``SimulationRuntime()``
    deployment : DeploymentRuntime | None, default None
        Run on Flower's deployment runtime instead: the job goes to the SuperLink as a
        run of the signed app bundle (:mod:`federation.deploy`); ``nodes`` then only
        sets how many nodes the ServerApp waits for, and ``cohort_source`` and
        ``on_round`` are not available (the ServerApp runs in its own process).

    Raises
    ------
    BudgetExceeded
        A DP job that would overrun a node's budget (checked before anything starts).
    JobFailed
        The run did not succeed; ``reasons`` lists what each node or the server reported.
    """
    if deployment is not None:
        from .deploy import run_job_deployed

        return run_job_deployed(run_config, nodes, deployment)  # type: ignore[no-any-return]
    for var, value in _RAY_PRIVACY_ENV:
        os.environ.setdefault(var, value)  # Ray reads these when it starts
    from flwr.simulation import run_simulation

    from .apps.client_app import build_client_app
    from .apps.server_app import make_server_app

    runtime = runtime or SimulationRuntime()
    if not nodes:
        raise JobFailed("no nodes to run on", code="NO_NODES")
    out_dir = Path(str(run_config["out-dir"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    if str(run_config.get("mode", "train")) == "train":
        check_budget(run_config, nodes, cohort_source=cohort_source)
    sim_nodes = out_dir / "sim-nodes.json"
    sim_nodes.write_text(json.dumps([node_entry(n) for n in nodes], indent=2), "utf-8")
    (out_dir / RESULT_FILE).unlink(missing_ok=True)
    config = {"min-nodes": len(nodes), **with_extra_fields(run_config),
              SIM_NODES_KEY: str(sim_nodes)}

    round_times: list[float] = []
    started = time.perf_counter()
    last = [started]

    def _on_round(log: RoundLog) -> None:
        now = time.perf_counter()
        round_times.append(now - last[0])
        last[0] = now
        if on_round is not None:
            on_round(log)

    server = make_server_app(cohort_source=cohort_source, on_round=_on_round, run_config=config)
    client = build_client_app(run_config=config)
    error: BaseException | None = None
    try:
        run_simulation(
            server_app=server,
            client_app=client,
            num_supernodes=len(nodes),
            backend_name="ray",
            backend_config=runtime.backend_config(),  # type: ignore[arg-type]
            verbose_logging=runtime.verbose,
        )
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - every way the runtime can die
        error = exc
    seconds = time.perf_counter() - started
    result_file = out_dir / RESULT_FILE
    if not result_file.exists():
        raise JobFailed(
            f"job {run_config.get('job-id')} produced no result: {error!r}",
            code="RUNTIME_FAILED",
            reasons=[repr(error)] if error else [],
        ) from (error if isinstance(error, Exception) else None)
    doc = json.loads(result_file.read_text("utf-8"))
    if error is not None or doc.get("status") != "succeeded":
        reasons = list(doc.get("failures", [])) or [repr(error)]
        code = getattr(error, "code", None) if isinstance(error, JobFailed) else None
        raise JobFailed(
            f"job {doc.get('job_id')} failed: {'; '.join(reasons)[:2000]}",
            code=code or "JOB_FAILED",
            reasons=reasons,
            scores_path=doc.get("scores_path"),
            signals_path=doc.get("signals_path"),
            receipts=doc.get("receipts", ()),
        )
    return _read_result(out_dir, seconds, round_times)
