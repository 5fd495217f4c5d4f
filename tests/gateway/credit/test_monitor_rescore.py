"""The persisted combiner and ``fedgate monitor run --rescore`` (a real post_loan_monitoring job).

The fast tests check the stored combiner against the fitted one, its idempotence, and the
refusals (no combiner, an edited file). The slow one runs, per database: a synthetic world,
consents and node approvals, a two-round DP training job, ``fedgate credit decide``
(which persists the combiner), ``fedgate loans import`` of drawdowns, then ``fedgate
monitor run --rescore``: a scoring job under ``post_loan_monitoring`` whose g scores the
stored combiner turns into the PDs the ``pd_rise`` rule reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

import ledger
from consent import grant, parse_terms
from federation.models import Combiner
from gateway import credit, jobs
from gateway.cli import _common, app
from gateway.credit._models import AlertRow
from gateway.keys import load_or_create_key
from ledger._models import LogEntryRow
from tests.utils.cli import cli_settings


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """A CLI runner on the test database (data directory under ``tmp_path``)."""
    with cli_settings(monkeypatch, db_url, tmp_path / "data"):
        yield CliRunner()


def _fitted(n: int = 400, seed: int = 0) -> tuple[Combiner, list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    f = np.clip(0.2 + 0.3 * y + rng.normal(0, 0.15, n), 0.01, 0.99)
    g = np.clip(0.2 + 0.4 * y + rng.normal(0, 0.15, n), 0.01, 0.99)
    ids = [f"m{i:04d}" for i in range(n)]
    return Combiner().fit(f, g, y), ids, f, g


def _count(kind: str) -> int:
    with _common.session() as s:
        return int(s.scalar(select(func.count()).where(LogEntryRow.kind == kind)) or 0)


def test_stored_combiner_maps_g_as_the_fitted_one_and_is_idempotent(cli: CliRunner) -> None:
    """Same PDs as ``Combiner.predict``; saving the same fit twice is one ledger entry."""
    comb, ids, f, g = _fitted()
    folder = _common.settings().data_dir / credit.COMBINER_SUBDIR
    with _common.session() as s:
        first = credit.save_combiner(s, folder, comb, ids, f)
        again = credit.save_combiner(s, folder, comb, ids, f)
        s.commit()
    with _common.session() as s:
        loaded = credit.load_combiner(s, folder)
    scores = pd.DataFrame({"merchant_id": ids, "isv_id": "isv0", "g": g})

    got = loaded.pds_now(scores)
    want = comb.predict(f, g).with_erp

    assert first.version == again.version == loaded.version == 1
    assert first.sha256 == loaded.sha256 and _count(credit.COMBINER_ENTRY) == 1
    np.testing.assert_allclose([got[m] for m in ids], want, rtol=1e-12, atol=1e-15)
    # A merchant without an origination f (off-platform) gets no PD from it.
    assert loaded.pds_now(pd.DataFrame({"merchant_id": ["zz"], "g": [0.5]})) == {}
    # Two ISVs' scores for one merchant: the mean of their logits.
    two = pd.DataFrame({"merchant_id": [ids[0], ids[0]], "g": [0.1, 0.9]})
    np.testing.assert_allclose(
        loaded.pds_now(two)[ids[0]], comb.predict(f[:1], np.asarray([0.5])).with_erp[0]
    )

    refit, *_ = _fitted(seed=1)
    with _common.session() as s:
        second = credit.save_combiner(s, folder, refit, ids, f)
        s.commit()
    assert second.version == 2 and _count(credit.COMBINER_ENTRY) == 2


def test_edited_combiner_file_is_refused(cli: CliRunner) -> None:
    """The file no longer matches the ledger's hash: COMBINER_MISMATCH, nothing scored."""
    comb, ids, f, _ = _fitted()
    folder = _common.settings().data_dir / credit.COMBINER_SUBDIR
    with _common.session() as s:
        stored = credit.save_combiner(s, folder, comb, ids, f)
        s.commit()
    path = folder / f"{stored.sha256}.json"
    path.write_bytes(path.read_bytes().replace(b'"m0000":"', b'"m0000":"1'))

    with _common.session() as s, pytest.raises(credit.CreditError) as info:
        credit.load_combiner(s, folder)

    assert info.value.code == "COMBINER_MISMATCH"


