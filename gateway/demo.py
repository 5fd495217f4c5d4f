"""``fedgate demo``: the synthetic world end to end on the embedded default.

One call of :func:`run_demo` does, in a fresh ``<data_dir>/demo/`` with its own
SQLite database and keys (the user's database is never touched):

1. writes a synthetic merchant world (``federation.synth``);
2. grants every ISV merchant a signed consent (``model_training`` and
   ``credit_scoring`` over all ERP categories) and signs a ledger checkpoint;
3. trains the federated ``pd-erp`` model with DP-SGD on Flower's simulation
   runtime, one node per ISV; after round 1 a few training merchants per ISV
   revoke their consent, and the usage receipts of the later rounds must show
   them gone (their ``merchants_hash`` is recomputed here);
4. collects the nodes' g-scores under ``credit_scoring`` manifests;
5. fits ``f_platform`` and the combiner at the platform and measures AUCs on
   the held-out merchants (:func:`federation.is_holdout`), next to a
   *centralized reference*: the same g (bins, architecture, DP-SGD budget)
   trained on the pooled ERP rows — a number a real deployment could not
   compute, since ERP data never leaves the ISVs;
6. runs the money loop (:mod:`gateway.demo_money`): the credit policy, both lines for
   every merchant (the consent gate drops uncovered g scores), six simulated months
   of loans imported through ``import_bytes`` (and resent, a no-op), a monitoring pass
   and a settlement (fees, interest shares, instructed and cleared payouts) at each
   month's end, some merchants pausing their consent before month 4;
7. signs a final checkpoint, exports the ledger and audits the export offline;
8. writes a self-contained HTML report (inline SVG charts) to ``<demo dir>/report.html``.

A non-empty demo directory (a previous demo's data) is refused unless ``overwrite``.
Everything measured comes back in a frozen :class:`DemoReport`; the CLI prints it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from . import credit, jobs
from ._errors import GatewayError
from .db import create_schema, make_engine, make_sessionmaker
from .demo_money import MoneyReport, run_money_loop
from .keys import load_or_create_key
from .settings import Settings

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from consent import ReceiptNotice

__all__ = [
    "DEMO_DIR",
    "DEFAULT_MERCHANTS",
    "DEFAULT_ISVS",
    "DEFAULT_ROUNDS",
    "DEFAULT_SEED",
    "DEFAULT_DEFAULT_RATE",
    "REVOKED_PER_ISV",
    "DemoError",
    "RoundUsage",
    "AucRow",
    "DemoReport",
    "run_demo",
]

DEMO_DIR = "demo"
DEFAULT_MERCHANTS = 6_000
DEFAULT_ISVS = 3
DEFAULT_ROUNDS = 3
DEFAULT_SEED = 0
DEFAULT_DEFAULT_RATE = 0.05
REVOKED_PER_ISV = 2
"""Training merchants per ISV that revoke their consent after round 1."""

SPEC = "pd-erp"
CONSUMER = jobs.DEFAULT_CONSUMER
TRAIN_JOB = "demo-train"
SCORE_JOB = "demo-score"
RESCORE_JOB = "demo-rescore-monitoring"
SIGNALS_JOB = "demo-signals-monitoring"
REVENUE_JOB = "demo-signals-revenue"
EXPORT_FILE = "ledger-export.jsonl"
HTML_FILE = "report.html"
CONSENT_DAYS = 180
F_KIND = "hgb"
SCHEDULE: dict[str, Any] = {"lr": 0.5, "local-epochs": 2}
"""pd-erp's schedule for a few short rounds: with its default lr (0.05) and one epoch, three
DP-SGD rounds barely move the logistic model from its random start, and g's AUC then
depends on that start (0.46-0.70 over init seeds here); this setting gave 0.69-0.74."""
_CONSENT_BATCH = 200  # consents per progress tick (all in one transaction)


class DemoError(GatewayError):
    """The demo could not finish or a check failed.

    Parameters
    ----------
    message : str
    code : str
        ``BAD_ARGUMENT``, ``JOB_FAILED`` (or the federation error's own code),
        ``REVOKED_STILL_USED`` or ``AUDIT_FAILED``.
    """


@dataclass(frozen=True, slots=True)
class RoundUsage:
    """One node's training receipt in one round, checked against the consent state.

    Attributes
    ----------
    round : int
    isv : str
    manifest_merchants : int
        Merchants in the round's signed manifest (training and held-out).
    rows_used : int
        ERP rows the node's receipt says it trained on.
    revoked_in_manifest : int
        Revoked merchants still in the manifest (must be 0 after round 1).
    hash_matches : bool
        The receipt's ``merchants_hash`` equals the hash of the merchants that
        should have trained: everyone consented in round 1, without the
        revoked merchants afterwards.
    epsilon : float
        The node's cumulative ε for this job after the round.
    """

    round: int
    isv: str
    manifest_merchants: int
    rows_used: int
    revoked_in_manifest: int
    hash_matches: bool
    epsilon: float


@dataclass(frozen=True, slots=True)
class AucRow:
    """AUC of one PD estimate on the held-out merchants.

    Attributes
    ----------
    name : str
    auc_all : float
        Over every held-out merchant (those without an ISV keep the platform-only PD).
    auc_erp : float
        Over held-out merchants that have an ERP score.
    reference : bool
        A comparison a real deployment cannot compute (pooled ERP data).
    """

    name: str
    auc_all: float
    auc_erp: float
    reference: bool = False


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What the demo did and measured; ``ok`` when every check held."""

    demo_dir: Path
    merchants: int
    isvs: tuple[str, ...]
    rounds: int
    seed: int
    consents_granted: int
    consents_revoked: int
    revoked: tuple[str, ...]
    usage: tuple[RoundUsage, ...]
    round_auc: tuple[tuple[float, float], ...]  # (pooled AUC, its noise std) per round
    revoked_absent: bool
    n_scores: int
    revoked_scored: int
    aucs: tuple[AucRow, ...]
    n_holdout: int
    n_holdout_erp: int
    holdout_defaults: int
    epsilon: Mapping[str, float]
    epsilon_budget: float
    delta: float
    central_epsilon: float
    ledger_entries: int
    ledger_checkpoints: int
    ledger_kinds: Mapping[str, int]
    audit_ok: bool
    audit_failure: str | None
    export_path: Path
    model_path: Path
    scores_path: Path
    seconds: float
    stage_seconds: Mapping[str, float] = field(default_factory=dict)
    money: MoneyReport | None = None
    html_path: Path | None = None

    @property
    def ok(self) -> bool:
        """Audit passed, revoked merchants absent, DP within budget, the money loop's books tie."""
        within = all(0 < e <= self.epsilon_budget + 1e-6 for e in self.epsilon.values())
        money_ok = self.money is None or self.money.ok
        return (
            self.audit_ok
            and self.revoked_absent
            and within
            and self.revoked_scored == 0
            and money_ok
        )


class _Stages:
    """Progress bars when a rich ``Progress`` is given, silence otherwise; times each stage."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    def add(self, description: str, total: float = 1, *, start: bool = True) -> TaskID | None:
        if self.progress is None:
            return None
        return self.progress.add_task(description, total=total, start=start)

    def advance(self, task: TaskID | None, amount: float = 1) -> None:
        if self.progress is not None and task is not None:
            self.progress.advance(task, amount)

    def start(self, task: TaskID | None) -> None:
        if self.progress is not None and task is not None:
            self.progress.start_task(task)

    def finish(self, task: TaskID | None) -> None:
        if self.progress is not None and task is not None:
            total = self.progress.tasks[task].total or 1
            self.progress.update(task, completed=total)

    @contextmanager
    def stage(self, name: str, total: float = 1) -> Iterator[TaskID | None]:
        task = self.add(name, total)
        started = time.perf_counter()
        yield task
        self.seconds[name] = time.perf_counter() - started
        self.finish(task)


def _ignore_library_warnings() -> None:
    """Ray's accelerator tip, Opacus' secure-RNG and alpha-range notes: noise for a demo."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray\.")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"opacus\.")
    warnings.filterwarnings("ignore", message="Full backward hook", category=UserWarning)


