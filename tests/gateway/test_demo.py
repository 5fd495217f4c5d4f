"""``fedgate demo`` end to end on a tiny world: one run of the whole pipeline, real checks.

One Flower simulation start each for training and scoring (tens of seconds on 2
cores), so the demo runs once per module and every test reads the same report.
The demo keeps its own SQLite database by design (the embedded default), so this
module does not use the two-database fixtures.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from federation import is_holdout, merchant_ids_hash
from federation.receipts import hash_key
from gateway.demo import DemoError, DemoReport, run_demo
from gateway.settings import Settings
from ledger import parse_canonical
from tests.utils.browser import DRAWN_MARKS_JS, OVERFLOWING_TEXT_JS, open_in_chromium

pytestmark = pytest.mark.slow

MERCHANTS, ISVS, ROUNDS = 1_000, 3, 2
# A tiny world needs a high default rate so that every node's held-out merchants
# hold both classes (a node refuses to evaluate otherwise).
DEFAULT_RATE = 0.2


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user data dir with a main database file the demo must leave alone."""
    root = tmp_path_factory.mktemp("fedgate")
    (root / "fedgate.db").write_bytes(b"user's database")
    (root / "demo").mkdir()
    (root / "demo" / "stale.txt").write_text("from an earlier run")
    return root


@pytest.fixture(scope="module")
def report(data_dir: Path) -> DemoReport:
    """One demo run on a 1,000-merchant, 3-ISV world, 2 DP rounds."""
    return run_demo(
        Settings(data_dir=data_dir, database_url="sqlite:///does-not-matter.db"),
        merchants=MERCHANTS,
        isvs=ISVS,
        rounds=ROUNDS,
        seed=0,
        default_rate=DEFAULT_RATE,
        overwrite=True,
        # Each node's own policy pins its DP noise (tests only): on 1,000 merchants g's
        # quality, and with it whether any loan is drawn, depends on that draw.
        node_test_seed=0,
    )


def test_demo_passes_its_checks_and_leaves_the_main_db_alone(
    report: DemoReport, data_dir: Path
) -> None:
    """The report is ok, the demo dir was wiped and rebuilt, the user's DB is untouched."""
    assert report.ok
    assert report.demo_dir == (data_dir / "demo").resolve()
    assert not (data_dir / "demo" / "stale.txt").exists()
    assert (data_dir / "demo" / "fedgate.db").is_file()
    assert (data_dir / "fedgate.db").read_bytes() == b"user's database"
    assert not Path("does-not-matter.db").exists()


def test_revoked_merchants_are_absent_from_round_two_receipts(report: DemoReport) -> None:
    """Round 2 trains each node on its round-1 set minus exactly its revoked merchants."""
    assert report.consents_revoked == len(report.revoked) == 2 * ISVS
    assert not any(is_holdout(m) for m in report.revoked)
    by_round = {(u.round, u.isv): u for u in report.usage}
    lineage = json.loads((report.model_path.parent / "lineage.json").read_text())
    receipts = {
        (r["round"], r["data_provider"]): r for r in lineage["receipts"] if r["action"] == "train"
    }
    for isv in report.isvs:
        erp = pd.read_parquet(report.demo_dir / "world" / f"{isv}.parquet")
        train = {m for m in erp["merchant_id"] if not is_holdout(m)}
        gone = set(report.revoked) & train
        assert len(gone) == 2
        r1, r2 = by_round[(1, isv)], by_round[(2, isv)]
        assert r1.rows_used == len(train) and r2.rows_used == len(train) - 2
        assert r2.manifest_merchants == r1.manifest_merchants - 2
        key = hash_key(report.demo_dir / "nodes" / isv)  # the ISV reveals its hashing key
        assert receipts[(1, isv)]["merchants_hash"] == merchant_ids_hash(train, key=key)
        assert receipts[(2, isv)]["merchants_hash"] == merchant_ids_hash(train - gone, key=key)
        assert r1.hash_matches and r2.hash_matches


