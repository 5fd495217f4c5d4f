"""``fedgate book …`` end to end through Typer, on both databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from tests.utils.cli import cli_settings


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """A CLI runner whose settings point at the test database."""
    with cli_settings(monkeypatch, db_url, tmp_path / "data"):
        yield CliRunner()


def test_chart_transfer_balance(cli: CliRunner) -> None:
    """Open the chart, post a fee twice (one posting), read the ISV's balance."""
    fee = [
        "book", "transfer", "--id", "fee:job1:r1:acme",
        "--debit", "platform:data-usage-fee-expense", "--credit", "isv:acme:payable",
        "--amount", "1200", "--currency", "CNY", "--meta", '{"job": "job1", "round": 1}',
    ]  # fmt: skip

    chart = cli.invoke(app, ["book", "chart", "--currency", "CNY", "--isv", "acme"])
    first = cli.invoke(app, fee)
    again = cli.invoke(app, fee)
    bal = cli.invoke(app, ["book", "balance", "isv:acme:payable"])
    listing = cli.invoke(app, ["book", "accounts"])

    assert chart.exit_code == 0, chart.output
    assert first.exit_code == 0, first.output
    assert json.loads(first.output) == json.loads(again.output)
    assert json.loads(first.output)["metadata"] == {"job": "job1", "round": 1}
    assert bal.exit_code == 0 and bal.output.split("\t")[:2] == ["isv:acme:payable", "1200"]
    assert "CNY: Σdebits 1200 = Σcredits 1200 (balanced)" in listing.output


def test_refusals_exit_non_zero_with_code(cli: CliRunner) -> None:
    """Unknown accounts, conflicts and duplicates print error[CODE] and exit 1."""
    cli.invoke(app, ["book", "open", "cash", "--kind", "asset", "--currency", "CNY"])
    cli.invoke(app, ["book", "open", "equity", "--kind", "equity", "--currency", "CNY"])
    base = ["book", "transfer", "--debit", "cash", "--currency", "CNY"]

    dup = cli.invoke(app, ["book", "open", "cash", "--kind", "asset", "--currency", "CNY"])
    unknown = cli.invoke(app, [*base, "--id", "t1", "--credit", "nope", "--amount", "5"])
    ok = cli.invoke(app, [*base, "--id", "t2", "--credit", "equity", "--amount", "5"])
    conflict = cli.invoke(app, [*base, "--id", "t2", "--credit", "equity", "--amount", "6"])
    missing = cli.invoke(app, ["book", "balance", "nope"])

    assert ok.exit_code == 0, ok.output
    for result, code in [
        (dup, "DUPLICATE_ACCOUNT"),
        (unknown, "UNKNOWN_ACCOUNT"),
        (conflict, "IDEMPOTENCY_CONFLICT"),
        (missing, "UNKNOWN_ACCOUNT"),
    ]:
        assert result.exit_code == 1
        assert f"error[{code}]" in result.output