def test_rescore_without_a_combiner_exits_1_before_any_job(cli: CliRunner, tmp_path: Path) -> None:
    """No lines computed yet: a clear error, exit 1, no scoring job, no monitoring entry."""
    before = _count("data.used")

    result = cli.invoke(
        app,
        ["monitor", "run", "--rescore", "--world", str(tmp_path / "w"),
         "--model-dir", str(tmp_path / "m"), "--as-of", "2026-11-20"],
    )  # fmt: skip
    missing = cli.invoke(app, ["monitor", "run", "--rescore"])

    assert result.exit_code == 1
    assert "error[NO_COMBINER]" in result.output and "fedgate credit decide" in result.output
    assert _count("data.used") == before and _count(credit.ALERT_ENTRY) == 0
    assert missing.exit_code == 1 and "error[BAD_ARGUMENT]" in missing.output


def _grant_all(world: Path, doc: dict[str, object]) -> pd.DataFrame:
    """Every ERP merchant consents to training, scoring and monitoring; nodes approve."""
    from federation import get_spec
    from federation.node import register_approvals

    cfg = _common.settings()
    wn = jobs.world_nodes(cfg, world)
    key = load_or_create_key(cfg.resolved_key_dir, jobs.CONSENT_MANAGER_KEY)
    now = datetime.now(UTC)
    cats = sorted(set(get_spec("pd-erp").categories) | set(credit.MONITORING_CATEGORIES))
    frames = []
    approved: dict[str, list[object]] = {}
    with _common.session() as s:
        for node in wn.nodes:
            erp = pd.read_parquet(node.erp_path).drop_duplicates("merchant_id")
            frames.append(erp[["merchant_id"]].assign(isv=node.isv_id))
            for m in erp["merchant_id"].astype(str):
                terms = {
                    "consent_id": f"c-{m}-{node.isv_id}",
                    "merchant_id": m,
                    "data_provider": node.isv_id,
                    "data_consumer": jobs.DEFAULT_CONSUMER,
                    "purposes": ["credit_scoring", "model_training", "post_loan_monitoring"],
                    "categories": cats,
                    "data_from": doc["data_from"],
                    "data_to": doc["data_to"],
                    "frequency": {"uses": 1000, "per": "day"},
                    "data_life_days": 90,
                    "consent_start": (now - timedelta(days=1)).isoformat(),
                    "consent_expiry": (now + timedelta(days=30)).isoformat(),
                }
                approved.setdefault(node.isv_id, []).append(
                    grant(s, parse_terms(terms), key=key, at=now).signed
                )
        s.commit()
    for node in wn.nodes:
        register_approvals(
            node.approvals(node.node_policy()),
            ((a.artefact, a.hash) for a in approved[node.isv_id]),  # type: ignore[attr-defined]
        )
    return pd.concat(frames, ignore_index=True)