def test_scores_exist_and_skip_revoked_merchants(report: DemoReport) -> None:
    """Scoring returns g in [0, 1] for every consented merchant except the revoked ones."""
    scores = pd.read_csv(report.scores_path, dtype={"merchant_id": str})
    assert len(scores) == report.n_scores == report.consents_granted - report.consents_revoked
    assert scores["g"].between(0, 1).all()
    assert not set(report.revoked) & set(scores["merchant_id"])


def test_aucs_and_epsilon_are_in_range(report: DemoReport) -> None:
    """Every AUC is a number in [0, 1]; each node spent 0 < ε <= the job budget."""
    names = [row.name for row in report.aucs]
    assert len(names) == 3 and [row.reference for row in report.aucs] == [False, False, True]
    for row in report.aucs:
        assert 0.0 <= row.auc_all <= 1.0 and 0.0 <= row.auc_erp <= 1.0
    assert all(not math.isnan(a) and 0.0 <= a <= 1.0 and s > 0 for a, s in report.round_auc)
    assert set(report.epsilon) == set(report.isvs)
    assert all(0 < e <= report.epsilon_budget + 1e-6 for e in report.epsilon.values())
    assert 0 < report.central_epsilon <= report.epsilon_budget + 1e-6


def test_ledger_export_audits_and_counts_match(report: DemoReport) -> None:
    """The offline audit passed; the export holds each receipt and every consent event."""
    assert report.audit_ok and report.audit_failure is None
    assert report.ledger_checkpoints == 2
    kinds = report.ledger_kinds
    assert kinds["consent.granted"] == kinds["consent.activated"] == report.consents_granted
    assert kinds["consent.revoked"] == report.consents_revoked
    # training: a sketch + (train, evaluate) per round per node; scoring: one per node
    # training (identify + 2 per round), scoring, and one per node for each of the three
    # money-loop queries (the off-platform revenue-3m release, month 3's monitoring
    # re-score and its erp-changes release), where a node may refuse a cohort below its
    # own minimum: then its signed refusal is ledgered instead
    refused = kinds.get("refusal", 0)
    assert 0 <= refused < 3 * ISVS
    assert kinds["data.used"] == ISVS * (1 + 2 * ROUNDS) + ISVS + 3 * ISVS - refused
    lines = report.export_path.read_text().splitlines()
    leaves = [json.loads(x) for x in lines if '"leaf"' in x]
    assert len(leaves) == report.ledger_entries == sum(kinds.values())
    first = parse_canonical(base64.b64decode(leaves[0]["leaf"]))
    assert first["kind"] == "consent.granted"


def test_one_round_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """rounds=1 cannot show a revocation between rounds: BAD_ARGUMENT, nothing written."""
    with pytest.raises(DemoError) as err:
        run_demo(Settings(data_dir=tmp_path), merchants=200, isvs=2, rounds=1, seed=0)

    assert err.value.code == "BAD_ARGUMENT"
    assert not (tmp_path / "demo").exists()


def test_a_previous_demo_is_not_overwritten_unless_asked(tmp_path: Path) -> None:
    """A non-empty demo directory is refused (DEMO_EXISTS) and left exactly as it was."""
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "fedgate.db").write_bytes(b"last demo")

    with pytest.raises(DemoError) as err:
        run_demo(Settings(data_dir=tmp_path), merchants=200, isvs=2, rounds=2, seed=0)

    assert err.value.code == "DEMO_EXISTS"
    assert (tmp_path / "demo" / "fedgate.db").read_bytes() == b"last demo"


