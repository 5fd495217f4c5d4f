"""Connectors that read an ISV's ERP table (CSV, Parquet or a SQL table) into the ERP schema.

Every connector does the same three steps: look at the header only (the
column check needs no row), read just the columns the job's consented
categories allow plus the merchant id and snapshot date, then rename, scale and
validate (:func:`~federation.data._validate.coerce_and_validate`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import sqlalchemy as sa

from .._errors import DataError
from ..schema import AS_OF, ERP_FEATURES, MERCHANT_ID
from ._mapping import ColumnMapping
from ._validate import check_columns, coerce_and_validate

__all__ = ["Connector", "CsvConnector", "ParquetConnector", "SqlTableConnector"]


class Connector(ABC):
    """Reads one ISV table through a :class:`ColumnMapping`.

    Parameters
    ----------
    mapping : ColumnMapping
        How the ISV's columns map to the schema (default: identity, no scaling).
    """

    def __init__(self, mapping: ColumnMapping | None = None) -> None:
        self.mapping = mapping if mapping is not None else ColumnMapping()

    @abstractmethod
    def source_columns(self) -> list[str]:
        """The source table's column names (header only, no rows read)."""

    @abstractmethod
    def _read_columns(self, columns: Sequence[str]) -> pd.DataFrame:
        """Read only ``columns`` (source names) of every row."""

    def read(
        self,
        *,
        data_from: date,
        data_to: date,
        fields: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Read, rename, scale and validate the ISV table.

        Parameters
        ----------
        data_from, data_to : datetime.date
            The consented data range; a row whose ``as_of`` falls outside it is an error.
        fields : Sequence[str] | None, default None
            ERP fields to read (e.g. ``erp_fields_for(manifest categories)``); default all.
            Other columns are checked by name only and never read.

        Returns
        -------
        pandas.DataFrame
            In schema names; see :func:`~federation.data._validate.coerce_and_validate`.

        Raises
        ------
        DataValidationError
            With ``code`` MISSING_COLUMNS, EXTRA_COLUMNS, WRONG_TYPE, NEGATIVE_VALUE,
            DUPLICATE_MERCHANT or OUT_OF_RANGE.
        DataError
            ``SOURCE_UNREADABLE`` when the file or table cannot be opened.
        """
        wanted = list(ERP_FEATURES if fields is None else fields)
        unknown = [f for f in wanted if f not in ERP_FEATURES]
        if unknown:
            raise DataError(f"unknown ERP fields {unknown}", code="UNKNOWN_FIELD")
        m = self.mapping
        keys = [MERCHANT_ID, AS_OF]
        # The whole mapped schema must be present even when a job reads fewer fields,
        # so a table that lost a column fails every job, not only some.
        all_sources = [m.source(f) for f in (*keys, *ERP_FEATURES)]
        check_columns(self.source_columns(), all_sources, [*all_sources, *m.ignore])
        sources = [m.source(f) for f in (*keys, *wanted)]
        raw = self._read_columns(sources)
        raw.columns = [*keys, *wanted]
        return coerce_and_validate(raw, wanted, data_from=data_from, data_to=data_to,
                                   scales={f: m.scale(f) for f in wanted})


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

    def source_columns(self) -> list[str]:
        """The Parquet schema's column names (metadata only)."""
        try:
            return list(pq.read_schema(self.path).names)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {self.path}: {exc}", code="SOURCE_UNREADABLE") from exc

    def _read_columns(self, columns: Sequence[str]) -> pd.DataFrame:
        return pq.read_table(self.path, columns=list(columns)).to_pandas()[list(columns)]


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
