"""Tests for the synthetic merchant world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from federation.data import ParquetConnector
from federation.metrics import auc
from federation.schema import AS_OF, ERP_FEATURES, FAKE_LABEL, LABEL, MERCHANT_ID, SECTOR
from federation.synth import (
    ISV_COLUMN,
    NO_ISV,
    OFF_PLATFORM_TRUTH_FILE,
    SynthParams,
    SynthWorld,
    generate_world,
    write_world,
)
from gateway.cli import app


@pytest.fixture(scope="module")
def world() -> SynthWorld:
    """A small world shared by the read-only tests."""
    return generate_world(SynthParams(merchants=20_000, isvs=4, seed=7))


def test_rates_within_bounds(world: SynthWorld) -> None:
    """Default and fake-trade rates are 3-8%, and about a fifth of merchants use no ISV."""
    p = world.platform

    assert 0.03 <= p[LABEL].mean() <= 0.08
    assert 0.03 <= p[FAKE_LABEL].mean() <= 0.08
    assert 0.17 <= (p[ISV_COLUMN] == NO_ISV).mean() <= 0.23


def test_erp_tables_partition_merchants_with_an_isv(world: SynthWorld) -> None:
    """Each ISV table holds exactly the merchants assigned to it, in schema columns."""
    p = world.platform

    for isv, erp in world.erp.items():
        assert list(erp.columns) == [MERCHANT_ID, AS_OF, *ERP_FEATURES]
        assert set(erp[MERCHANT_ID]) == set(p.loc[p[ISV_COLUMN] == isv, MERCHANT_ID])


def test_isvs_are_non_iid(world: SynthWorld) -> None:
    """ISV sector mixes differ markedly (total variation distance > 0.2 for some pair)."""
    p = world.platform
    mix = pd.crosstab(p[ISV_COLUMN], p[SECTOR], normalize="index").drop(index=NO_ISV)

    tv = max(0.5 * np.abs(mix.iloc[i] - mix.iloc[j]).sum()
             for i in range(len(mix)) for j in range(i + 1, len(mix)))

    assert tv > 0.2


def test_fake_trade_visible_in_erp_not_on_platform(world: SynthWorld) -> None:
    """Shipments per platform order separate fakes far better than any platform feature alone."""
    p = world.platform
    erp = pd.concat(world.erp.values())
    m = p.merge(erp, on=MERCHANT_ID)
    y = m[FAKE_LABEL]

    erp_signal = auc(y, -m["orders_shipped"] / m["orders"])
    platform_best = max(max(auc(y, m[c]), auc(y, -m[c])) for c in
                        ("sales", "orders", "visitors", "conversion", "return_rate", "rating"))

    assert erp_signal > 0.9 and platform_best < 0.75


def test_same_seed_same_world() -> None:
    """Generation depends only on the seed."""
    a = generate_world(SynthParams(merchants=500, isvs=2, seed=3))
    b = generate_world(SynthParams(merchants=500, isvs=2, seed=3))

    pd.testing.assert_frame_equal(a.platform, b.platform)


def test_write_world_files_read_by_connector(tmp_path: Path) -> None:
    """write_world streams valid tables: an ISV file passes the identity-mapped connector."""
    params = SynthParams(merchants=3000, isvs=3, seed=1)

    manifest = write_world(params, tmp_path)
    erp = ParquetConnector(tmp_path / "isv01.parquet").read(
        data_from=params.data_from, data_to=params.as_of)

    assert json.loads((tmp_path / "world.json").read_text()) == manifest
    assert len(erp) == manifest["isvs"]["isv01"]["merchants"]
    assert len(pd.read_parquet(tmp_path / "platform.parquet")) == 3000


def test_cli_synth_writes_csv_world(tmp_path: Path) -> None:
    """`fedgate data synth` writes the platform table, the ISV tables and world.json."""
    result = CliRunner().invoke(app, ["data", "synth", "--merchants", "800", "--isvs", "2",
                                      "--seed", "2", "--out", str(tmp_path), "--format", "csv"])

    assert result.exit_code == 0, result.output
    assert sorted(f.name for f in tmp_path.iterdir()) == [
        "isv01.csv", "isv02.csv", "platform.csv", "world.json"]


def test_off_platform_merchants_leave_the_platform_table_only() -> None:
    """A share of ISV merchants has no platform row, keeps its ERP rows, and its truth apart."""
    params = SynthParams(merchants=4000, isvs=3, seed=4, off_platform_share=0.25)
    full = generate_world(SynthParams(merchants=4000, isvs=3, seed=4))

    w = generate_world(params)
    truth, on = w.off_platform, set(w.platform[MERCHANT_ID])
    erp_ids = set(pd.concat(w.erp.values())[MERCHANT_ID])

    assert on.isdisjoint(truth[MERCHANT_ID]) and len(on) + len(truth) == 4000
    assert set(truth[MERCHANT_ID]) <= erp_ids and (truth[ISV_COLUMN] != NO_ISV).all()
    with_isv = int((full.platform[ISV_COLUMN] != NO_ISV).sum())
    assert 0.21 <= len(truth) / with_isv <= 0.29
    # Everything else is the world it was: same rows, same ERP tables, same labels.
    pd.testing.assert_frame_equal(
        full.platform[full.platform[MERCHANT_ID].isin(on)].reset_index(drop=True), w.platform)
    for k in full.erp:
        pd.testing.assert_frame_equal(full.erp[k], w.erp[k])
    by_id = full.platform.set_index(MERCHANT_ID)
    assert (by_id.loc[truth[MERCHANT_ID], LABEL].to_numpy() == truth[LABEL].to_numpy()).all()
    assert w.manifest["off_platform"]["merchants"] == len(truth)
    assert "off_platform" not in full.manifest and full.off_platform.empty


def test_cli_synth_off_platform_writes_ground_truth_apart(tmp_path: Path) -> None:
    """`--off-platform-share` writes the ground truth to its own, clearly named file."""
    result = CliRunner().invoke(app, ["data", "synth", "--merchants", "800", "--isvs", "2",
                                      "--seed", "2", "--out", str(tmp_path),
                                      "--off-platform-share", "0.5"])
    doc = json.loads((tmp_path / "world.json").read_text())
    truth = pd.read_parquet(tmp_path / f"{OFF_PLATFORM_TRUTH_FILE}.parquet")
    platform = pd.read_parquet(tmp_path / "platform.parquet")

    assert result.exit_code == 0, result.output
    assert doc["off_platform"]["ground_truth_file"] == f"{OFF_PLATFORM_TRUTH_FILE}.parquet"
    assert doc["params"]["off_platform_share"] == 0.5
    assert len(platform) + len(truth) == 800 == doc["world"]["merchants"]
    assert set(platform[MERCHANT_ID]).isdisjoint(truth[MERCHANT_ID])
    assert list(truth.columns) == [MERCHANT_ID, ISV_COLUMN, SECTOR, LABEL, FAKE_LABEL]


def test_cli_check_reports_out_of_range(tmp_path: Path) -> None:
    """`fedgate data check` exits non-zero with the error code for rows outside the range."""
    write_world(SynthParams(merchants=500, isvs=1, seed=0), tmp_path)

    result = CliRunner().invoke(app, ["data", "check", str(tmp_path / "isv01.parquet"),
                                      "--from", "2026-06-01", "--to", "2026-06-30"])

    assert result.exit_code == 1
    assert "OUT_OF_RANGE" in result.output


def test_bad_params_refused() -> None:
    """Out-of-range parameters raise ValueError naming the parameter."""
    with pytest.raises(ValueError, match="isvs"):
        SynthParams(merchants=10, isvs=0)
    with pytest.raises(ValueError, match="off_platform_share"):
        SynthParams(merchants=10, isvs=1, off_platform_share=1.0)


def test_even_isvs_hold_the_same_number_and_change_nothing_else() -> None:
    """``even_isvs``: 10,001 merchants at 4 ISVs are 2,501/2,500/2,500/2,500; every other
    platform column is the market-mix world's, value for value."""
    even = generate_world(SynthParams(merchants=10_001, isvs=4, seed=5, no_isv_share=0.0,
                                      even_isvs=True))
    mixed = generate_world(SynthParams(merchants=10_001, isvs=4, seed=5, no_isv_share=0.0))

    assert sorted(len(e) for e in even.erp.values()) == [2_500, 2_500, 2_500, 2_501]
    assert sorted(len(e) for e in mixed.erp.values()) != [2_500, 2_500, 2_500, 2_501]
    others = [c for c in even.platform.columns if c != ISV_COLUMN]
    pd.testing.assert_frame_equal(even.platform[others], mixed.platform[others])