@contextmanager
def _quiet_flower() -> Iterator[None]:
    """Keep Flower's per-round log lines and deprecation notes off the progress bars.

    Failures are not lost: :func:`federation.run_job` raises them with their reasons.
    """
    logger = logging.getLogger("flwr")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            _ignore_library_warnings()
            yield
    finally:
        logger.setLevel(level)


def _demo_settings(settings: Settings) -> Settings:
    demo_dir = (settings.data_dir / DEMO_DIR).resolve()
    # Own SQLite file and keys under the demo dir, whatever the user's database is.
    return settings.model_copy(update={"data_dir": demo_dir, "database_url": None, "key_dir": None})


def _erp_frames(wn: jobs.WorldNodes) -> dict[str, pd.DataFrame]:
    return {n.isv_id: pd.read_parquet(n.erp_path) for n in wn.nodes}


def _grant_consents(
    sessions: Any,
    erp: Mapping[str, pd.DataFrame],
    doc: Mapping[str, Any],
    key: Any,
    categories: Sequence[str],
    stages: _Stages,
    notice: ReceiptNotice,
    nodes: Sequence[Any] = (),
) -> dict[str, str]:
    """One ACTIVE consent per ISV merchant (training and scoring); merchant id → consent id.

    Each merchant also approves the artefact in its ISV's own system: the ISV's node
    registers it (``nodes``), and serves only manifests whose entries it approved.
    """
    from consent import grant, parse_terms

    now = datetime.now(UTC)
    ids: dict[str, str] = {}
    approved: dict[str, list[Any]] = {}
    total = sum(len(f) for f in erp.values())
    with stages.stage("grant consents", total) as task, sessions() as s, s.begin():
        for isv, frame in erp.items():
            for i, m in enumerate(frame["merchant_id"].astype(str)):
                terms = {
                    "consent_id": f"c-{m}",
                    "merchant_id": m,
                    "data_provider": isv,
                    "data_consumer": CONSUMER,
                    "purposes": ["credit_scoring", "model_training", "post_loan_monitoring"],
                    "categories": sorted(categories),
                    "data_from": doc["data_from"],
                    # Monitoring reads the months after the lines: the consented range runs
                    # to the consent's end, not only to the world's single snapshot.
                    "data_to": max(str(doc["data_to"]), f"{now + timedelta(days=CONSENT_DAYS):%F}"),
                    "frequency": {"uses": 1000, "per": "day"},
                    "data_life_days": 90,
                    "consent_start": (now - timedelta(days=1)).isoformat(),
                    "consent_expiry": (now + timedelta(days=CONSENT_DAYS)).isoformat(),
                }
                granted = grant(s, parse_terms(terms), key=key, at=now, notice=notice)
                approved.setdefault(isv, []).append(granted.signed)
                ids[m] = f"c-{m}"
                if (i + 1) % _CONSENT_BATCH == 0:
                    stages.advance(task, _CONSENT_BATCH)
    from federation.node import register_approvals

    for node in nodes:
        register = node.approvals(node.node_policy())
        register_approvals(register, ((s.artefact, s.hash) for s in approved.get(node.isv_id, [])))
    return ids


