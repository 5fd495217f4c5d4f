"""The deployment end to end on loopback: proxy, SuperLink (TLS, node auth), 3 SuperNodes.

One topology for every check (it takes tens of seconds to start on 2 cores), the same
processes that ``docker/compose.yaml`` runs as containers: a 2-round training job
and a scoring job through :func:`federation.run_job`, checked against the same jobs
on the simulation runtime (the AUC of the scores both return on the same merchants)
and against what the saved model gives each merchant here and a centralized reference
(so an inverted label, scores paired with the wrong merchants or the wrong model kept
fail the test);
refusals played by a curious platform (unsigned and wrongly signed bundles) and by a
curious node (Control API through the proxy, an unregistered key); a SuperLink
restart; a node killed mid-round; a clean shutdown. (A node on a skewed clock has its
own, smaller topology: ``test_skewed_clock.py``.) Each phase's wall time is
printed at the end (``-s``), so a slow run shows where its time went.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from federation import JobFailed, run_job
from federation.apps._node import NodeConfig
from federation.deploy import (
    ControlClient,
    ControlError,
    LocalFederation,
    build_fab,
    descendants,
    fab_pyproject,
    load_node_settings,
    release_keygen,
    sign_fab,
    store_signed_fab,
)
from federation.holdout import is_holdout
from federation.metrics import auc
from federation.models import build_g_erp, predict_proba, set_weights
from federation.schema import LABEL, MERCHANT_ID
from federation.standardise import encoder_from_arrays
from ledger import parse_canonical
from ledger._models import LogEntryRow

from ..federation._flworld import grant_consents, make_world

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]

CATS = "cash_and_debt,margins"
POLICY = {"min-cohort": 5, "min-score-cohort": 5, "test-seed": 7}
"""Every node's own policy, deployed and simulated alike: small cohorts for a small world,
and a tests-only node seed so both runtimes draw the same DP noise."""
PER_ISV = 200
"""Merchants per ISV. At 60 the nodes' DP sketches put every merchant in one bin of every
feature but debt and two DP-SGD rounds leave the model at its random start, whose score
AUC (0.34) both runtimes then returned alike; at 200 the debt split survives and the job
learns it (the centralized reference's AUC on the same encoding, 0.67)."""
TRAIN = {"lr": 1.0}
"""DP-SGD is plain SGD under Opacus: at the test world's default 0.1, two rounds barely move
the model off its seeded start."""


class _Phases:
    """Wall time per phase of the test, printed at the end."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []
        self.last = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.marks.append((name, now - self.last))
        print(f"phase done: {name} {now - self.last:.1f} s", flush=True)
        self.last = now

    def report(self) -> str:
        total = sum(t for _, t in self.marks)
        rows = [f"  {name:<38} {t:6.1f} s" for name, t in self.marks]
        return "\n".join(["phases:", *rows, f"  {'total':<38} {total:6.1f} s"])


def _sim_nodes(nodes: list[NodeConfig], root: Path) -> list[NodeConfig]:
    """The same ISVs for the simulation runtime, each with a copy of its untouched state.

    A copy taken before any job keeps both runtimes' nodes at the same start: the same
    approvals, no ε spent, no manifest seen (the deployed nodes spend and record theirs).
    """
    out = []
    for node in nodes:
        d = root / node.isv_id
        shutil.copytree(node.state_dir, d / "state")
        policy = d / "node.toml"
        policy.write_text(
            "[policy]\n" + "".join(f"{k} = {v}\n" for k, v in POLICY.items()), "utf-8"
        )
        out.append(replace(node, state_dir=d / "state", policy=policy))
    return out


def _score_auc(scores_path: Path, labels: pd.DataFrame, merchants: set[str]) -> float:
    """AUC of a scoring job's ``g`` over ``merchants`` against the platform's labels."""
    scores = pd.read_csv(scores_path, dtype={MERCHANT_ID: str})
    both = scores[scores[MERCHANT_ID].isin(merchants)].merge(labels, on=MERCHANT_ID)
    assert len(both) == len(merchants)
    return auc(both[LABEL].to_numpy(), both["g"].to_numpy())


def _local_scores(model_dir: Path, erp: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``g`` of the job's saved model and encoder for each row of ``erp``, computed here,
    and the encoded rows (``model.npz`` as the ServerApp writes it)."""
    stored = np.load(model_dir / "model.npz")
    weights = [stored[f"w{i}"] for i in range(sum(k.startswith("w") for k in stored.files))]
    encoder = encoder_from_arrays(
        {k[5:]: stored[k] for k in stored.files if k.startswith("enc::")}
    )
    model = build_g_erp("logistic", encoder.n_outputs)
    set_weights(model, weights)
    X = encoder.transform(erp)
    return predict_proba(model, X), X


def _check_scores(scores_path: Path, model_dir: Path, erp: pd.DataFrame, labels: pd.DataFrame,
                  merchants: set[str]) -> tuple[float, float]:
    """The returned scores are the saved model's on each merchant's own row; returns their
    AUC and that of a centralized logistic regression on the same encoding of the nodes'
    training rows (both over ``merchants``)."""
    g_here, X = _local_scores(model_dir, erp)
    y = labels.set_index(MERCHANT_ID).loc[erp[MERCHANT_ID], LABEL].to_numpy()
    here = pd.DataFrame({MERCHANT_ID: erp[MERCHANT_ID].to_numpy(), "g_here": g_here})
    scores = pd.read_csv(scores_path, dtype={MERCHANT_ID: str}).merge(here, on=MERCHANT_ID)
    assert len(scores) == len(merchants)
    assert np.abs(scores["g"] - scores["g_here"]).max() < 1e-5  # each score is its merchant's
    train = ~erp[MERCHANT_ID].map(is_holdout).to_numpy(dtype=bool)
    ref = LogisticRegression(max_iter=1000).fit(X[train], y[train]).predict_proba(X)[:, 1]
    scored = erp[MERCHANT_ID].isin(merchants).to_numpy()
    return _score_auc(scores_path, labels, merchants), auc(y[scored], ref[scored])


def _procs_under(path: Path) -> list[int]:
    """Live processes whose command line mentions ``path`` (ours, by construction)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if str(path) in cmd and state != "Z":
                out.append(int(entry.name))
    return out


def test_deployment_end_to_end(
    tmp_path: Path, db_url: str, sessions: sessionmaker[Session], fed: LocalFederation
) -> None:
    """Train + score on 3 real SuperNodes behind the proxy; every refusal holds; clean stop."""
    phases = _Phases()
    world = make_world(tmp_path / "world", per_isv=PER_ISV)
    grant_consents(world, sessions)
    sim_nodes = _sim_nodes(world.nodes, tmp_path / "sim")
    for node in world.nodes:
        toml = fed.node_toml(node, policy=POLICY)
        fed.onboard(load_node_settings(toml))
        fed.start_node(toml)
    # A node whose key nobody registered: same software, same CA, refused by the SuperLink.
    rogue = replace(world.nodes[0], isv_id="rogue", state_dir=tmp_path / "rogue-state")
    rogue_settings = fed.start_node(fed.node_toml(rogue))
    runtime = fed.runtime(timeout=240)
    phases.done("platform up, 4 SuperNodes started")

    # -- the curious node: the proxy serves the Fleet API and nothing else ------------------
    with httpx.Client(verify=str(fed.layout.ca_cert), timeout=10) as http:
        base = f"https://{fed.fleet_address}"
        for path in (
            "/v1/control/start-run",
            "/v1/control/list-nodes",
            "/v1/runtime/pull-task-input",
            "/v1/fleet/../control/list-nodes",
            "/docs",
        ):
            res = http.post(base + path, content=b"\x00")
            assert res.status_code in (403, 404), path
        assert http.post(base + "/v1/control/start-run").json()["code"] == "FLEET_ONLY"
    with pytest.raises(ControlError), ControlClient(fed.fleet_address, fed.layout.ca_cert) as c:
        c.list_nodes()
    phases.done("proxy refusals")

    # -- a 2-round training job, then scoring, through the one fedgate function --------------
    train_cfg = world.run_config(
        job_id="dep-train", db_url=db_url, out="dep-train", categories=CATS,
        **{"timeout-s": 120}, **TRAIN,
    )
    result = run_job(train_cfg, world.nodes, deployment=runtime)
    assert result.nodes == ("isv0", "isv1", "isv2")
    assert [r.round for r in result.rounds] == [1, 2]
    assert all(r.failures == () for r in result.rounds)
    phases.done("2-round training job (deployment)")

    with sessions() as s:
        bodies = [
            parse_canonical(row.leaf_data)["body"]
            for row in s.scalars(select(LogEntryRow).where(LogEntryRow.kind == "data.used"))
        ]
    assert {b["receipt"] for b in bodies} == {r["receipt"] for r in result.receipts}
    seen = {(r["data_provider"], r["round"]) for r in result.receipts if r["action"] == "train"}
    assert seen == {(isv, rnd) for isv in ("isv0", "isv1", "isv2") for rnd in (1, 2)}

    # The SuperLink restarts between runs: nodes, runs and the release survive; nodes rejoin.
    with fed.control() as c:
        before = {n.node_id for n in c.list_nodes()}
    fed.restart_superlink()
    with fed.control() as c:
        assert {n.node_id for n in c.list_nodes()} == before
        assert len(before) == 3  # the rogue key was never admitted
    scored = run_job(
        {
            **world.run_config(job_id="dep-score", db_url=db_url, out="dep-score", categories=CATS),
            "mode": "score",
            "model-dir": str(result.out_dir),
            "timeout-s": 120,
        },
        world.nodes,
        deployment=runtime,
    )
    assert scored.scores_path is not None
    scores = pd.read_csv(scored.scores_path, dtype={"merchant_id": str})
    assert set(scores["merchant_id"]) == world.cohort.scoring_ok
    assert {r["action"] for r in scored.receipts} == {"query.score"}
    phases.done("SuperLink restart + scoring job")

    # -- the same jobs on the simulation runtime: the same scores' AUC on the same merchants --
    # Both runtimes' nodes hold the same data, policy and node seed and start from the same
    # state, so they train the same model up to SecAgg+'s stochastic quantisation; the
    # nodes' own evaluation metrics are noised on purpose and are not compared.
    sim_cfg = world.run_config(job_id="sim-train", db_url=db_url, out="sim-train",
                               categories=CATS, **TRAIN)
    sim_cfg["privacy-account"] = str(tmp_path / "sim" / "privacy-account.json")
    sim = run_job(sim_cfg, sim_nodes)
    assert [r.round for r in sim.rounds] == [1, 2] and sim.nodes == result.nodes
    assert all(r.failures == () for r in sim.rounds)
    sim_scored = run_job(
        {
            **world.run_config(job_id="sim-score", db_url=db_url, out="sim-score",
                               categories=CATS),
            "mode": "score",
            "model-dir": str(sim.out_dir),
        },
        sim_nodes,
    )
    assert sim_scored.scores_path is not None
    labels = pd.read_parquet(world.labels_path)
    erp = pd.concat(world.erp.values(), ignore_index=True)
    dep_auc, ref_auc = _check_scores(scored.scores_path, result.out_dir, erp, labels,
                                     world.cohort.scoring_ok)  # fmt: skip
    sim_auc, _ = _check_scores(sim_scored.scores_path, sim.out_dir, erp, labels,
                               world.cohort.scoring_ok)  # fmt: skip
    print(f"score AUC on {len(world.cohort.scoring_ok)} merchants: deployment {dep_auc:.4f}, "
          f"simulation {sim_auc:.4f}, centralized reference {ref_auc:.4f}")
    assert abs(dep_auc - sim_auc) <= 0.02
    # The job learnt the label's direction: an inverted label, the random start or scores
    # paired with other merchants land near 1 − 0.67, 0.33 or 0.5.
    assert ref_auc >= 0.6 and dep_auc >= ref_auc - 0.05
    phases.done("simulation: training + scoring jobs")

    # -- a SuperNode killed mid-round: the run ends (cleanly), the dead node is not paid -------
    # (A node on a skewed clock has its own test: tests/deployment/test_skewed_clock.py.)
    isv2_log = fed.root / "nodes" / "isv2" / "supernode.log"
    seen_trains = isv2_log.read_text().count("Receiving: train message")
    outcome: dict[str, object] = {}

    def fault_job() -> None:
        try:
            outcome["result"] = run_job(
                world.run_config(job_id="dep-fault", db_url=db_url, out="dep-fault",
                                 categories=CATS, rounds=1, **{"timeout-s": 20}),
                world.nodes,
                deployment=runtime,
            )
        except JobFailed as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=fault_job)
    worker.start()
    deadline = time.monotonic() + 180
    while isv2_log.read_text().count("Receiving: train message") == seen_trains:
        assert time.monotonic() < deadline, "isv2 never got its train message"
        time.sleep(0.1)
    fed.stop_node("isv2", kill=True)
    worker.join(timeout=240)
    assert not worker.is_alive()
    if "result" in outcome:  # the others finished the round without it
        fault = outcome["result"]
        assert "isv2" not in fault.rounds[0].train  # type: ignore[attr-defined]
    else:
        assert isinstance(outcome["error"], JobFailed)
    with sessions() as s:
        paid = [
            b for b in (
                parse_canonical(row.leaf_data)["body"]
                for row in s.scalars(select(LogEntryRow).where(LogEntryRow.kind == "data.used"))
            )
            if b.get("job_id") == "dep-fault"
        ]
    # isv2 answered the statistics round before it died; nothing for its round 1.
    assert not [b for b in paid if b.get("data_provider") == "isv2" and b.get("round") == 1]
    fed.start_node(fed.root / "nodes" / "isv2" / "node.toml")  # it rejoins (below: it answers)
    phases.done("killed-node job")

    # -- the curious platform: bundles the nodes did not pin are refused ----------------------
    other = release_keygen(tmp_path / "other" / "release.key")
    assert other.exists()
    forged = build_fab(fab_pyproject(version="0.1.1"))
    forged_hash = store_signed_fab(
        fed.layout.database, forged, sign_fab(forged, tmp_path / "other" / "release.key")
    )
    with pytest.raises(JobFailed) as wrong:
        run_job(
            world.run_config(job_id="dep-forged", db_url=db_url, out="dep-forged", categories=CATS,
                             **{"timeout-s": 30}),
            world.nodes,
            deployment=replace(runtime, fab_hash=forged_hash),
        )
    assert "identify" in " ".join(wrong.value.reasons)
    job_file = tmp_path / "unsigned-job.json"
    job_file.write_text(json.dumps({
        **world.run_config(job_id="dep-unsigned", db_url=db_url, out="dep-unsigned",
                           categories=CATS, **{"timeout-s": 30}),
        "min-nodes": 3,
    }))
    with fed.control() as c:
        unsigned_run = c.start_local_run(build_fab(), {"job-file": str(job_file)})
        state = c.wait_run(unsigned_run, timeout=120)
    assert state.finished and not state.succeeded and state.details  # Flower's reason
    for isv in ("isv0", "isv1", "isv2"):
        log = (fed.root / "nodes" / isv / "supernode.log").read_text()
        assert "FAB verification failed" in log  # the wrongly signed bundle
        assert "could not be verified" in log  # the unsigned one
    rogue_log = (fed.root / "nodes" / "rogue" / "supernode.log").read_text()
    assert "Receiving" not in rogue_log and rogue_settings.isv_id == "rogue"
    phases.done("wrongly signed + unsigned bundles")

    # -- clean shutdown: nothing of ours outlives the topology ---------------------------------
    pids = [p.pid for procs in fed.nodes.values() for p in procs]
    pids += [p.pid for p in (fed.superlink, fed.proxy) if p is not None]
    tree = [c for p in pids if p for c in descendants(p)]
    assert fed.down() == []
    deadline = time.monotonic() + 10
    while _procs_under(fed.root) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _procs_under(fed.root) == []
    assert tree  # the topology did spawn helpers, and they are gone too
    phases.done("shutdown")
    print(phases.report())
