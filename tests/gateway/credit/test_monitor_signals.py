"""``fedgate monitor run --signals``: the ERP rules read changes the nodes released.

The fast tests check the rules on released changes (pure). The slow one runs, per
database: a synthetic world whose consents cover data to come, node approvals,
``fedgate credit decide``, drawdowns, then a new ERP snapshot at each ISV with one
merchant built for each ERP rule (and one red-flag merchant without a monitoring
consent), then ``fedgate monitor run --signals``: a real ``erp-changes`` job whose
coarse changes fire each rule on its own merchant only, with the node's receipt in
the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

import ledger
from consent import grant, parse_terms
from federation.signals import CHANGE_SIGNALS
from gateway import credit, jobs
from gateway.cli import _common, app
from gateway.credit._models import AlertRow
from gateway.keys import load_or_create_key
from ledger._models import LogEntryRow
from tests.utils.cli import cli_settings

RULES = credit.parse_policy(credit.DEFAULT_POLICY_TOML).monitoring


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """A CLI runner on the test database (data directory under ``tmp_path``)."""
    with cli_settings(monkeypatch, db_url, tmp_path / "data"):
        yield CliRunner()


def _rules(changes: dict[str, float], consented: bool = True) -> list[str]:
    obs = credit.Observation(merchant_id="m", erp_changes=changes,
                             erp_source={"kind": "node-query", "job": "j"})  # fmt: skip
    fired = credit.evaluate_rules(RULES, overdue_days=0, decision_pd=None, obs=obs,
                                  consented=consented)  # fmt: skip
    return [r for r, _ in fired]


FLAT = {"revenue_change": 0.0, "shipping_cost_per_order_change": 0.0,
        "orders_shipped_change": 0.0, "gross_margin_change_pt": 0.0}  # fmt: skip


def test_rules_read_released_changes_at_their_thresholds() -> None:
    """Each ERP rule fires on a node's changes exactly at its policy threshold, not below."""
    assert _rules(FLAT) == []
    assert _rules({**FLAT, "shipping_cost_per_order_change": -0.30,
                   "orders_shipped_change": 0.20}) == ["fake_trade"]  # fmt: skip
    assert _rules({**FLAT, "shipping_cost_per_order_change": -0.29,
                   "orders_shipped_change": 0.20}) == []  # fmt: skip
    assert _rules({**FLAT, "gross_margin_change_pt": -10.0}) == ["margin_collapse"]
    assert _rules({**FLAT, "gross_margin_change_pt": -9.5}) == []
    assert _rules({**FLAT, "revenue_change": -0.40}) == ["turnover_drop"]
    assert _rules({**FLAT, "revenue_change": -0.39}) == []
    assert _rules({**FLAT, "revenue_change": -0.9}, consented=False) == []


def test_released_changes_win_and_the_alert_names_their_source() -> None:
    """With values before/now and a node's changes, the node's changes decide; the alert's
    inputs are the released values plus where they came from."""
    then = {"gross_margin": 0.4, "monthly_revenue": 1000, "shipping_cost_per_order": 10,
            "orders_shipped": 100}  # fmt: skip
    obs = credit.Observation(
        merchant_id="m", erp_then=then, erp_now={**then, "monthly_revenue": 100},
        erp_changes={**FLAT, "gross_margin_change_pt": -12.5},
        erp_source={"kind": "node-query", "job": "j1", "isv": "isv00", "receipt_seq": 7},
    )  # fmt: skip

    fired = credit.evaluate_rules(RULES, overdue_days=0, decision_pd=None, obs=obs,
                                  consented=True)  # fmt: skip

    assert fired == [("margin_collapse", {"margin_change_pt": -12.5, "erp_source": {
        "kind": "node-query", "job": "j1", "isv": "isv00", "receipt_seq": 7}})]  # fmt: skip


def test_signals_without_world_or_with_a_bad_since_exit_1(cli: CliRunner) -> None:
    """--signals needs --world; --since must be a day and goes with --signals."""
    no_world = cli.invoke(app, ["monitor", "run", "--signals"])
    bad_since = cli.invoke(app, ["monitor", "run", "--signals", "--world", "w", "--since", "x"])
    lone_since = cli.invoke(app, ["monitor", "run", "--since", "2026-01-01"])

    assert no_world.exit_code == 1 and "error[BAD_ARGUMENT]" in no_world.output
    assert bad_since.exit_code == 1 and "error[BAD_DATE]" in bad_since.output
    assert lone_since.exit_code == 1 and "error[BAD_ARGUMENT]" in lone_since.output


