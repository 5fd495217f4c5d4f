"""End to end on Flower's simulation runtime: 3 ISV nodes, small data, 2 DP rounds, a revocation.

Consents live in the real consent store; the ServerApp reads them with
``consent.cohort_entries`` every round and writes receipts to the ledger in the
same database. Each Ray start costs tens of seconds on 2 cores, so this module
starts the runtime seven times: the main job on each database (SecAgg+ on one,
plain FedAvg plus a scoring job on the other), one job that must fail, a small
FedProx job, and two jobs at once in two processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import ArrayRecord
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from consent import ManifestReplayGuard, get_consent, revoke
from federation import (
    JobFailed,
    JobResult,
    SimulationRuntime,
    is_holdout,
    merchant_ids_hash,
    run_job,
    run_jobs,
)
from federation.apps import RoundLog
from federation.bestround import BestRound
from federation.dp import PrivacyLedger
from federation.lifetime import MerchantPrivacyAccount
from federation.models import build_g_erp, get_weights
from federation.receipts import hash_key
from ledger import parse_canonical
from ledger._models import LogEntryRow

from ._flworld import grant_consents, make_world

CATS = "cash_and_debt,margins"

REVOKED = "m0x003"  # a training (not held-out) merchant of isv0


@pytest.mark.slow
def test_dp_job_on_three_nodes_honours_a_revocation_between_rounds(
    tmp_path: Path, db_url: str, sessions: sessionmaker[Session]
) -> None:
    """Round 2 is trained without the merchant revoked after round 1; receipts reach the ledger.

    The SQLite run aggregates with SecAgg+ and the PostgreSQL run with plain FedAvg, so both
    aggregation paths run end to end without a third start of the runtime.
    """
    secagg = db_url.startswith("sqlite")
    world = make_world(tmp_path / "world")
    consent_ids = grant_consents(world, sessions)
    assert not is_holdout(REVOKED)

    def revoke_after_round_one(log: RoundLog) -> None:
        if log.round == 1:
            with sessions() as s, s.begin():
                revoke(s, consent_ids[REVOKED], reason="merchant asked")

    result = run_job(
        world.run_config(
            job_id="job-e2e", db_url=db_url, out="out", categories=CATS, secagg=secagg
        ),
        world.nodes,
        on_round=revoke_after_round_one,
    )

    assert result.nodes == ("isv0", "isv1", "isv2")
    assert [r.round for r in result.rounds] == [1, 2]
    for rnd in result.rounds:
        assert rnd.failures == ()
        assert set(rnd.per_node) == {"isv0", "isv1", "isv2"}
        assert all(
            0.0 <= m["auc"] <= 1.0 and 0.0 <= m["brier"] <= 1.0 for m in rnd.per_node.values()
        )
    r1, r2 = result.rounds
    assert r2.merchants["isv0"] == r1.merchants["isv0"] - 1
    assert r2.manifest_roots["isv0"] != r1.manifest_roots["isv0"]
    assert r2.manifest_roots["isv1"] == r1.manifest_roots["isv1"]  # same consents, same root

    train = {(r["round"], r["data_provider"]): r for r in result.receipts if r["action"] == "train"}
    used_r1 = [m for m in world.erp["isv0"]["merchant_id"] if not is_holdout(m)]
    used_r2 = [m for m in used_r1 if m != REVOKED]
    key = hash_key(world.node("isv0").state_dir)  # the node's keyed merchant-set hash
    assert train[(1, "isv0")]["merchants_hash"] == merchant_ids_hash(used_r1, key=key)
    assert train[(2, "isv0")]["merchants_hash"] == merchant_ids_hash(used_r2, key=key)
    assert train[(2, "isv0")]["rows_used"] == len(used_r2)

    assert all(0 < eps <= 3.0 + 1e-6 for eps in result.epsilon.values())
    with sessions() as s:
        bodies = [
            parse_canonical(row.leaf_data)["body"]
            for row in s.scalars(
                select(LogEntryRow).where(LogEntryRow.kind == "data.used").order_by(LogEntryRow.seq)
            )
        ]
    assert len(bodies) == len(result.receipts) == 3 * (1 + 2 * 2)  # sketch + 2 x (train, eval)
    assert {b["receipt"] for b in bodies} == {r["receipt"] for r in result.receipts}
    # One counted use per node and round (statistics, 1, 2); the revoked merchant missed round 2.
    with sessions() as s:
        uses = s.scalars(select(LogEntryRow).where(LogEntryRow.kind == "consent.uses")).all()
        counted = {m: get_consent(s, consent_ids[m]).state.use_count for m in (REVOKED, "m1x003")}
    assert len(uses) == 3 * 3
    assert counted == {REVOKED: 2, "m1x003": 3}

    assert result.model_path is not None and result.model_path.exists()
    lineage = json.loads((result.out_dir / "lineage.json").read_text())
    assert lineage["job_id"] == "job-e2e" and lineage["rounds"] == 2
    assert lineage["manifest_roots"]["2"]["isv0"] == r2.manifest_roots["isv0"]
    assert len(np.load(result.model_path).files) > 0
    # What actually aggregated: under SecAgg+ every node signed, per round, that its update
    # left masked (shares and threshold sized for three nodes).
    expected_agg: dict[str, object] = {"strategy": "fedavg", "secure": "none"}
    if secagg:
        nodes = ["isv0", "isv1", "isv2"]
        expected_agg = {
            "strategy": "fedavg",
            "secure": "secagg+",
            "num_shares": 3,
            "reconstruction_threshold": 2,
            "node_signed_rounds": {"1": nodes, "2": nodes},
        }
    assert lineage["aggregation"] == dict(result.aggregation) == expected_agg
    # The kept round follows the nodes' hold-out AUC weighed by its released noise bound,
    # with SecAgg+ as without (federation.bestround).
    assert all(m["auc-std"] > 0 for r in result.rounds for m in r.per_node.values())
    keeper = BestRound()
    for r in result.rounds:
        keeper.capture(r.round, ArrayRecord())
    _, best, _ = keeper.select({r.round: {"evaluate": r.per_node} for r in result.rounds},
                               ArrayRecord())
    assert lineage["best_round"] == best
    if secagg:
        return
    # Scoring (one more runtime start, on one backend): only credit_scoring consents.
    scored = run_job(
        {
            **world.run_config(job_id="job-score", db_url=db_url, out="scores", categories=CATS),
            "mode": "score",
            "model-dir": str(result.out_dir),
        },
        world.nodes,
    )
    assert scored.scores_path is not None
    scores = pd.read_csv(scored.scores_path, dtype={"merchant_id": str})
    assert set(scores["merchant_id"]) == world.cohort.scoring_ok - {REVOKED}
    assert scores["g"].between(0, 1).all()
    assert {r["action"] for r in scored.receipts} == {"query.score"}


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_failed_nodes_make_the_run_fail_with_reasons(tmp_path: Path, db_url: str) -> None:
    """A node whose key is not the registered one is excluded and the job is reported failed."""
    world = make_world(tmp_path / "world", n_isvs=2, per_isv=30)
    keys = json.loads(world.node_keys_path.read_text())
    keys["isv1"] = keys["isv0"]  # isv1's registered key is someone else's
    world.node_keys_path.write_text(json.dumps(keys))

    with pytest.raises(JobFailed) as err:
        run_job(
            world.run_config(job_id="job-bad", db_url=db_url, out="out", rounds=1),
            world.nodes,
            cohort_source=world.cohort,
        )

    assert any("UNKNOWN_NODE" in r for r in err.value.reasons)
    doc = json.loads((tmp_path / "world" / "out" / "result.json").read_text())
    assert doc["status"] == "failed"


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_fedprox_job_trains_and_says_so_in_its_lineage(tmp_path: Path, db_url: str) -> None:
    """Two FedProx rounds on three nodes run under SecAgg+ by default and move the weights."""
    world = make_world(tmp_path / "world", n_isvs=3, per_isv=40)
    config = world.run_config(
        job_id="job-fedprox",
        db_url=db_url,
        out="out",
        categories=CATS,
        strategy="fedprox",
        **{"proximal-mu": 0.1},
    )
    del config["consent-key"]  # consents live in world.cohort, not in the store: count none

    result = run_job(config, world.nodes, cohort_source=world.cohort)

    lineage = json.loads((result.out_dir / "lineage.json").read_text())
    nodes = ["isv0", "isv1", "isv2"]
    assert lineage["aggregation"] == {
        "strategy": "fedprox",
        "proximal_mu": 0.1,
        "secure": "secagg+",
        "num_shares": 3,
        "reconstruction_threshold": 2,
        "node_signed_rounds": {"1": nodes, "2": nodes},
    }
    assert (lineage["spec"]["strategy"], lineage["spec"]["proximal-mu"]) == ("fedprox", 0.1)
    assert [r.round for r in result.rounds] == [1, 2]
    for rnd in result.rounds:
        assert rnd.failures == () and set(rnd.train) == set(nodes)
        assert all("train-loss" not in m and m["epsilon"] > 0 for m in rnd.train.values())
    assert result.model_path is not None
    stored = np.load(result.model_path)
    torch.manual_seed(0)  # the ServerApp seeds the initial model with the job's seed (0)
    initial = get_weights(build_g_erp("logistic", stored["w0"].shape[1]))
    assert any(not np.allclose(stored[f"w{i}"], w) for i, w in enumerate(initial))


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_two_dp_jobs_run_at_once_on_the_same_nodes(
    tmp_path: Path, db_url: str, sessions: sessionmaker[Session]
) -> None:
    """Two processes, two Rays, one set of nodes: both succeed, every receipt reaches the ledger."""
    world = make_world(tmp_path / "world", n_isvs=2)
    grant_consents(world, sessions)
    one_cpu = SimulationRuntime(num_cpus=1, client_cpus=1.0)
    configs = [
        world.run_config(job_id=job, db_url=db_url, out=job, categories=CATS, rounds=1)
        for job in ("job-left", "job-right")
    ]

    results = run_jobs([(c, world.nodes) for c in configs], runtime=one_cpu)

    assert all(isinstance(r, JobResult) for r in results), results
    spans = [
        ((tmp_path / "world" / j / "sim-nodes.json").stat().st_mtime,
         (tmp_path / "world" / j / "result.json").stat().st_mtime)
        for j in ("job-left", "job-right")
    ]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]  # the runs overlapped
    with sessions() as s:
        bodies = [
            parse_canonical(row.leaf_data)["body"]
            for row in s.scalars(select(LogEntryRow).where(LogEntryRow.kind == "data.used"))
        ]
    for job, result in zip(("job-left", "job-right"), results, strict=True):
        assert isinstance(result, JobResult)
        mine = {b["receipt"] for b in bodies if b["job_id"] == job}
        assert mine == {r["receipt"] for r in result.receipts} and len(mine) == 2 * 3
    for node in world.nodes:  # node state written by both processes is intact and complete
        guard = ManifestReplayGuard(node.state_dir / "manifests.jsonl")
        ledger = PrivacyLedger(node.privacy_ledger_path)
        assert len(guard) == 2 * 2  # (statistics, round 1) x 2 jobs
        assert all(ledger.job_epsilon(j, 1e-5) > 0 for j in ("job-left", "job-right"))
    account = MerchantPrivacyAccount(Path(str(configs[0]["privacy-account"])))
    trained = next(m for m in world.erp["isv0"]["merchant_id"] if not is_holdout(m))
    assert account.spent(trained) == 2 * 3.0  # both jobs charged it, at its one ISV
    # Every charge was settled by a node's signed receipt (none left provisional).
    assert all(account.provisional(job_id=j, isv=n.isv_id) == []
               for j in ("job-left", "job-right") for n in world.nodes)