def test_money_loop_lends_monitors_and_settles(report: DemoReport) -> None:
    """Lines move both ways, six months close, fees and shares are cleared, the book ties."""
    m = report.money
    assert m is not None and m.ok
    assert m.raised > 0 and m.lowered > 0 and m.newly_given > 0 and m.off_platform > 0
    assert m.newly_given <= m.raised
    # ``uplifts`` lists platform merchants' non-zero uplifts (off-platform lines are all uplift).
    assert sum(u > 0 for u in m.uplifts) <= m.raised
    assert sum(u < 0 for u in m.uplifts) == m.lowered
    assert m.raised + m.lowered + m.unchanged == m.merchants
    assert len(m.months) == 6 and all(x.ties_to_book and x.interest > 0 for x in m.months)
    assert m.import_repeat_added == 0
    # Receipts are dated now: the current (last) month bills each ISV's train + score receipts.
    assert all(m.months[-1].fees[k] > 0 for k in report.isvs)
    assert all(m.shares_total[k] > 0 for k in report.isvs)
    for k in report.isvs:  # claw-backs on written-off interest are netted from the payout
        assert m.settled_cleared[k] + m.netted.get(k, 0) == m.fees_total[k] + m.shares_total[k]
        assert 0 <= m.netted.get(k, 0) <= m.clawbacks.get(k, 0)
    # The check itself can fail: one fen more cleared than due is not ok.
    assert not replace(m, settled_cleared={k: v + 1 for k, v in m.settled_cleared.items()}).ok
    assert m.alerts_by_rule.get("overdue", 0) > 0 and m.actions.get("freeze", 0) > 0
    assert m.fake_trade_caught <= m.fake_trade_loans
    assert m.paused_monitoring > 0 and report.ledger_kinds["consent.paused"] == m.paused_monitoring
    assert m.rescored > 0  # a real post_loan_monitoring scoring job fed month 2's PDs
    # ... and a real erp-changes signals job its ERP rules (one receipt per node, ε 0).
    assert m.signals_released > 0
    # Off-platform line bases came from a revenue-3m release (floored to 1,000 yuan).
    assert m.revenue_released > 0 and m.off_platform <= m.revenue_released
    revenue = pd.read_csv(report.demo_dir / "jobs" / "demo-signals-revenue" / "signals.csv")
    assert (revenue["signal"] == "revenue_3m").all() and not (revenue["value"] % 100_000).any()
    signal_receipts = [
        r for r in json.loads((report.demo_dir / "jobs" / "demo-signals-monitoring"
                               / "result.json").read_text())["receipts"]
    ]  # fmt: skip
    assert sorted(r["data_provider"] for r in signal_receipts) == sorted(report.isvs)
    assert all(r["action"] == "query.signals" and r["epsilon_spent"] == 0.0
               for r in signal_receipts)  # fmt: skip
    assert report.ledger_kinds["credit.line"] == m.merchants
    assert report.ledger_kinds["credit.period.closed"] == 6


def test_html_report_is_self_contained(report: DemoReport) -> None:
    """The HTML report embeds its charts as SVG and loads nothing from anywhere."""
    assert report.html_path is not None
    page = report.html_path.read_text(encoding="utf-8")
    assert page.count("<svg") >= 6
    for needle in ("<script", "src=", "href=", "@import", "url("):
        assert needle not in page
    assert page.replace('xmlns="http://www.w3.org/2000/svg"', "").count("http") == 0
    for heading in (
        "Default AUC with and without ISV data",
        "Distribution of uplift",
        "Post-loan monitoring",
        "Fees and shares per ISV",
        "Privacy: ε spent per node",
    ):
        assert heading in page



def test_html_report_renders_in_a_real_browser(report: DemoReport) -> None:
    """Debian Chromium opens the report offline: charts draw, text fits, nothing is fetched.

    The string checks above cannot tell a chart that renders from one that parses to
    nothing (a zero-width bar, an unclosed element swallowing the rest of the page) or
    a title clipped at the chart's edge; the browser's layout can.
    """
    assert report.html_path is not None
    with open_in_chromium(report.html_path) as opened:
        page = opened.page
        marks = page.evaluate(DRAWN_MARKS_JS)
        assert len(marks) >= 6 and all(m > 0 for m in marks), marks
        assert page.evaluate(OVERFLOWING_TEXT_JS) == []
        for heading in ("Default AUC with and without ISV data", "Fees and shares per ISV"):
            assert page.get_by_role("heading", name=heading).is_visible()
        body = page.locator("body").inner_text()
        assert all(isv in body for isv in report.isvs)  # every ISV has its row
        page.screenshot(path=str(report.html_path.with_suffix(".png")), full_page=True)
    assert opened.requested == [report.html_path.resolve().as_uri()]
    assert opened.problems == []
