"""Connectors that read an ISV's ERP table (CSV, Parquet or a SQL table) into the ERP schema.

Every connector does the same three steps: look at the header only (the
column check needs no row), read just the columns the job's consented
categories allow plus the merchant id and snapshot date, then rename, scale and
validate (:func:`~federation.data._validate.coerce_and_validate`).

A node reads through :meth:`Connector.read_selected`: only the rows of a
:class:`RowSelection` (the manifest's merchants, each inside its consented date
range), with the filter pushed as far down as each source allows — a pyarrow
dataset filter for Parquet (merchant ids and date bounds), a chunked ``WHERE
merchant IN (…) AND as_of …`` for a SQL table, a chunked parse for CSV that
keeps only selected rows of each chunk. No row outside the selection reaches
the caller, and none is typed, scaled or validated.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import sqlalchemy as sa

from .._errors import DataError
from ._connector_base import Connector
from ._mapping import ColumnMapping
from ._selection import RowSelection, _dates

__all__ = [
    "CONNECTORS",
    "Connector",
    "CsvConnector",
    "ParquetConnector",
    "RowSelection",
    "SqlTableConnector",
    "make_connector",
]

CONNECTORS = ("csv", "parquet", "sql")
"""Connector kinds a node config (``erp-connector``) may name."""

_MAX_EXACT_GROUPS = 16  # distinct consented ranges pushed down exactly; more use one hull
_SQL_CHUNK = 2000  # merchant ids per ``IN (...)``: under every backend's parameter limit
_CSV_CHUNK = 200_000  # rows parsed at a time; only selected rows of each chunk are kept
_ONE_DAY = timedelta(days=1)


class CsvConnector(Connector):
    """An ERP export as a CSV file (header row, comma separated, UTF-8).

    Parameters
    ----------
    path : str | pathlib.Path
        The CSV file.
    mapping : ColumnMapping | None, default None
    """

    def __init__(self, path: str | Path, mapping: ColumnMapping | None = None) -> None:
        super().__init__(mapping)
        self.path = Path(path)

    def source_columns(self) -> list[str]:
        """The CSV header."""
        try:
            return list(pd.read_csv(self.path, nrows=0).columns)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {self.path}: {exc}", code="SOURCE_UNREADABLE") from exc

    def _read_columns(self, columns: Sequence[str]) -> pd.DataFrame:
        # Everything as text first: type errors are reported by the validator, per column.
        df = pd.read_csv(self.path, usecols=list(columns), dtype=str, keep_default_na=True)
        return df[list(columns)]

    def _read_selected(self, columns: Sequence[str], selection: RowSelection) -> pd.DataFrame:
        # CSV has no predicate push-down: parse in chunks, keep only each chunk's selected
        # rows, so unselected rows are never typed nor held beyond their chunk.
        id_col, date_col = columns[0], columns[1]
        kept: list[pd.DataFrame] = []
        try:
            chunks: Iterator[pd.DataFrame] = pd.read_csv(
                self.path, usecols=list(columns), dtype=str, keep_default_na=True,
                chunksize=_CSV_CHUNK,
            )
            for chunk in chunks:
                keep = selection.mask(chunk[id_col].fillna(""), _dates(chunk[date_col]))
                if keep.any():
                    kept.append(chunk[keep])
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {self.path}: {exc}", code="SOURCE_UNREADABLE") from exc
        if not kept:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
        return pd.concat(kept, ignore_index=True)


class ParquetConnector(Connector):
    """An ERP export as a Parquet file.

    Parameters
    ----------
    path : str | pathlib.Path
        The Parquet file.
    mapping : ColumnMapping | None, default None
    """

    def __init__(self, path: str | Path, mapping: ColumnMapping | None = None) -> None:
        super().__init__(mapping)
        self.path = Path(path)

    def _dataset(self) -> pads.Dataset:
        try:
            return pads.dataset(self.path, format="parquet")
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise DataError(f"cannot read {self.path}: {exc}", code="SOURCE_UNREADABLE") from exc

    def source_columns(self) -> list[str]:
        """The Parquet schema's column names (metadata only)."""
        return list(self._dataset().schema.names)

    def _read_columns(self, columns: Sequence[str]) -> pd.DataFrame:
        table = self._dataset().to_table(columns=list(columns))
        return table.to_pandas()[list(columns)]

    def _read_selected(self, columns: Sequence[str], selection: RowSelection) -> pd.DataFrame:
        dataset = self._dataset()
        id_col, date_col = columns[0], columns[1]
        id_type, date_type = dataset.schema.field(id_col).type, dataset.schema.field(date_col).type
        groups = selection.groups()
        if len(groups) > _MAX_EXACT_GROUPS:  # one hull: all ids, the widest date range
            all_ids = [m for _, _, ids in groups for m in ids]
            groups = [(min(g[0] for g in groups), max(g[1] for g in groups), all_ids)]
        expr: pads.Expression | None = None
        for lo, hi, ids in groups:
            part = (
                pads.field(id_col).isin(_typed_ids(ids, id_type))
                & (pads.field(date_col) >= _bound(lo, date_type))
                & (pads.field(date_col) < _bound(hi + _ONE_DAY, date_type))
            )
            expr = part if expr is None else expr | part
        try:
            table = dataset.to_table(columns=list(columns), filter=expr)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise DataError(f"cannot read {self.path}: {exc}", code="SOURCE_UNREADABLE") from exc
        return table.to_pandas(date_as_object=False)[list(columns)]


def _typed_ids(ids: Sequence[str], id_type: pa.DataType) -> list[Any]:
    """Manifest ids (strings) as values of the source's id column type."""
    if pa.types.is_integer(id_type):
        return [int(m) for m in ids if m.strip().lstrip("-").isdigit()]
    return list(ids)