def _pick_revocations(
    erp: Mapping[str, pd.DataFrame], seed: int, per_isv: int
) -> dict[str, list[str]]:
    """A few training (not held-out) merchants per ISV, chosen by the seed."""
    from federation import is_holdout

    rng = np.random.default_rng(seed + 1)
    out: dict[str, list[str]] = {}
    for isv, frame in sorted(erp.items()):
        train = sorted(m for m in frame["merchant_id"].astype(str) if not is_holdout(m))
        k = min(per_isv, max(len(train) - 1, 0))
        out[isv] = sorted(rng.choice(train, size=k, replace=False).tolist()) if k else []
    return out


def _usage(
    result: Any,
    erp: Mapping[str, pd.DataFrame],
    revoked: Mapping[str, list[str]],
    keys: Mapping[str, bytes] | None = None,
) -> list[RoundUsage]:
    """Per round and node: the training receipt against the merchants that should have trained.

    ``keys``: each node's merchant-set hashing key, which the ISV reveals to whoever
    checks its receipts (here the demo plays every role).
    """
    from federation import is_holdout, merchant_ids_hash

    train_sets = {
        isv: {m for m in f["merchant_id"].astype(str) if not is_holdout(m)}
        for isv, f in erp.items()
    }
    receipts = {
        (int(r["round"]), str(r["data_provider"])): r
        for r in result.receipts
        if r["action"] == "train"
    }
    rows: list[RoundUsage] = []
    for rnd in result.rounds:
        for isv in result.nodes:
            gone = set(revoked.get(isv, [])) if rnd.round > 1 else set()
            expected = merchant_ids_hash(train_sets[isv] - gone, key=(keys or {}).get(isv))
            rc = receipts.get((rnd.round, isv))
            in_manifest = rnd.merchants.get(isv, 0)
            full = len(erp[isv])
            rows.append(
                RoundUsage(
                    round=rnd.round,
                    isv=isv,
                    manifest_merchants=in_manifest,
                    rows_used=int(rc["rows_used"]) if rc else 0,
                    # Every ISV merchant consented, so the manifest shrinks by exactly the
                    # revoked ones; anything else left in it is a revoked merchant still used.
                    revoked_in_manifest=max(in_manifest - (full - len(gone)), 0),
                    hash_matches=rc is not None and rc["merchants_hash"] == expected,
                    epsilon=float(rc["epsilon_spent"]) if rc else float("nan"),
                )
            )
    return rows


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from federation.metrics import auc

    return float(auc(y, p)) if len(y) else float("nan")


