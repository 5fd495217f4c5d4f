"""``fedgate fl …`` checks that need no runtime start: budgets and argument errors (both DBs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from consent import grant, parse_terms
from federation.dp import PrivacyLedger
from federation.specs import DPBudget
from federation.synth import SynthParams, write_world
from gateway.cli import _common, app
from gateway.keys import load_or_create_key
from tests.utils.cli import cli_settings

runner = CliRunner()


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the CLI at the test database and a temp data dir; reset its caches around."""
    with cli_settings(monkeypatch, db_url, tmp_path / "data"):
        yield tmp_path


def _world_with_consents(root: Path) -> dict[str, list[str]]:
    """A 120-merchant synthetic world whose ISV merchants all consent to model training."""
    doc = write_world(SynthParams(merchants=120, isvs=2, seed=1), root)
    now = datetime.now(UTC)
    cm_key = load_or_create_key(_common.settings().resolved_key_dir, "consent-manager")
    merchants: dict[str, list[str]] = {}
    with _common.session() as s:
        for isv, info in doc["isvs"].items():
            ids = list(pd.read_parquet(root / info["file"], columns=["merchant_id"])["merchant_id"])
            merchants[isv] = ids
            for m in ids:
                terms = {
                    "consent_id": f"c-{m}", "merchant_id": m, "data_provider": isv,
                    "data_consumer": "platform", "purposes": ["model_training"],
                    "categories": ["cash_and_debt", "cost_of_goods", "inventory", "labour_cost",
                                   "logistics_cost", "margins", "orders_and_shipping",
                                   "receivables", "turnover"],
                    "data_from": doc["data_from"], "data_to": doc["data_to"],
                    "frequency": {"uses": 100, "per": "day"}, "data_life_days": 30,
                    "consent_start": (now - timedelta(days=1)).isoformat(),
                    "consent_expiry": (now + timedelta(days=30)).isoformat(),
                }  # fmt: skip
                grant(s, parse_terms(terms), key=cm_key)
    return merchants


def test_budget_says_a_job_fits_then_refuses_once_merchants_are_spent(cli_env: Path) -> None:
    """`fl budget` exits 0 while a job fits and 2 with BUDGET_EXCEEDED once it would not."""
    world = cli_env / "world"
    merchants = _world_with_consents(world)
    args = ["fl", "budget", "--world", str(world), "--spec", "pd-erp"]

    fits = runner.invoke(app, args)
    isv = sorted(merchants)[0]
    PrivacyLedger(cli_env / "data" / "nodes" / isv / "privacy.json").reserve(
        job_id="old", budget=DPBudget(epsilon=9.0), merchant_ids=merchants[isv]
    )
    refused = runner.invoke(app, args)

    assert fits.exit_code == 0, fits.stderr
    assert "fits" in fits.stdout
    assert refused.exit_code == 2
    assert "BUDGET_EXCEEDED" in refused.stderr and isv in refused.stderr


def test_run_with_an_unknown_spec_fails_before_anything_starts(cli_env: Path) -> None:
    """An unknown spec is refused with its code and no job directory is created."""
    result = runner.invoke(app, ["fl", "run", "--spec", "nope", "--world", str(cli_env)])

    assert result.exit_code == 1
    assert "UNKNOWN_SPEC" in result.stderr
    assert not (cli_env / "data" / "jobs").exists()


def test_score_needs_a_trained_model_dir(cli_env: Path) -> None:
    """`fl score` on a directory without lineage is refused with BAD_MODEL."""
    (cli_env / "world").mkdir()
    (cli_env / "world" / "world.json").write_text(json.dumps({"isvs": {}}))

    result = runner.invoke(
        app, ["fl", "score", "--model-dir", str(cli_env), "--world", str(cli_env / "world")]
    )

    assert result.exit_code == 1
    assert "BAD_MODEL" in result.stderr
