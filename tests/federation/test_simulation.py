"""End to end on Flower's simulation runtime: 3 ISV nodes, small data, 2 DP rounds, a revocation.

Consents live in the real consent store; the ServerApp reads them with
``consent.cohort_entries`` every round and writes receipts to the ledger in the
same database. Each Ray start costs tens of seconds on 2 cores, so this module
starts the runtime four times: the main job on each database (SecAgg+ on one,
plain FedAvg plus a scoring job on the other) and one job that must fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from consent import get_consent, revoke
from federation import JobFailed, merchant_ids_hash, run_job
from federation.apps import RoundLog
from federation.apps._node import is_holdout
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
    assert train[(1, "isv0")]["merchants_hash"] == merchant_ids_hash(used_r1)
    assert train[(2, "isv0")]["merchants_hash"] == merchant_ids_hash(used_r2)
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