@pytest.mark.slow
def test_monitor_run_rescore_runs_a_monitoring_job_and_uses_the_stored_combiner(
    cli: CliRunner, tmp_path: Path
) -> None:
    """Every pd_rise alert's PD now is the stored combiner's PD of the job's own g score."""
    from federation import run_job
    from federation.synth import SynthParams, write_world

    world = tmp_path / "world"
    doc = write_world(SynthParams(merchants=300, isvs=2, seed=0, default_rate=0.2), world)
    erp = _grant_all(world, doc)
    cfg = _common.settings()
    # pd_rise 0: any re-scored PD at or above the decision's fires, so alerts show the PDs.
    cfg.resolved_credit_policy_file.parent.mkdir(parents=True, exist_ok=True)
    cfg.resolved_credit_policy_file.write_text(
        credit.DEFAULT_POLICY_TOML.replace("pd_rise = 0.05", "pd_rise = 0.0"), encoding="utf-8"
    )
    wn = jobs.world_nodes(cfg, world)
    cohort = jobs.ConsentCohort(cfg)
    try:
        trained = run_job(
            jobs.train_run_config(
                cfg, wn, job_id="t-rescore", spec="pd-erp", rounds=2, lr=0.5, seed=0
            ),
            list(wn.nodes),
            cohort_source=cohort,
        )
    finally:
        cohort.close()
    assert trained.model_path is not None

    platform = pd.read_parquet(wn.platform_path).set_index("merchant_id")
    rng = np.random.default_rng(0)
    y = platform.loc[erp["merchant_id"], "default_12m"].to_numpy()
    g = np.clip(0.1 + 0.5 * y + rng.normal(0, 0.15, len(y)), 0.01, 0.99)
    pd.DataFrame({"merchant_id": erp["merchant_id"], "isv_id": erp["isv"], "g": g}).to_csv(
        tmp_path / "scores.csv", index=False
    )
    decided = cli.invoke(
        app, ["credit", "decide", "--world", str(world), "--scores", str(tmp_path / "scores.csv")]
    )
    assert decided.exit_code == 0, decided.output
    with _common.session() as s:
        stored = credit.load_combiner(s, cfg.data_dir / credit.COMBINER_SUBDIR)
        decisions = credit.latest_decisions(s)
    assert stored.version == 1 and f"combiner v1 ({stored.model_id})" in decided.output
    assert {d.inputs["models"]["combiner"] for d in decisions.values()} == {stored.model_id}

    lent = sorted(m for m in set(erp["merchant_id"]) if decisions[m].line_with >= 1000_00)
    assert len(lent) >= 40
    events = tmp_path / "loans.jsonl"
    events.write_text(
        "".join(
            json.dumps({"key": f"d-{m}", "loan_id": f"L-{m}", "merchant": m, "kind": "drawdown",
                        "date": "2026-11-02", "amount": 1000_00, "currency": "CNY"}) + "\n"
            for m in lent
        ),
        encoding="utf-8",
    )  # fmt: skip
    imported = cli.invoke(app, ["loans", "import", str(events)])
    assert imported.exit_code == 0, imported.output
    receipts_before = _count("data.used")

    result = cli.invoke(
        app,
        ["monitor", "run", "--as-of", "2026-11-20", "--rescore", "--world", str(world),
         "--model-dir", str(trained.out_dir)],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert f"re-score: {len(lent)} merchants with an open loan" in result.output
    # The job ran for real: the nodes' signed receipts reached the ledger.
    assert _count("data.used") > receipts_before
    (scores_path,) = (cfg.data_dir / "jobs").glob("monitor-rescore-*/**/scores.csv")
    scores = pd.read_csv(scores_path, dtype={"merchant_id": str, "isv_id": str})
    assert len(scores) > 0 and set(scores["merchant_id"]) <= set(lent)
    want = stored.pds_now(scores)
    with _common.session() as s:
        alerts = s.scalars(select(AlertRow).where(AlertRow.rule == "pd_rise")).all()
        bodies = [
            ledger.parse_canonical(bytes(leaf))["body"]
            for leaf in s.scalars(
                select(LogEntryRow.leaf_data).where(LogEntryRow.kind == credit.ALERT_ENTRY)
            )
        ]
    assert alerts, result.output
    for a in alerts:
        assert a.merchant_id in want
        assert a.inputs["pd_now"] == pytest.approx(round(want[a.merchant_id], 6), abs=1e-9)
    assert {b.get("model_version") for b in bodies} == {stored.model_id}