def _central_g(
    erp: Mapping[str, pd.DataFrame],
    labels: Mapping[str, int],
    excluded: set[str],
    spec: Any,
    rounds: int,
    seed: int,
    stages: _Stages,
) -> tuple[dict[str, float], float]:
    """The centralized reference: g on pooled ERP rows, trained the way the nodes train it.

    Same bins (from a sketch of the pooled rows), architecture, local epochs, batch
    size, learning rate and DP-SGD budget, one DP-SGD pass per "round". Returns
    scores for every pooled merchant and the ε spent.
    """
    import torch

    from federation import is_holdout
    from federation.dp import epsilon_of
    from federation.features import BinEncoder, QuantileSketch
    from federation.models import predict_proba
    from federation.reference import train_centralized
    from federation.schema import AS_OF, erp_fields_for

    features = erp_fields_for(spec.categories)
    pooled = pd.concat(erp.values(), ignore_index=True)
    pooled["merchant_id"] = pooled["merchant_id"].astype(str)
    pooled = pooled[~pooled["merchant_id"].isin(excluded)]
    pooled = pooled.sort_values(["merchant_id", AS_OF]).groupby("merchant_id").tail(1)
    encoder = BinEncoder(QuantileSketch.from_frame(pooled, features).bin_edges(spec.n_bins))
    train = pooled[[not is_holdout(m) for m in pooled["merchant_id"]]]
    X = encoder.transform(train)
    y = np.asarray([labels[m] for m in train["merchant_id"]], dtype=np.float32)
    task = stages.add("centralized reference (pooled ERP)", rounds)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the nodes do: small batches gain nothing from more threads
    try:
        with warnings.catch_warnings():
            _ignore_library_warnings()
            model, history = train_centralized(
                X, y, arch=spec.arch, rounds=rounds, local_epochs=spec.local_epochs,
                batch_size=spec.batch_size, lr=spec.lr, seed=seed, hidden=spec.hidden,
                dp=spec.dp, on_round=lambda _r: stages.advance(task),
            )
    finally:
        torch.set_num_threads(threads)
    eps = epsilon_of(history, spec.dp.delta) if spec.dp is not None else 0.0
    scores = predict_proba(model, encoder.transform(pooled))
    return dict(zip(pooled["merchant_id"], scores.tolist(), strict=True)), eps