def _grant(world: Path, doc: dict[str, object], data_to: str, no_monitoring: set[str]) -> None:
    """Consents for every ERP merchant (monitoring too, except ``no_monitoring``) covering
    data up to ``data_to``; each node approves exactly what was granted."""
    from federation import get_spec
    from federation.node import register_approvals

    cfg = _common.settings()
    wn = jobs.world_nodes(cfg, world)
    key = load_or_create_key(cfg.resolved_key_dir, jobs.CONSENT_MANAGER_KEY)
    now = datetime.now(UTC)
    cats = sorted(set(get_spec("pd-erp").categories) | set(credit.MONITORING_CATEGORIES))
    approved: dict[str, list[object]] = {}
    with _common.session() as s:
        for node in wn.nodes:
            for m in pd.read_parquet(node.erp_path)["merchant_id"].astype(str):
                purposes = ["credit_scoring", "model_training"]
                if m not in no_monitoring:
                    purposes.append("post_loan_monitoring")
                terms = {
                    "consent_id": f"c-{m}", "merchant_id": m, "data_provider": node.isv_id,
                    "data_consumer": jobs.DEFAULT_CONSUMER, "purposes": sorted(purposes),
                    "categories": cats, "data_from": doc["data_from"], "data_to": data_to,
                    "frequency": {"uses": 1000, "per": "day"}, "data_life_days": 90,
                    "consent_start": (now - timedelta(days=1)).isoformat(),
                    "consent_expiry": (now + timedelta(days=60)).isoformat(),
                }  # fmt: skip
                approved.setdefault(node.isv_id, []).append(
                    grant(s, parse_terms(terms), key=key, at=now).signed
                )
        s.commit()
    for node in wn.nodes:
        register_approvals(
            node.approvals(node.node_policy()),
            ((a.artefact, a.hash) for a in approved[node.isv_id]),  # type: ignore[attr-defined]
        )


def _new_snapshot(path: Path, day: str, edits: dict[str, dict[str, float]]) -> None:
    """The ISV's ERP receives a new month: every merchant's row again, dated ``day``,
    with ``edits`` (merchant → field → factor, or ``+x`` for the margin) applied."""
    old = pd.read_parquet(path)
    new = old.copy()
    new["as_of"] = pd.Timestamp(day).as_unit("ms")
    for m, change in edits.items():
        i = new.index[new["merchant_id"] == m]
        for f, v in change.items():
            if f == "gross_margin":
                new.loc[i, f] = new.loc[i, f] + v
            else:
                new.loc[i, f] = np.round(new.loc[i, f].astype(float) * v).astype(np.int64)
    pd.concat([old, new], ignore_index=True).to_parquet(path, index=False)


def _count_signals_receipts() -> list[dict[str, object]]:
    with _common.session() as s:
        bodies = [
            ledger.parse_canonical(bytes(leaf))["body"]
            for leaf in s.scalars(select(LogEntryRow.leaf_data).where(
                LogEntryRow.kind == "data.used"))
        ]  # fmt: skip
    return [b for b in bodies if b.get("action") == "query.signals"]


