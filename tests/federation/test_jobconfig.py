"""The job configuration and the one validator it shares with ``data check`` and the nodes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from federation import DataError
from federation._errors import MappingError
from federation.data import ColumnMapping, load_mapping, make_connector
from federation.data._connectors import RowSelection
from federation.jobconfig import HoldoutRule, check_job_config, load_job_config, read_platform
from federation.schema import ERP_FEATURES

_ABSENT = [f for f in ERP_FEATURES if f not in ("monthly_revenue", "debt", "months_of_history")]


def _mapping_text() -> str:
    absent = ", ".join(f'"{f}"' for f in _ABSENT)
    return (
        f"absent = [{absent}]\n\n[columns]\nmerchant_id = \"Id\"\nas_of = \"Day\"\n"
        'monthly_revenue = "Income"\ndebt = "Debt"\nmonths_of_history = "Years"\n\n'
        '[units]\nmonthly_revenue = { from = "yuan", scale = 100 }\n'
        'months_of_history = { from = "years", scale = 12, offset = 3 }\n'
    )


def _world(tmp_path: Path, *, erp: pd.DataFrame | None = None, label: list | None = None,
           extra: str = "") -> Path:
    ids = [f"m{i:03d}" for i in range(40)]
    erp = erp if erp is not None else pd.DataFrame({
        "Id": ids, "Day": "2026-01-31", "Income": np.arange(40) + 0.5,
        "Debt": np.arange(40) * 10.0, "Years": np.arange(40) % 7,
    })
    erp.to_csv(tmp_path / "erp_a.csv", index=False)
    lab = label if label is not None else [i % 2 for i in range(40)]
    pd.DataFrame({"merchant_id": ids, "Age": np.arange(40), "Home": "rent", "y": lab}).to_csv(
        tmp_path / "platform.csv", index=False)
    (tmp_path / "map.toml").write_text(_mapping_text(), "utf-8")
    cfg = tmp_path / "job.toml"
    cfg.write_text(
        '[data]\nfrom = "2026-01-01"\nto = "2026-12-31"\n\n[platform]\ntable = "platform.csv"\n'
        'label = "y"\n\n[holdout]\nbuckets = 4\n\n[isvs.a]\nsource = "erp_a.csv"\n'
        f'mapping = "map.toml"\n{extra}', "utf-8")
    return cfg


def test_a_good_config_loads_and_every_table_checks(tmp_path: Path) -> None:
    """Paths resolve beside the file, absent fields are reported, rows are counted."""
    cfg = load_job_config(_world(tmp_path))
    reports = check_job_config(cfg)
    assert cfg.holdout.buckets == 4 and cfg.platform.label == "y"
    assert [r.name for r in reports] == ["platform", "a"]
    assert reports[1].rows == 40
    assert set(reports[1].absent) == set(_ABSENT)
    assert reports[1].present == ("monthly_revenue", "debt", "months_of_history")


def test_scale_offset_and_absent_fields_reach_the_values(tmp_path: Path) -> None:
    """Schema value = source × scale + offset; absent fields come back all missing."""
    cfg = load_job_config(_world(tmp_path))
    isv = cfg.isvs[0]
    full = isv.connector().read(data_from=cfg.data_from, data_to=cfg.data_to)
    assert full["monthly_revenue"].tolist()[:2] == [50, 150]  # yuan → fen, rounded
    assert full["months_of_history"].tolist()[:3] == [3, 15, 27]  # years × 12 + 3
    assert full["gross_margin"].isna().all()
    sel = RowSelection(["m001"], [cfg.data_from], [cfg.data_to])
    node = isv.connector().read_selected(sel, ["monthly_revenue", "gross_margin"])
    assert node["monthly_revenue"].tolist() == [150] and node["gross_margin"].isna().all()


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ("color = 1\n", "BAD_CONFIG"),  # an unknown key inside [isvs.a]
        ('\n[isvs.b]\nsource = "missing.csv"\n', "BAD_CONFIG"),
        ('\n[isvs.b]\nsource = "erp_a.csv"\nmapping = "nope.toml"\n', "BAD_MAPPING"),
    ],
)
def test_a_bad_config_names_the_problem(tmp_path: Path, extra: str, code: str) -> None:
    """Unknown keys, missing files and unreadable mappings fail before any table is read."""
    with pytest.raises(DataError) as err:
        load_job_config(_world(tmp_path, extra=extra))
    assert err.value.code == code


def test_an_empty_column_is_flagged_not_reported_ok(tmp_path: Path) -> None:
    """A mapped column with no value in any row is EMPTY_COLUMN (declare it absent instead)."""
    ids = [f"m{i:03d}" for i in range(40)]
    erp = pd.DataFrame({"Id": ids, "Day": "2026-01-31", "Income": 1.0, "Debt": np.nan,
                        "Years": 1})
    cfg = load_job_config(_world(tmp_path, erp=erp))
    with pytest.raises(DataError) as err:
        check_job_config(cfg)
    assert err.value.code == "EMPTY_COLUMN" and "ISV a" in str(err.value)


def test_a_negative_debt_fails_the_check_and_the_node_alike(tmp_path: Path) -> None:
    """The check and a node's typed read refuse the same negative value (one validator)."""
    ids = [f"m{i:03d}" for i in range(40)]
    erp = pd.DataFrame({"Id": ids, "Day": "2026-01-31", "Income": 1.0,
                        "Debt": [-5.0] + [1.0] * 39, "Years": 1})
    cfg = load_job_config(_world(tmp_path, erp=erp))
    with pytest.raises(DataError) as check_err:
        check_job_config(cfg)
    sel = RowSelection(["m000"], [cfg.data_from], [cfg.data_to])
    with pytest.raises(DataError) as node_err:
        cfg.isvs[0].connector().read_selected(sel, ["debt"])
    assert check_err.value.code == node_err.value.code == "NEGATIVE_VALUE"


