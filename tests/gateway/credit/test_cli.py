"""The money CLI: import, settle, statements, explain, monitor — exits and what is stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from gateway.cli import _common, app
from gateway.credit._models import LoanEventRow
from tests.utils.cli import cli_settings

from ._helpers import decide, event, merchant, receipt, setup_book


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """A CLI runner on the test database, with one decided merchant and a funded book."""
    with cli_settings(monkeypatch, db_url, tmp_path / "data"):
        with _common.session() as s:
            v, pol = setup_book(s)
            decide(s, v, pol, [merchant("m1", 600_000_00, 0.06, 0.03)])
            receipt(
                s,
                "isv01",
                "train",
                used=10,
                read=12,
                issued_at="2026-07-02T00:00:00.000000Z",
                token="t1",
            )
        yield CliRunner()


def _events() -> int:
    with _common.session() as s:
        return int(s.execute(select(func.count()).select_from(LoanEventRow)).scalar_one())


def _write(path: Path, rows: list[dict]) -> Path:  # type: ignore[type-arg]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_import_settle_statement(cli: CliRunner, tmp_path: Path) -> None:
    """Import twice (second a no-op), settle twice (second posts nothing), print the statement."""
    f = _write(
        tmp_path / "ev.jsonl",
        [
            event("d1", "L1", "drawdown", "2026-07-01", 20_000_000, merchant="m1"),
        ],
    )

    first = cli.invoke(app, ["loans", "import", str(f)])
    again = cli.invoke(app, ["loans", "import", str(f)])
    settled = cli.invoke(app, ["settle", "--period", "2026-07"])
    resettled = cli.invoke(app, ["settle", "--period", "2026-07"])
    stmt = cli.invoke(app, ["statements", "isv01", "--period", "2026-07"])
    csv_out = cli.invoke(app, ["statements", "isv01", "--period", "2026-07", "--format", "csv"])

    assert first.exit_code == 0 and "1 added" in first.output, first.output
    assert again.exit_code == 0 and "already imported" in again.output
    assert settled.exit_code == 0, settled.output
    assert resettled.exit_code == 0, resettled.output
    doc = json.loads(stmt.stdout)
    # Fee 10 × 50; share: 50k yuan above the platform line × 31 days × 18 % / 365 × 20 %.
    assert doc["totals"] == {"fee": 500, "share": 15_287, "total": 15_787}
    assert doc["ties_to_book"] and doc["book"]["instructed"] == 15_787
    assert csv_out.stdout.splitlines()[-1] == "isv01,2026-07,total,,,,500,15287"
    assert _events() == 1


def test_write_off_clawback_and_recovery_through_the_cli(cli: CliRunner, tmp_path: Path) -> None:
    """July settled and cleared; August writes the loan off whole: the statement shows both
    months' shares clawed back, August's share netted and the rest carried; a recovery above
    what was written off exits 1 with its code and line, one within it is kept."""
    july = _write(
        tmp_path / "jul.jsonl",
        [event("d1", "L1", "drawdown", "2026-07-01", 20_000_000, merchant="m1")],
    )
    aug = _write(tmp_path / "aug.jsonl", [event("w1", "L1", "write_off", "2026-08-10", 20_000_000)])
    too_much = _write(
        tmp_path / "r1.jsonl",
        [
            event("r0", "L1", "recovery", "2026-09-01", 5),
            event("r1", "L1", "recovery", "2026-09-02", 30_000_000),
        ],
    )
    ok = _write(tmp_path / "r2.jsonl", [event("r2", "L1", "recovery", "2026-09-02", 1_000_000)])

    assert cli.invoke(app, ["loans", "import", str(july)]).exit_code == 0
    assert cli.invoke(app, ["settle", "--period", "2026-07", "--clear"]).exit_code == 0
    assert cli.invoke(app, ["loans", "import", str(aug)]).exit_code == 0
    settled = cli.invoke(app, ["settle", "--period", "2026-08", "--clear"])
    stmt = cli.invoke(app, ["statements", "isv01", "--period", "2026-08"])
    csv_out = cli.invoke(app, ["statements", "isv01", "--period", "2026-08", "--format", "csv"])
    refused = cli.invoke(app, ["loans", "import", str(too_much)])
    n_refused = _events()
    kept = cli.invoke(app, ["loans", "import", str(ok)])

    assert settled.exit_code == 0, settled.output
    doc = json.loads(stmt.stdout)
    # August: 9 days × 5,000,000 fen above the platform line at 18 % → 22,191 uplift interest,
    # share 4,438; July's 15,287 was paid. Both come back: 19,725, 4,438 of it netted.
    assert [(x["share_period"], x["clawback"]) for x in doc["clawbacks"]] == [
        ("2026-07", 15_287),
        ("2026-08", 4_438),
    ]
    assert (doc["net"]["net"], doc["net"]["payout"], doc["net"]["carried_forward"]) == (
        -15_287,
        0,
        15_287,
    )
    assert doc["ties_to_book"]
    assert csv_out.stdout.splitlines()[-1] == "isv01,2026-08,carried-forward,,,,,-15287"
    assert refused.exit_code == 1
    assert "error[RECOVERY_EXCEEDS_WRITE_OFF]: line 2" in refused.output
    assert n_refused == 2
    assert kept.exit_code == 0 and _events() == 3


def test_bad_file_exits_1_and_keeps_nothing(cli: CliRunner, tmp_path: Path) -> None:
    """A bad row names its line, exits 1 without a traceback, and stores nothing."""
    f = tmp_path / "bad.jsonl"
    f.write_text(
        json.dumps(event("d1", "L1", "drawdown", "2026-07-01", 5, merchant="m1"))
        + "\n"
        + '{"key": "d2", "loan_id": "L1"}\n',
        encoding="utf-8",
    )

    result = cli.invoke(app, ["loans", "import", str(f)])

    assert result.exit_code == 1
    assert "error[BAD_ROW]: line 2: missing kind" in result.output
    assert "Traceback" not in result.output
    assert _events() == 0


def test_conflicting_repeat_exits_1(cli: CliRunner, tmp_path: Path) -> None:
    """The same key with another amount in a second file is refused with its code."""
    ok = _write(
        tmp_path / "a.jsonl", [event("d1", "L1", "drawdown", "2026-07-01", 5, merchant="m1")]
    )
    bad = _write(
        tmp_path / "b.jsonl", [event("d1", "L1", "drawdown", "2026-07-01", 6, merchant="m1")]
    )

    cli.invoke(app, ["loans", "import", str(ok)])
    result = cli.invoke(app, ["loans", "import", str(bad)])

    assert result.exit_code == 1 and "CONFLICTING_REPEAT" in result.output
    assert _events() == 1


def test_explain_and_errors(cli: CliRunner) -> None:
    """explain prints the decision; unknown merchants and bad periods are clear errors."""
    ok = cli.invoke(app, ["credit", "explain", "m1"])
    unknown = cli.invoke(app, ["credit", "explain", "ghost"])
    bad_period = cli.invoke(app, ["settle", "--period", "2026-13"])

    assert ok.exit_code == 0 and "Uplift +75,000 yuan" in ok.output
    assert unknown.exit_code == 1 and "UNKNOWN_MERCHANT" in unknown.output
    assert bad_period.exit_code == 1 and "BAD_PERIOD" in bad_period.output


def test_monitor_run_collects_overdue(cli: CliRunner, tmp_path: Path) -> None:
    """An overdue loan with money in the payment account is collected early."""
    f = _write(
        tmp_path / "ev.jsonl", [event("d1", "L1", "drawdown", "2026-07-01", 5_000, merchant="m1")]
    )
    obs = tmp_path / "obs.jsonl"
    obs.write_text(json.dumps({"merchant_id": "m1", "payment_balance": 2_000}) + "\n")
    cli.invoke(app, ["loans", "import", str(f)])

    result = cli.invoke(
        app, ["monitor", "run", "--as-of", "2026-12-31", "--observations", str(obs)]
    )
    again = cli.invoke(app, ["monitor", "run", "--as-of", "2026-12-31", "--observations", str(obs)])

    assert result.exit_code == 0, result.output
    assert "overdue -> early_collection" in result.output
    assert "nothing to do" in again.output
    assert _events() == 2


def test_policy_file_takes_effect(cli: CliRunner, tmp_path: Path) -> None:
    """A policy file in the data directory becomes a new version; a broken one is refused."""
    from gateway import credit

    path = _common.settings().resolved_credit_policy_file
    path.write_text(credit.DEFAULT_POLICY_TOML.replace("share_bp = 2000", "share_bp = 2500"))
    shown = cli.invoke(app, ["credit", "policy"])
    path.write_text("currency = 1\n")
    broken = cli.invoke(app, ["credit", "policy"])

    assert shown.exit_code == 0 and "credit policy v2" in shown.output
    assert broken.exit_code == 1 and "BAD_POLICY" in broken.output
