"""Tests for the ERP connectors, column mappings and validation."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from federation._errors import DataError, DataValidationError, MappingError
from federation.data import (
    ColumnMapping,
    CsvConnector,
    ParquetConnector,
    SqlTableConnector,
    load_mapping,
)
from federation.schema import AS_OF, ERP_FEATURES, MERCHANT_ID, erp_fields_for

FROM, TO = date(2026, 1, 1), date(2026, 6, 30)

_MAPPING_TOML = """
ignore = ["Notes"]

[columns]
merchant_id = "MerchID"
as_of = "SnapshotDate"
monthly_revenue = "Revenue"
labour_cost = "Wages"

[units]
monthly_revenue = 100
labour_cost = { from = "yuan", scale = 100 }
gross_margin = { from = "percent", scale = 0.01 }
"""


def _isv_frame(n: int = 6) -> pd.DataFrame:
    """An ISV table in the ISV's own names and units (yuan, percent)."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({f: rng.integers(1, 1000, n) for f in ERP_FEATURES})
    df["gross_margin"] = rng.uniform(10, 40, n)
    df = df.rename(columns={"monthly_revenue": "Revenue", "labour_cost": "Wages"})
    df.insert(0, "MerchID", [f"m{i:03d}" for i in range(n)])
    df.insert(1, "SnapshotDate", pd.to_datetime(["2026-03-31"] * n))
    df["Revenue"] = df["Revenue"] + 0.25  # yuan with fractions -> whole fen
    df["Notes"] = "free text the node never reads"
    return df


@pytest.fixture
def mapping(tmp_path: Path) -> ColumnMapping:
    """The example mapping file, loaded."""
    path = tmp_path / "erp_mapping.toml"
    path.write_text(_MAPPING_TOML)
    return load_mapping(path)


def _check_mapped(out: pd.DataFrame, src: pd.DataFrame) -> None:
    assert list(out.columns[:2]) == [MERCHANT_ID, AS_OF]
    assert out[MERCHANT_ID].tolist() == src["MerchID"].tolist()
    assert out["monthly_revenue"].dtype == "Int64"
    assert out["monthly_revenue"].tolist() == (src["Revenue"] * 100).round().astype(int).tolist()
    assert out["labour_cost"].tolist() == (src["Wages"] * 100).tolist()
    np.testing.assert_allclose(out["gross_margin"], src["gross_margin"] / 100)


def test_csv_connector_maps_names_and_units(tmp_path: Path, mapping: ColumnMapping) -> None:
    """CSV: renamed to schema names, yuan scaled to integer fen, percent to ratio."""
    src = _isv_frame()
    src.to_csv(tmp_path / "erp.csv", index=False)

    out = CsvConnector(tmp_path / "erp.csv", mapping).read(data_from=FROM, data_to=TO)

    _check_mapped(out, src)
    assert "Notes" not in out.columns


def test_parquet_connector_reads_only_consented_fields(tmp_path: Path,
                                                       mapping: ColumnMapping) -> None:
    """Parquet: a job's categories select the columns that are read."""
    src = _isv_frame()
    src.to_parquet(tmp_path / "erp.parquet", index=False)
    fields = erp_fields_for(["margins", "labour_cost"])

    out = ParquetConnector(tmp_path / "erp.parquet", mapping).read(
        data_from=FROM, data_to=TO, fields=fields)

    assert list(out.columns) == [MERCHANT_ID, AS_OF, *fields]


def test_sql_connector_reads_isv_table(db_url: str, mapping: ColumnMapping) -> None:
    """SQL table (SQLite and PostgreSQL): created with to_sql, read through the mapping."""
    src = _isv_frame()
    engine = sa.create_engine(db_url)
    src.to_sql("isv_erp_snapshot", engine, index=False, if_exists="replace")
    engine.dispose()

    out = SqlTableConnector(db_url, "isv_erp_snapshot", mapping).read(data_from=FROM,
                                                                       data_to=TO)

    _check_mapped(out, src)


def test_sql_connector_missing_table(db_url: str) -> None:
    """A missing table is SOURCE_UNREADABLE."""
    with pytest.raises(DataError) as err:
        SqlTableConnector(db_url, "no_such_table").read(data_from=FROM, data_to=TO)

    assert err.value.code == "SOURCE_UNREADABLE"


def _read_bad(tmp_path: Path, mapping: ColumnMapping, df: pd.DataFrame) -> DataValidationError:
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataValidationError) as err:
        CsvConnector(tmp_path / "bad.csv", mapping).read(data_from=FROM, data_to=TO)
    return err.value


