"""A node reads its ERP table through a connector, with the manifest filter pushed down.

Rows outside the manifest (other merchants, or a merchant's snapshots outside
its consented range) are made poisonous here — text in a number column, a
negative cost, an unparseable date — so that a node which read them, instead of
filtering them at the source, would fail or return them.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as real_pads
import pytest
import sqlalchemy as sa

import federation.data._connectors as connectors
from consent import CohortManifest
from federation import is_holdout
from federation.apps import build_client_app, load_cohort
from federation.apps._keys import KEY_RECEIPT, RECEIPT_KEY
from federation.apps._node import NodeConfig, _public_key
from federation.receipts import hash_key, merchant_ids_hash, verify_receipt
from federation.schema import AS_OF, MERCHANT_ID

from ._flworld import World, approve_at_node, make_world, node_context, training_manifest
from .test_mods import CATS, _train_message

FEATURES = ["gross_margin", "operating_margin", "cash", "debt"]  # erp_fields_for(CATS)
IN_RANGE, TOO_LATE = date(2025, 6, 30), date(2026, 3, 31)  # consent covers up to 2025-12-31

_MAPPING = """
ignore = ["Notes"]

[columns]
merchant_id = "MerchID"
as_of = "SnapshotDate"
cash = "CashYuan"
gross_margin = "GM"

[units]
cash = { from = "yuan", scale = 100 }
gross_margin = { from = "percent", scale = 0.01 }
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A small world whose isv0 ERP rows the tests re-write in other formats."""
    return make_world(tmp_path_factory.mktemp("world"), n_isvs=1, per_isv=40)


def _manifest(world: World, ids: list[str], *, job_id: str = "job-read") -> CohortManifest:
    entries = [e for e in world.cohort.by_isv["isv0"] if e.merchant_id in set(ids)]
    return training_manifest("isv0", entries, job_id=job_id, categories=CATS)


def _with_poison(erp: pd.DataFrame, manifest_ids: list[str]) -> pd.DataFrame:
    """The ERP rows plus a later, out-of-range snapshot of each listed merchant and 3 strangers."""
    late = erp[erp[MERCHANT_ID].isin(manifest_ids)].assign(**{AS_OF: TOO_LATE, "cash": -1})
    strangers = erp.head(3).assign(
        **{MERCHANT_ID: ["stranger-1", "stranger-2", "stranger-3"], "cash": -5}
    )
    return pd.concat([erp, late, strangers], ignore_index=True)


def test_parquet_read_returns_only_selected_rows_from_the_source(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pyarrow filter carries the merchant ids and the date bound: nothing else comes back."""
    ids = sorted(world.erp["isv0"][MERCHANT_ID])[:15]
    path = tmp_path / "erp.parquet"
    _with_poison(world.erp["isv0"], ids).to_parquet(path, index=False)
    node = replace(world.node("isv0"), erp_path=path)
    returned: list[int] = []

    class _Dataset:
        def __init__(self, inner: Any) -> None:
            self.inner, self.schema = inner, inner.schema

        def to_table(self, **kw: Any) -> Any:
            table = self.inner.to_table(**kw)
            returned.append(table.num_rows)
            return table

    class _Pads:
        def __getattr__(self, name: str) -> Any:
            return getattr(real_pads, name)

        def dataset(self, *a: Any, **kw: Any) -> _Dataset:
            return _Dataset(real_pads.dataset(*a, **kw))

    monkeypatch.setattr(connectors, "pads", _Pads())

    cohort = load_cohort(node, _manifest(world, ids), now=datetime.now(UTC))

    assert returned == [len(ids)]  # no late snapshot, no stranger left the file
    assert cohort.merchant_ids == ids and cohort.rows_read == len(ids)
    assert (cohort.frame["cash"] >= 0).all()
    assert list(cohort.frame.columns) == [MERCHANT_ID, AS_OF, *FEATURES]


