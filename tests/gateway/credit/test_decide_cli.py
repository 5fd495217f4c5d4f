"""`fedgate credit decide`: f and the combiner over a world, only consented g scores used."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from consent import grant, parse_terms
from federation import get_spec
from federation.synth import SynthParams, write_world
from gateway import credit, jobs
from gateway.cli import _common, app
from gateway.keys import load_or_create_key
from tests.utils.cli import cli_settings


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """A CLI runner on the test database."""
    with cli_settings(monkeypatch, db_url, tmp_path / "data"):
        yield CliRunner()


def test_decide_uses_only_consented_scores(cli: CliRunner, tmp_path: Path) -> None:
    """Half the ERP merchants consent; the other half's g scores are dropped by the gate."""
    world = tmp_path / "world"
    doc = write_world(SynthParams(merchants=400, isvs=2, seed=0, default_rate=0.2), world)
    erp = pd.concat(
        pd.read_parquet(world / f"{isv}.parquet").assign(isv=isv) for isv in doc["isvs"]
    )
    erp = erp.drop_duplicates("merchant_id")
    platform = pd.read_parquet(world / "platform.parquet").set_index("merchant_id")
    rng = np.random.default_rng(0)
    y = platform.loc[erp["merchant_id"], "default_12m"].to_numpy()
    scores = pd.DataFrame(
        {
            "merchant_id": erp["merchant_id"],
            "isv_id": erp["isv"],
            "g": np.clip(0.1 + 0.5 * y + rng.normal(0, 0.15, len(y)), 0.01, 0.99),
        }
    )
    scores.to_csv(tmp_path / "scores.csv", index=False)
    cfg = _common.settings()
    key = load_or_create_key(cfg.resolved_key_dir, jobs.CONSENT_MANAGER_KEY)
    now = datetime.now(UTC)
    consented = set(erp["merchant_id"].iloc[::2])
    with _common.session() as s:
        for m, isv in zip(erp["merchant_id"], erp["isv"], strict=True):
            if m not in consented:
                continue
            grant(
                s,
                parse_terms(
                    {
                        "consent_id": f"c-{m}",
                        "merchant_id": m,
                        "data_provider": isv,
                        "data_consumer": jobs.DEFAULT_CONSUMER,
                        "purposes": ["credit_scoring"],
                        "categories": sorted(get_spec("pd-erp").categories),
                        "data_from": doc["data_from"],
                        "data_to": doc["data_to"],
                        "frequency": {"uses": 10, "per": "day"},
                        "data_life_days": 90,
                        "consent_start": (now - timedelta(days=1)).isoformat(),
                        "consent_expiry": (now + timedelta(days=30)).isoformat(),
                    }
                ),
                key=key,
                at=now,
            )

    result = cli.invoke(
        app,
        [
            "credit",
            "decide",
            "--world",
            str(world),
            "--scores",
            str(tmp_path / "scores.csv"),
            "--g-version",
            "g-t",
        ],
    )
    with _common.session() as s:
        decisions = credit.latest_decisions(s)

    assert result.exit_code == 0, result.output
    dropped = len(scores) - len(consented)
    assert f"{dropped} g scores without a covering consent were not used" in result.output
    assert len(decisions) == 400
    for m, d in decisions.items():
        if m in consented:
            assert d.pd_with is not None and d.inputs["consents"] == {d.inputs["isvs"][0]: f"c-{m}"}
            assert d.inputs["models"]["g"] == "g-t"
        else:
            assert d.pd_with is None and d.line_with == d.line_f and d.uplift == 0
    assert any(d.uplift > 0 for d in decisions.values())