@pytest.mark.slow
def test_monitor_run_signals_fires_each_erp_rule_on_its_merchant_only(
    cli: CliRunner, tmp_path: Path
) -> None:
    """A real erp-changes job: each rule fires on the merchant built for it, never on the
    merchant without a monitoring consent; receipts and the release's source are recorded."""
    from federation.synth import SynthParams, write_world

    world = tmp_path / "world"
    doc = write_world(SynthParams(merchants=300, isvs=2, seed=0, default_rate=0.2), world)
    wn = jobs.world_nodes(_common.settings(), world)
    erp = {n.isv_id: pd.read_parquet(n.erp_path) for n in wn.nodes}
    today = datetime.now(UTC).date()
    new_day, as_of = today + timedelta(days=5), today + timedelta(days=10)
    first = sorted(erp)[0]
    ids = sorted(erp[first]["merchant_id"].astype(str))
    platform = pd.read_parquet(wn.platform_path).set_index("merchant_id")
    healthy = [m for m in ids if platform.loc[m, "default_12m"] == 0]
    fake, margin, turnover, silent = healthy[:4]
    _grant(world, doc, (today + timedelta(days=30)).isoformat(), {silent})
    all_ids = [m for f in erp.values() for m in f["merchant_id"].astype(str)]
    y = platform.loc[all_ids, "default_12m"].to_numpy()
    g = np.clip(0.1 + 0.5 * y + np.random.default_rng(0).normal(0, 0.15, len(y)), 0.01, 0.99)
    pd.DataFrame({"merchant_id": all_ids,
                  "isv_id": [i for i, f in erp.items() for _ in range(len(f))],
                  "g": g}).to_csv(tmp_path / "scores.csv", index=False)  # fmt: skip
    decided = cli.invoke(
        app, ["credit", "decide", "--world", str(world), "--scores", str(tmp_path / "scores.csv")]
    )
    assert decided.exit_code == 0, decided.output
    with _common.session() as s:
        decisions = credit.latest_decisions(s)
    lent = sorted(m for m in all_ids if decisions[m].line_with >= 1000_00)
    assert {fake, margin, turnover, silent} <= set(lent) and len(lent) >= 60
    events = tmp_path / "loans.jsonl"
    events.write_text("".join(
        json.dumps({"key": f"d-{m}", "loan_id": f"L-{m}", "merchant": m, "kind": "drawdown",
                    "date": today.isoformat(), "amount": 1000_00, "currency": "CNY"}) + "\n"
        for m in lent
    ), encoding="utf-8")  # fmt: skip
    assert cli.invoke(app, ["loans", "import", str(events)]).exit_code == 0
    red_flags = {"shipping_cost_per_order": 0.6, "orders_shipped": 1.5,
                 "gross_margin": -0.2, "monthly_revenue": 0.5}  # fmt: skip
    for isv in erp:
        edits: dict[str, dict[str, float]] = {}
        if isv == first:
            edits = {fake: {"shipping_cost_per_order": 0.6, "orders_shipped": 1.5},
                     margin: {"gross_margin": -0.2}, turnover: {"monthly_revenue": 0.5},
                     silent: red_flags}  # fmt: skip
        node = next(n for n in wn.nodes if n.isv_id == isv)
        _new_snapshot(node.erp_path, new_day.isoformat(), edits)  # type: ignore[arg-type]

    result = cli.invoke(app, ["monitor", "run", "--signals", "--world", str(world),
                              "--as-of", as_of.isoformat()])  # fmt: skip

    assert result.exit_code == 0, result.output
    assert f"signals: {len(lent)} merchants with an open loan, {len(lent) - 1} released" in (
        result.output
    )
    with _common.session() as s:
        alerts = s.scalars(select(AlertRow).where(AlertRow.rule != "none")).all()
    fired = sorted((a.rule, a.merchant_id) for a in alerts)
    assert fired == sorted([("fake_trade", fake), ("margin_collapse", margin),
                            ("turnover_drop", turnover)])  # fmt: skip
    by_rule = {a.rule: a.inputs for a in alerts}
    assert by_rule["fake_trade"]["shipping_change"] == pytest.approx(-0.4)
    assert by_rule["fake_trade"]["orders_change"] == pytest.approx(0.5)
    assert by_rule["margin_collapse"]["margin_change_pt"] == pytest.approx(-20.0)
    assert by_rule["turnover_drop"]["revenue_change"] == pytest.approx(-0.5)
    receipts = _count_signals_receipts()
    assert sorted(r["data_provider"] for r in receipts) == sorted(erp)
    assert all(r["epsilon_spent"] == 0.0 for r in receipts)
    seq = {r["data_provider"]: r for r in receipts}
    src = by_rule["fake_trade"]["erp_source"]
    assert src["kind"] == "node-query" and src["isv"] == first
    assert src["job"].startswith("monitor-signals-")
    with _common.session() as s:
        leaf = s.scalar(select(LogEntryRow.leaf_data).where(LogEntryRow.seq == src["receipt_seq"]))
    body = ledger.parse_canonical(bytes(leaf))["body"]  # type: ignore[arg-type]
    assert body["action"] == "query.signals" and body["job_id"] == src["job"]
    assert body["receipt"] == seq[first]["receipt"]
    (path,) = (_common.settings().data_dir / "jobs").glob("monitor-signals-*/signals.csv")
    release = pd.read_csv(path, dtype={"merchant_id": str})
    assert list(release.columns) == ["merchant_id", "isv_id", "signal", "value"]
    assert silent not in set(release["merchant_id"])
    assert set(release["merchant_id"]) == set(lent) - {silent}
    assert set(release["signal"]) == set(CHANGE_SIGNALS)
    # The same pass again: the same release, the same inputs, nothing new.
    again = cli.invoke(app, ["monitor", "run", "--signals", "--world", str(world),
                             "--as-of", as_of.isoformat()])  # fmt: skip
    assert again.exit_code == 0 and "ran before" in again.output, again.output