def _evaluate(
    platform: pd.DataFrame,
    g_fed: Mapping[str, float],
    g_central: Mapping[str, float],
    seed: int,
) -> tuple[list[AucRow], int, int, int]:
    """f_platform, the combiner with each g, and AUCs on the held-out merchants."""
    from federation import is_holdout
    from federation.models import Combiner, fit_f_platform, out_of_fold_f_scores
    from federation.schema import LABEL

    ids = platform["merchant_id"].astype(str)
    hold = ids.map(is_holdout).to_numpy(dtype=bool)
    train, test = platform[~hold], platform[hold]
    y_tr, y_te = train[LABEL].to_numpy(int), test[LABEL].to_numpy(int)
    # The combiner learns on f scores the platform model never trained on.
    f_tr = out_of_fold_f_scores(train, y_tr, kind=F_KIND, seed=seed)
    f_te = fit_f_platform(train, y_tr, kind=F_KIND, seed=seed).predict_proba(test)

    def g_of(frame: pd.DataFrame, g: Mapping[str, float]) -> np.ndarray:
        return np.asarray([g.get(m, np.nan) for m in frame["merchant_id"].astype(str)])

    rows: list[AucRow] = []
    has_erp = np.isfinite(g_of(test, g_fed))
    for name, g, ref in (
        ("platform + ERP, federated g (combiner)", g_fed, False),
        ("platform + ERP, centralized g (reference)", g_central, True),
    ):
        # The reference scores exactly the merchants the federated job scored.
        gg = {m: g[m] for m in g_fed if m in g}
        est = Combiner().fit(f_tr, g_of(train, gg), y_tr).predict(f_te, g_of(test, gg))
        if not rows:
            rows.append(
                AucRow(
                    "platform only (f)",
                    _auc(y_te, est.platform_only),
                    _auc(y_te[has_erp], est.platform_only[has_erp]),
                )
            )
        rows.append(
            AucRow(name, _auc(y_te, est.with_erp), _auc(y_te[has_erp], est.with_erp[has_erp]), ref)
        )
    return rows, int(hold.sum()), int(has_erp.sum()), int(y_te.sum())