def test_platform_labels_must_be_binary(tmp_path: Path) -> None:
    """A label other than 0, 1 or empty is WRONG_TYPE; empty cells are unlabelled merchants."""
    with pytest.raises(DataError) as err:
        read_platform(load_job_config(_world(tmp_path, label=[2] + [0, 1] * 19 + [0])))
    assert err.value.code == "WRONG_TYPE"
    frame = read_platform(load_job_config(_world(tmp_path, label=[None] + [0, 1] * 19 + [0])))
    assert frame["label"].isna().sum() == 1 and list(frame.columns[:2]) == ["merchant_id", "label"]


def test_mapping_refuses_a_field_both_mapped_and_absent() -> None:
    """A field cannot be mapped to a column and declared absent at once."""
    with pytest.raises(MappingError):
        ColumnMapping(columns={"debt": "Debt"}, absent=frozenset({"debt"}))
    with pytest.raises(MappingError):
        ColumnMapping.from_dict({"units": {"debt": {"offset": "x"}}})


def test_mapping_file_round_trip(tmp_path: Path) -> None:
    """A mapping file's offsets and absent list survive loading."""
    path = tmp_path / "m.toml"
    path.write_text(_mapping_text(), "utf-8")
    m = load_mapping(path)
    assert m.offset("months_of_history") == 3.0 and m.scale("months_of_history") == 12.0
    assert "gross_margin" in m.absent and m.present(["gross_margin", "debt"]) == ["debt"]


def test_holdout_rule_matches_the_nodes_rule() -> None:
    """The platform's hold-out mask and the node's is_holdout agree for any bucket count."""
    from federation import is_holdout

    ids = [f"m{i}" for i in range(500)]
    for buckets in (2, 5, 7):
        mask = HoldoutRule(buckets=buckets).mask(ids)
        assert mask.tolist() == [is_holdout(m, buckets) for m in ids]
        assert mask.tolist() == [hashlib.sha256(m.encode()).digest()[0] % buckets == 0
                                 for m in ids]
    with pytest.raises(DataError):
        HoldoutRule(buckets=1)


def test_connector_lists_merchant_ids_only(tmp_path: Path) -> None:
    """merchant_ids reads the id column through the mapping."""
    cfg = load_job_config(_world(tmp_path))
    conn = make_connector("csv", path=cfg.isvs[0].path, mapping=cfg.isvs[0].mapping)
    assert conn.merchant_ids()[:2] == ["m000", "m001"] and len(conn.merchant_ids()) == 40


@pytest.mark.parametrize("buckets", [0, 1, 21, -5])
def test_a_node_refuses_a_hold_out_rule_out_of_range(buckets: int) -> None:
    """The platform's requested bucket count is checked at the node (no division by zero)."""
    from types import SimpleNamespace

    from flwr.app import ConfigRecord, RecordDict

    from federation.apps._handling import holdout_split
    from federation.apps._keys import JOB_KEY, KEY_HOLDOUT_BUCKETS

    def request(value: int) -> Any:  # what holdout_split reads of a Flower message: its content
        return SimpleNamespace(content=RecordDict(
            {JOB_KEY: ConfigRecord({KEY_HOLDOUT_BUCKETS: value})}))

    with pytest.raises(DataError) as err:
        holdout_split(request(buckets), held_out=False)
    assert err.value.code == "BAD_REQUEST"
    entry = SimpleNamespace(label=1, merchant_id="m0")
    held = hashlib.sha256(b"m0").digest()[0] % 4 == 0
    assert holdout_split(request(4), held_out=True)(entry) == held