def test_csv_read_drops_unselected_rows_chunk_by_chunk(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CSV with garbage in rows outside the manifest still yields the manifest's merchants."""
    ids = sorted(world.erp["isv0"][MERCHANT_ID])[5:25]
    frame = _with_poison(world.erp["isv0"], ids).astype({"cash": object, AS_OF: object})
    strangers = frame[MERCHANT_ID].str.startswith("stranger")
    frame.loc[strangers, "cash"] = "n/a"  # text in a number column
    frame.loc[strangers, AS_OF] = "last tuesday"  # not a date
    path = tmp_path / "erp.csv"
    frame.to_csv(path, index=False)
    node = replace(world.node("isv0"), erp_path=path)
    monkeypatch.setattr(connectors, "_CSV_CHUNK", 7)  # several chunks

    cohort = load_cohort(node, _manifest(world, ids), now=datetime.now(UTC))

    expected = world.erp["isv0"].set_index(MERCHANT_ID).loc[ids, "cash"]
    assert cohort.merchant_ids == ids
    assert cohort.frame.set_index(MERCHANT_ID)["cash"].tolist() == expected.tolist()


def test_latest_snapshot_inside_each_merchants_own_range_is_kept(
    world: World, tmp_path: Path
) -> None:
    """Per merchant, the newest snapshot inside that merchant's consented range is the one used."""
    erp = world.erp["isv0"]
    ids = sorted(erp[MERCHANT_ID])[:6]
    early = erp[erp[MERCHANT_ID].isin(ids)].assign(**{AS_OF: date(2024, 6, 30), "cash": 7})
    path = tmp_path / "erp.parquet"
    pd.concat([erp, early], ignore_index=True).to_parquet(path, index=False)
    node = replace(world.node("isv0"), erp_path=path)
    entries = [
        replace(e, data_to=date(2025, 1, 1)) if e.merchant_id in ids[:3] else e
        for e in world.cohort.by_isv["isv0"]
        if e.merchant_id in ids
    ]
    manifest = training_manifest("isv0", entries, job_id="job-latest", categories=CATS)

    cohort = load_cohort(node, manifest, now=datetime.now(UTC))

    cash = cohort.frame.set_index(MERCHANT_ID)["cash"]
    assert cohort.rows_read == 3 + 2 * 3  # ranges end 2025-01-01 for the first three
    assert cash[ids[:3]].tolist() == [7, 7, 7]  # their 2025-06-30 rows are outside the range
    assert (cash[ids[3:]] != 7).all()  # the others' latest snapshot is 2025-06-30


def _sql_table(world: World, url: str, manifest_ids: list[str], table: str) -> None:
    """isv0's ERP rows in the ISV's own names and units, poisonous rows outside the manifest."""
    frame = _with_poison(world.erp["isv0"], manifest_ids)
    isv = pd.DataFrame(
        {
            "MerchID": frame[MERCHANT_ID],
            "SnapshotDate": pd.to_datetime(frame[AS_OF]).dt.date,
            "GM": frame["gross_margin"] * 100,
            "operating_margin": frame["operating_margin"],
            "CashYuan": frame["cash"] / 100,
            "debt": frame["debt"],
            "Notes": "never read",
        }
    )
    for f in ("monthly_revenue", "cost_of_goods", "inventory_days", "receivable_days",
              "payable_days", "labour_cost", "shipping_cost_per_order", "orders_shipped",
              "refunds", "months_of_history"):
        isv[f] = 1
    engine = sa.create_engine(url)
    try:
        isv.to_sql(table, engine, if_exists="replace", index=False)
    finally:
        engine.dispose()


def _sql_node(world: World, url: str, tmp_path: Path, table: str) -> NodeConfig:
    mapping = tmp_path / "erp_mapping.toml"
    mapping.write_text(_MAPPING)
    node = replace(
        world.node("isv0"),
        erp_path=None,
        connector="sql",
        erp_url=url,
        erp_table=table,
        mapping=mapping,
        state_dir=tmp_path / "state",
    )
    approve_at_node(node, world.cohort.by_isv["isv0"])  # the node's own approvals register
    return node


def test_node_on_a_mapped_sql_table_reads_only_manifest_rows(
    world: World, tmp_path: Path, db_url: str
) -> None:
    """SQLite and PostgreSQL: WHERE merchant IN (...) AND as_of bounds; names and units mapped."""
    ids = sorted(world.erp["isv0"][MERCHANT_ID])[10:30]
    _sql_table(world, db_url, ids, "isv_erp")
    node = _sql_node(world, db_url, tmp_path, "isv_erp")
    statements: list[str] = []

    def log(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", log)
    try:
        cohort = load_cohort(node, _manifest(world, ids), now=datetime.now(UTC))
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", log)

    selects = [q for q in statements if 'FROM isv_erp' in q or "FROM \"isv_erp\"" in q]
    assert selects and all(" IN (" in q and "SnapshotDate" in q.split("WHERE")[1] for q in selects)
    expected = world.erp["isv0"].set_index(MERCHANT_ID).loc[ids]
    got = cohort.frame.set_index(MERCHANT_ID)
    assert cohort.merchant_ids == ids and cohort.rows_read == len(ids)
    assert got["cash"].tolist() == expected["cash"].tolist()  # yuan back to whole fen
    np.testing.assert_allclose(got["gross_margin"], expected["gross_margin"])  # percent → ratio


def test_client_app_trains_on_a_mapped_sql_table(world: World, tmp_path: Path, db_url: str) -> None:
    """The whole ClientApp runs on an SQL node; its receipt covers only the training merchants."""
    ids = sorted(world.erp["isv0"][MERCHANT_ID])
    _sql_table(world, db_url, ids, "isv_erp_train")
    node = _sql_node(world, db_url, tmp_path, "isv_erp_train")
    msg = _train_message(world, "isv0", "job-sql-train")

    reply = build_client_app()(msg, node_context(node))

    assert not reply.has_error(), reply.error.reason if reply.has_error() else None
    receipt = verify_receipt(
        reply.content.config_records[RECEIPT_KEY][KEY_RECEIPT],
        _public_key(node.node_key.with_suffix(".pub.pem")),
    )
    used = [m for m in ids if not is_holdout(m)]
    assert receipt.merchants_read_hash == receipt.merchants_hash
    assert receipt.merchants_hash == merchant_ids_hash(used, key=hash_key(node.state_dir))


def test_node_config_round_trips_the_connector_keys(world: World, tmp_path: Path) -> None:
    """A SuperNode's node config names the connector, mapping, URL and table; repr hides the URL."""
    node = _sql_node(world, "postgresql+psycopg://isv:s3cret@db/erp", tmp_path, "erp")

    again = NodeConfig.from_mapping(node.to_mapping())

    assert again == node and again.erp_path is None
    assert "s3cret" not in repr(again)
    with pytest.raises(ValueError, match="erp-table"):
        NodeConfig.from_mapping({k: v for k, v in node.to_mapping().items() if k != "erp-table"})