def _bound(day: date, date_type: pa.DataType) -> pa.Scalar:
    """A date bound as a scalar comparable with the source's date column."""
    if pa.types.is_timestamp(date_type):
        return pa.scalar(datetime(day.year, day.month, day.day), type=pa.timestamp(
            date_type.unit)).cast(date_type)
    if pa.types.is_date(date_type):
        return pa.scalar(day, type=date_type)
    return pa.scalar(day.isoformat())  # ISO text sorts like dates


class SqlTableConnector(Connector):
    """A table in the ISV's own database, read with SQLAlchemy.

    Parameters
    ----------
    url : str
        SQLAlchemy URL of the ISV's database (read-only credentials recommended).
    table : str
        Table name.
    mapping : ColumnMapping | None, default None
    schema : str | None, default None
        Database schema holding the table (default: the connection's search path).
    """

    def __init__(self, url: str, table: str, mapping: ColumnMapping | None = None, *,
                 schema: str | None = None) -> None:
        super().__init__(mapping)
        self.url = url
        self.table = table
        self.schema = schema

    def _engine(self) -> sa.Engine:
        try:
            return sa.create_engine(self.url)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise DataError(f"bad database URL: {exc}", code="SOURCE_UNREADABLE") from exc

    def source_columns(self) -> list[str]:
        """Column names from the database catalogue (no rows read)."""
        engine = self._engine()
        try:
            cols = sa.inspect(engine).get_columns(self.table, schema=self.schema)
        except sa.exc.NoSuchTableError as exc:
            raise DataError(f"no table {self.table!r}", code="SOURCE_UNREADABLE") from exc
        except sa.exc.SQLAlchemyError as exc:
            raise DataError(f"cannot inspect {self.table!r}: {exc}",
                            code="SOURCE_UNREADABLE") from exc
        finally:
            engine.dispose()
        return [c["name"] for c in cols]

    def _read_columns(self, columns: Sequence[str]) -> pd.DataFrame:
        engine = self._engine()
        try:
            table = sa.Table(self.table, sa.MetaData(), schema=self.schema,
                             autoload_with=engine)
            query = sa.select(*(table.c[c] for c in columns))
            with engine.connect() as conn:
                df = pd.read_sql(query, conn)
        except sa.exc.SQLAlchemyError as exc:
            raise DataError(f"cannot read {self.table!r}: {exc}",
                            code="SOURCE_UNREADABLE") from exc
        finally:
            engine.dispose()
        df.columns = list(columns)
        return df

    def _read_selected(self, columns: Sequence[str], selection: RowSelection) -> pd.DataFrame:
        # WHERE merchant IN (chunk) AND as_of in the chunk's range: the database returns
        # only selected rows (per distinct consented range, ids in bounded chunks).
        engine = self._engine()
        frames: list[pd.DataFrame] = []
        try:
            table = sa.Table(self.table, sa.MetaData(), schema=self.schema,
                             autoload_with=engine)
            id_c, date_c = table.c[columns[0]], table.c[columns[1]]
            cols = [table.c[c] for c in columns]
            as_int = isinstance(id_c.type, sa.Integer)
            with engine.connect() as conn:
                for lo, hi, ids in selection.groups():
                    keys: list[Any] = (
                        [int(m) for m in ids if m.strip().lstrip("-").isdigit()] if as_int
                        else ids
                    )
                    for i in range(0, len(keys), _SQL_CHUNK):
                        query = sa.select(*cols).where(
                            id_c.in_(keys[i : i + _SQL_CHUNK]),
                            date_c >= _sql_bound(lo, date_c.type),
                            date_c < _sql_bound(hi + _ONE_DAY, date_c.type),
                        )
                        frames.append(pd.read_sql(query, conn))
        except sa.exc.SQLAlchemyError as exc:
            raise DataError(f"cannot read {self.table!r}: {exc}",
                            code="SOURCE_UNREADABLE") from exc
        finally:
            engine.dispose()
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
        df = pd.concat(frames, ignore_index=True)
        df.columns = list(columns)
        return df


def _sql_bound(day: date, col_type: sa.types.TypeEngine[Any]) -> Any:
    """A date bound in the column's own type (DATETIME, DATE, or ISO text)."""
    if isinstance(col_type, sa.DateTime):
        return datetime(day.year, day.month, day.day)
    if isinstance(col_type, sa.Date):
        return day
    return day.isoformat()


def make_connector(
    kind: str,
    *,
    path: str | Path | None = None,
    url: str | None = None,
    table: str | None = None,
    mapping: ColumnMapping | None = None,
) -> Connector:
    """A connector by kind (:data:`CONNECTORS`): ``csv``/``parquet`` on ``path``, ``sql`` on
    ``url`` + ``table``; ``kind=""`` infers csv or parquet from the path's suffix.

    Raises
    ------
    DataError
        ``BAD_CONNECTOR`` for an unknown kind or a missing path, URL or table.
    """
    if not kind:
        kind = "csv" if path is not None and str(path).lower().endswith(".csv") else "parquet"
    if kind in ("csv", "parquet"):
        if path is None:
            raise DataError(f"a {kind} connector needs a path", code="BAD_CONNECTOR")
        return (CsvConnector if kind == "csv" else ParquetConnector)(path, mapping)
    if kind == "sql":
        if not url or not table:
            raise DataError("a sql connector needs a database URL and a table",
                            code="BAD_CONNECTOR")
        return SqlTableConnector(url, table, mapping)
    raise DataError(f"unknown connector {kind!r}; expected one of {CONNECTORS}",
                    code="BAD_CONNECTOR")