def test_missing_column(tmp_path: Path, mapping: ColumnMapping) -> None:
    """A mapped column absent from the table is MISSING_COLUMNS."""
    err = _read_bad(tmp_path, mapping, _isv_frame().drop(columns=["Wages"]))

    assert (err.code, err.column) == ("MISSING_COLUMNS", "Wages")


def test_extra_column(tmp_path: Path, mapping: ColumnMapping) -> None:
    """A column neither mapped nor ignored is EXTRA_COLUMNS."""
    err = _read_bad(tmp_path, mapping, _isv_frame().assign(CustomerPhone="138"))

    assert (err.code, err.column) == ("EXTRA_COLUMNS", "CustomerPhone")


def test_wrong_type(tmp_path: Path, mapping: ColumnMapping) -> None:
    """Text in a numeric column is WRONG_TYPE."""
    df = _isv_frame().astype({"cash": object})
    df.loc[2, "cash"] = "lots"

    err = _read_bad(tmp_path, mapping, df)

    assert (err.code, err.column) == ("WRONG_TYPE", "cash")


def test_bad_date_is_wrong_type(tmp_path: Path, mapping: ColumnMapping) -> None:
    """A snapshot date that is not a date is WRONG_TYPE."""
    df = _isv_frame().astype({"SnapshotDate": object})
    df.loc[0, "SnapshotDate"] = "last tuesday"

    err = _read_bad(tmp_path, mapping, df)

    assert (err.code, err.column) == ("WRONG_TYPE", AS_OF)


def test_negative_cost(tmp_path: Path, mapping: ColumnMapping) -> None:
    """A negative cost is NEGATIVE_VALUE."""
    df = _isv_frame()
    df.loc[1, "cost_of_goods"] = -5

    err = _read_bad(tmp_path, mapping, df)

    assert (err.code, err.column) == ("NEGATIVE_VALUE", "cost_of_goods")


def test_duplicate_merchant(tmp_path: Path, mapping: ColumnMapping) -> None:
    """Two rows for one merchant is DUPLICATE_MERCHANT."""
    df = _isv_frame()
    df.loc[3, "MerchID"] = "m000"

    err = _read_bad(tmp_path, mapping, df)

    assert err.code == "DUPLICATE_MERCHANT" and "m000" in str(err)


def test_row_outside_consented_range(tmp_path: Path, mapping: ColumnMapping) -> None:
    """A snapshot dated after the consented range is OUT_OF_RANGE."""
    df = _isv_frame()
    df.loc[4, "SnapshotDate"] = pd.Timestamp("2026-07-01")

    err = _read_bad(tmp_path, mapping, df)

    assert (err.code, err.column) == ("OUT_OF_RANGE", AS_OF) and "m004" in str(err)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[columns]\nfavourite_colour = "Colour"\n', "unknown schema fields"),
        ('[units]\ncash = "x100"\n', "scale must be a number"),
        ('[units]\ncash = -1\n', "positive"),
        ('[columns]\ncash = "A"\ndebt = "A"\n', "several fields"),
        ('ignore = ["cash"]\n', "both mapped and ignored"),
        ('[column]\ncash = "A"\n', "unknown top-level keys"),
        ("[columns\n", "cannot read mapping"),
    ],
)
def test_bad_mapping_files(tmp_path: Path, text: str, fragment: str) -> None:
    """Malformed mapping files raise BAD_MAPPING with a message saying what is wrong."""
    path = tmp_path / "m.toml"
    path.write_text(text)

    with pytest.raises(MappingError) as err:
        load_mapping(path)

    assert err.value.code == "BAD_MAPPING" and fragment in str(err.value)


def test_data_package_all_is_pinned() -> None:
    """federation.data exports exactly its public names."""
    import federation.data

    assert set(federation.data.__all__) == {
        "ColumnMapping", "load_mapping", "Connector", "CsvConnector", "ParquetConnector",
        "SqlTableConnector", "CONNECTORS", "RowSelection", "make_connector", "check_columns",
        "coerce_frame", "coerce_and_validate"}


def test_shipped_example_mapping_loads() -> None:
    """The example mapping shipped with the package is valid and maps every field."""
    path = Path(__file__).resolve().parents[2] / "federation" / "mappings" / "example_erp.toml"

    m = load_mapping(path)

    assert m.source("merchant_id") == "MerchID" and m.scale("cash") == 100.0
    assert len(set(m.columns.values()) - set(m.columns)) == len(m.columns)