def _audit(settings: Settings, sessions: Any, export: Path) -> tuple[Any, dict[str, int], int]:
    """Final checkpoint, export, offline audit; entry kinds counted from the export."""
    import ledger

    key = load_or_create_key(settings.resolved_key_dir, "log")
    with sessions() as s, s.begin():
        ledger.sign_checkpoint(s, key, settings.log_origin)
    with sessions() as s:
        summary = ledger.export_log(s, export, key.public_key(), origin=settings.log_origin)
    vkey = ledger.make_vkey(settings.log_origin, key.public_key())
    report = ledger.audit_export(export, vkey=vkey)
    kinds: Counter[str] = Counter()
    with export.open(encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            if "leaf" in doc:
                kinds[str(ledger.parse_canonical(base64.b64decode(doc["leaf"]))["kind"])] += 1
    return report, dict(sorted(kinds.items())), summary.checkpoints


def _money(
    cfg: Settings,
    sessions: Any,
    platform: pd.DataFrame,
    erp: Mapping[str, pd.DataFrame],
    scores: pd.DataFrame,
    cm_key: Any,
    spec: Any,
    trained: Any,
    revoked: set[str],
    consent_ids: Mapping[str, str],
    seed: int,
    stages: _Stages,
    rescore: Any = None,
    erp_month: Any = None,
    signals: Any = None,
    revenue: Any = None,
) -> MoneyReport:
    """Lines, loans, monitoring and settlement on the demo's database (:mod:`.demo_money`)."""
    from consent import pause

    def pause_one(s: Any, merchant: str) -> bool:
        if merchant in revoked or merchant not in consent_ids:
            return False
        pause(s, consent_ids[merchant], reason="merchant paused (demo)", notice=cfg.receipt_notice)
        return True

    with threadpool_limits(1):
        return run_money_loop(
            sessions,
            platform=platform,
            erp=erp,
            g_scores=scores,
            consent_key=cm_key.public_key(),
            consumer=CONSUMER,
            categories=tuple(spec.categories),
            g_version=f"{TRAIN_JOB}/{trained.model_path.name}",
            out_dir=cfg.data_dir,
            seed=seed,
            stage=stages.stage,
            advance=stages.advance,
            pause=pause_one,
            rescore=rescore,
            erp_month=erp_month,
            signals=signals,
            revenue=revenue,
        )


def _append_snapshot(path: Path, rows: pd.DataFrame) -> None:
    """Append a month's rows to an ISV's ERP Parquet file (replaced atomically)."""
    table = pd.concat([pd.read_parquet(path), rows], ignore_index=True)
    tmp = path.with_suffix(".parquet.tmp")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _seeded(node: Any, test_seed: int, folder: Path) -> Any:
    """``node`` with a policy file of its own: safe defaults plus a tests-only seed."""
    path = folder / f"{node.isv_id}-policy.toml"
    path.write_text(f"[policy]\ntest-seed = {int(test_seed)}\n", encoding="utf-8")
    return replace(node, policy=path.resolve())


def run_demo(
    settings: Settings,
    *,
    merchants: int = DEFAULT_MERCHANTS,
    isvs: int = DEFAULT_ISVS,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = DEFAULT_SEED,
    default_rate: float = DEFAULT_DEFAULT_RATE,
    progress: Progress | None = None,
    overwrite: bool = False,
    node_test_seed: int | None = None,
) -> DemoReport:
    """Run the whole demo in ``<settings.data_dir>/demo/`` (wiped first) and report.

    Parameters
    ----------
    settings : Settings
        Only ``data_dir`` and ``log_origin`` are used; the demo has its own SQLite
        database and keys under ``<data_dir>/demo/``.
    merchants : int, default 6000
    isvs : int, default 3
    rounds : int, default 3
        Federated rounds (>= 2: merchants revoke between rounds 1 and 2).
    seed : int, default 0
    default_rate : float, default 0.05
        The world's target default rate; tiny worlds need more defaults so that
        every node's held-out merchants contain both classes (nodes refuse to
        evaluate otherwise and the job fails).
    progress : rich.progress.Progress | None, default None
        Where to draw a task per stage and per round; ``None`` draws nothing.
    overwrite : bool, default False
        Replace a previous demo's data; without it a non-empty demo directory is refused.
    node_test_seed : int | None, default None
        Tests only: each simulated node's own policy file gets this ``test-seed`` so its
        DP noise is reproducible (node configuration, never a platform message). ``None``:
        the nodes draw from their CSPRNG, as in any real run.

    Returns
    -------
    DemoReport
        Check ``ok``: the CLI exits non-zero when it is false.

    Raises
    ------
    DemoError
        ``BAD_ARGUMENT`` for bad sizes; ``DEMO_EXISTS`` when a previous demo's data is
        there and ``overwrite`` is false; the federation error's code (``JOB_FAILED``, …)
        when a federated job fails.
    """
    from consent import revoke
    from federation import FederationError, SimulationRuntime, get_spec, run_job
    from federation.specs import spec_from_run_config
    from federation.synth import SynthParams, write_world

    if rounds < 2:
        raise DemoError(
            "rounds must be >= 2 (consents are revoked between rounds)", code="BAD_ARGUMENT"
        )
    try:
        params = SynthParams(merchants=merchants, isvs=isvs, seed=seed, default_rate=default_rate)
    except ValueError as exc:
        raise DemoError(str(exc), code="BAD_ARGUMENT") from exc
    started = time.perf_counter()
    cfg = _demo_settings(settings)
    if cfg.data_dir.exists() and any(cfg.data_dir.iterdir()) and not overwrite:
        raise DemoError(
            f"{cfg.data_dir} holds a previous demo's data; pass overwrite=True "
            "(`fedgate demo --overwrite`) to replace it",
            code="DEMO_EXISTS",
        )
    shutil.rmtree(cfg.data_dir, ignore_errors=True)  # a rerun starts from nothing
    cfg.data_dir.mkdir(parents=True)
    stages = _Stages(progress)
    world_dir = cfg.data_dir / "world"
    spec = get_spec(SPEC)

    with stages.stage("synthetic world"):
        doc = write_world(params, world_dir)
        wn = jobs.world_nodes(cfg, world_dir)
        if node_test_seed is not None:
            wn = replace(wn, nodes=[_seeded(n, node_test_seed, world_dir) for n in wn.nodes])
        erp = _erp_frames(wn)
        platform = pd.read_parquet(wn.platform_path)
    engine = make_engine(cfg.resolved_database_url)
    create_schema(engine)
    sessions = make_sessionmaker(engine)
    cohort = jobs.ConsentCohort(cfg)
    try:
        import ledger

        cm_key = load_or_create_key(cfg.resolved_key_dir, jobs.CONSENT_MANAGER_KEY)
        consent_ids = _grant_consents(
            sessions, erp, doc, cm_key, spec.categories, stages, cfg.receipt_notice, wn.nodes
        )
        with sessions() as s, s.begin():
            ledger.sign_checkpoint(
                s, load_or_create_key(cfg.resolved_key_dir, "log"), cfg.log_origin
            )
        revoked = _pick_revocations(erp, seed, REVOKED_PER_ISV)

        round_tasks = [
            stages.add(f"federated round {r}/{rounds} (DP-SGD)", start=r == 1)
            for r in range(1, rounds + 1)
        ]
        revoked_count = [0]

        def on_round(log: Any) -> None:
            if log.round == 1:
                with sessions() as s, s.begin():
                    for ms in revoked.values():
                        for m in ms:
                            revoke(
                                s,
                                consent_ids[m],
                                reason="merchant withdrew (demo)",
                                notice=cfg.receipt_notice,
                            )
                            revoked_count[0] += 1
            if 1 <= log.round <= rounds:
                stages.finish(round_tasks[log.round - 1])
                if log.round < rounds:
                    stages.start(round_tasks[log.round])

        runtime = SimulationRuntime()
        train_cfg = jobs.train_run_config(
            cfg, wn, job_id=TRAIN_JOB, spec=SPEC, rounds=rounds, seed=seed, **SCHEDULE
        )
        spec = spec_from_run_config(train_cfg)  # the reference trains with the same values
        t0 = time.perf_counter()
        try:
            with _quiet_flower():
                trained = run_job(
                    train_cfg,
                    list(wn.nodes),
                    cohort_source=cohort,
                    on_round=on_round,
                    runtime=runtime,
                )
        except FederationError as exc:
            raise DemoError(f"training failed: {exc}", code=exc.code) from exc
        stages.seconds["federated training"] = time.perf_counter() - t0
        if trained.model_path is None:
            raise DemoError("training produced no model", code="JOB_FAILED")

        with stages.stage("federated scoring (credit_scoring consents)"):
            score_cfg = jobs.score_run_config(cfg, wn, job_id=SCORE_JOB, model_dir=trained.out_dir)
            try:
                with _quiet_flower():
                    scored = run_job(
                        score_cfg, list(wn.nodes), cohort_source=cohort, runtime=runtime
                    )
            except FederationError as exc:
                raise DemoError(f"scoring failed: {exc}", code=exc.code) from exc
        if scored.scores_path is None:
            raise DemoError("scoring produced no scores", code="JOB_FAILED")
        scores = pd.read_csv(scored.scores_path, dtype={"merchant_id": str})
        g_fed = dict(zip(scores["merchant_id"], scores["g"].astype(float), strict=True))
        all_revoked = {m for ms in revoked.values() for m in ms}

        from federation.schema import LABEL

        labels = dict(
            zip(platform["merchant_id"].astype(str), platform[LABEL].astype(int), strict=True)
        )
        t0 = time.perf_counter()
        g_central, central_eps = _central_g(erp, labels, all_revoked, spec, rounds, seed, stages)
        stages.seconds["centralized reference"] = time.perf_counter() - t0
        with stages.stage("platform model f + combiner"), threadpool_limits(1):
            # One OpenMP thread: on a small, busy machine the boosting's spinning threads
            # fight each other and the fit takes many times longer than single-threaded.
            aucs, n_hold, n_hold_erp, hold_pos = _evaluate(platform, g_fed, g_central, seed)
        t0 = time.perf_counter()
        def rescore(merchants: list[str]) -> pd.DataFrame:  # monitoring's re-scoring job
            with _quiet_flower():
                return credit.rescore_open_loans(
                    cfg, wn, model_dir=trained.out_dir, merchants=merchants,
                    cohort_source=cohort, job_id=RESCORE_JOB, runtime=runtime,
                )

        def erp_month(rows: Mapping[str, pd.DataFrame]) -> None:  # each ISV's ERP: a month
            for node in wn.nodes:
                _append_snapshot(node.erp_path, rows[node.isv_id])

        def signals(merchants: list[str], as_of: Any, since: Any) -> credit.SignalRelease:
            with _quiet_flower():
                return credit.query_signals(
                    cfg, wn, kind="erp-changes", merchants=merchants, cohort_source=cohort,
                    job_id=SIGNALS_JOB, as_of=as_of, since=since, runtime=runtime,
                )  # fmt: skip

        def revenue(merchants: list[str], as_of: Any) -> credit.SignalRelease:
            with _quiet_flower():
                return credit.query_signals(
                    cfg, wn, kind="revenue-3m", merchants=merchants, cohort_source=cohort,
                    job_id=REVENUE_JOB, as_of=as_of, runtime=runtime,
                )  # fmt: skip

        money = _money(
            cfg,
            sessions,
            platform,
            erp,
            scores,
            cm_key,
            spec,
            trained,
            all_revoked,
            consent_ids,
            seed,
            stages,
            rescore,
            erp_month,
            signals,
            revenue,
        )
        stages.seconds["money loop"] = time.perf_counter() - t0
        export = cfg.data_dir / EXPORT_FILE
        with stages.stage("ledger checkpoint, export, offline audit"):
            report, kinds, checkpoints = _audit(cfg, sessions, export)
    finally:
        cohort.close()
        engine.dispose()

    from federation.receipts import hash_key

    usage = _usage(trained, erp, revoked, {n.isv_id: hash_key(n.state_dir) for n in wn.nodes})
    absent = all(u.hash_matches and u.revoked_in_manifest == 0 for u in usage)
    failure = None
    if report.failure is not None:
        failure = f"{report.failure.code} at index {report.failure.index}: {report.failure.message}"
    result = DemoReport(
        demo_dir=cfg.data_dir,
        merchants=merchants,
        isvs=trained.nodes,
        rounds=rounds,
        seed=seed,
        consents_granted=len(consent_ids),
        consents_revoked=revoked_count[0],
        revoked=tuple(sorted(all_revoked)),
        usage=tuple(usage),
        round_auc=tuple(r.pooled_auc() for r in trained.rounds),
        revoked_absent=absent,
        n_scores=len(scores),
        revoked_scored=int(scores["merchant_id"].isin(all_revoked).sum()),
        aucs=tuple(aucs),
        n_holdout=n_hold,
        n_holdout_erp=n_hold_erp,
        holdout_defaults=hold_pos,
        epsilon=dict(trained.epsilon),
        epsilon_budget=spec.dp.epsilon if spec.dp else 0.0,
        delta=spec.dp.delta if spec.dp else 0.0,
        central_epsilon=central_eps,
        ledger_entries=report.size,
        ledger_checkpoints=checkpoints,
        ledger_kinds=kinds,
        audit_ok=report.ok,
        audit_failure=failure,
        export_path=export,
        model_path=trained.model_path,
        scores_path=scored.scores_path,
        seconds=time.perf_counter() - started,
        stage_seconds=dict(stages.seconds),
        money=money,
    )
    from .demo_report import write_demo_html

    html = write_demo_html(result, cfg.data_dir / HTML_FILE)
    return replace(result, html_path=html)
