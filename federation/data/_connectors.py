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

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import sqlalchemy as sa

from .._errors import DataError, DataValidationError
from ..schema import AS_OF, ERP_FEATURES, ERP_OPTIONAL_FIELDS, MERCHANT_ID
from ._mapping import ColumnMapping
from ._validate import check_columns, coerce_and_validate, coerce_frame

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


def _day(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value



_OPTIONAL = tuple(f.name for f in ERP_OPTIONAL_FIELDS)


def _known_fields(fields: Sequence[str], mapping: ColumnMapping) -> list[str]:
    """``fields`` as a list; ``DataError`` (``UNKNOWN_FIELD``) if any is not a known field.

    Known: the core ERP fields, the schema's optional fields and the mapping's declared ones.
    """
    wanted = list(fields)
    known = {*ERP_FEATURES, *_OPTIONAL, *mapping.declared}
    unknown = [f for f in wanted if f not in known]
    if unknown:
        raise DataError(f"unknown ERP fields {unknown}", code="UNKNOWN_FIELD")
    return wanted


def _layout(mapping: ColumnMapping, present: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The fields that must have a column, and field -> column for every field held.

    Optional schema fields that ``[columns]`` does not map are held when the table
    has a column of their name, and read as missing otherwise.
    """
    required = mapping.required()
    held = {f: mapping.source(f) for f in required}
    have = set(present)
    for name in _OPTIONAL:
        col = mapping.optional_source(name)
        if col is not None and col in have:
            held[name] = col
    return required, held

def _with_absent(raw: pd.DataFrame, keys: Sequence[str], fields: Sequence[str]) -> pd.DataFrame:
    """``raw`` with every field it lacks (declared absent) added as missing values, in order."""
    for f in fields:
        if f not in raw.columns:
            raw[f] = np.nan
    return raw[[*keys, *fields]]


class RowSelection:
    """The rows a node may read: per merchant id, an inclusive consented date range.

    Parameters
    ----------
    merchant_ids : Sequence[str]
        Distinct ids.
    data_from, data_to : Sequence[datetime.date]
        Aligned with ``merchant_ids``; a row is selected when its merchant is listed
        and its snapshot date lies in ``[data_from, data_to]``.
    """

    __slots__ = ("_index", "_lo", "_hi", "_groups")

    def __init__(
        self, merchant_ids: Sequence[str], data_from: Sequence[date], data_to: Sequence[date]
    ) -> None:
        if not len(merchant_ids) == len(data_from) == len(data_to):
            raise ValueError("merchant_ids, data_from and data_to must have one value each")
        self._index = pd.Index(np.asarray([str(m) for m in merchant_ids], dtype=object))
        if not self._index.is_unique:
            raise ValueError("merchant_ids must be distinct")
        self._lo = np.asarray([_day(d) for d in data_from], dtype="datetime64[D]")
        self._hi = np.asarray([_day(d) for d in data_to], dtype="datetime64[D]")
        self._groups: list[tuple[date, date, list[str]]] | None = None

    def __len__(self) -> int:
        return len(self._index)

    @property
    def merchant_ids(self) -> list[str]:
        """The selected merchants."""
        return list(self._index)

    def groups(self) -> list[tuple[date, date, list[str]]]:
        """``(data_from, data_to, ids)`` per distinct range, in range order."""
        if self._groups is None:
            frame = pd.DataFrame({"id": self._index, "lo": self._lo, "hi": self._hi})
            self._groups = [
                (pd.Timestamp(lo).date(), pd.Timestamp(hi).date(), list(g["id"]))
                for (lo, hi), g in frame.groupby(["lo", "hi"], sort=True)
            ]
        return self._groups

    def mask(self, ids: pd.Series, as_of: pd.Series) -> np.ndarray:
        """Vectorised: which rows (merchant id, normalised ``as_of``) are selected."""
        if len(ids) == 0 or len(self._index) == 0:
            return np.zeros(len(ids), dtype=bool)
        pos = self._index.get_indexer(ids.astype(str).str.strip())
        found = pos >= 0
        safe = np.where(found, pos, 0)
        d = as_of.to_numpy("datetime64[ns]")
        lo = self._lo[safe].astype("datetime64[ns]")
        hi = self._hi[safe].astype("datetime64[ns]")
        valid = ~np.isnat(d)
        return np.asarray(found & valid & (d >= lo) & (d <= hi), dtype=bool)


def _dates(values: pd.Series) -> pd.Series:
    """Snapshot dates as datetime64 at midnight (NaT where unparseable)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        out = values
    else:
        out = pd.to_datetime(values, errors="coerce", format="ISO8601")
    if getattr(out.dt, "tz", None) is not None:
        out = out.dt.tz_localize(None)
    return out.dt.normalize()


class Connector(ABC):
    """Reads one ISV table through a :class:`ColumnMapping`.

    Parameters
    ----------
    mapping : ColumnMapping
        How the ISV's columns map to the schema (default: identity, no scaling).
    """

    def __init__(self, mapping: ColumnMapping | None = None) -> None:
        self.mapping = mapping if mapping is not None else ColumnMapping()
        self._strict = mapping is not None

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
        m = self.mapping
        keys = [MERCHANT_ID, AS_OF]
        present = self.source_columns()
        required, columns = _layout(m, present)
        if fields is None:  # everything the table holds or must hold
            fields = [*ERP_FEATURES, *m.declared, *(f for f in _OPTIONAL if f in columns)]
        wanted = _known_fields(fields, m)
        # The whole mapped schema must be present even when a job reads fewer fields,
        # so a table that lost a column fails every job, not only some.
        all_sources = [m.source(f) for f in (*keys, *required)]
        check_columns(present, all_sources, [*all_sources, *columns.values(), *m.ignore])
        held = [f for f in wanted if f in columns]
        raw = self._read_columns([m.source(f) for f in keys] + [columns[f] for f in held])
        raw.columns = [*keys, *held]
        raw = _with_absent(raw, keys, wanted)
        return coerce_and_validate(raw, wanted, data_from=data_from, data_to=data_to,
                                   scales={f: m.scale(f) for f in wanted},
                                   offsets={f: m.offset(f) for f in wanted},
                                   absent=[f for f in wanted if f not in columns],
                                   extras=m.extra_fields)

    def read_selected(
        self, selection: RowSelection, fields: Sequence[str], *, coerce: bool = True
    ) -> pd.DataFrame:
        """Read only the selected rows and ``fields`` (what a manifest lets a node read).

        Parameters
        ----------
        selection : RowSelection
            Merchants and their consented date ranges; the filter is pushed down
            to the source as far as it allows, and applied exactly before return.
        fields : Sequence[str]
            ERP fields to read (the manifest's categories).
        coerce : bool, default True
            Rename, scale and type through the mapping and refuse wrong types or
            negative values (:func:`~federation.data._validate.coerce_frame`);
            ``False`` keeps the stored values (a node without a mapping file).

        Returns
        -------
        pandas.DataFrame
            ``merchant_id`` (str), ``as_of`` (datetime64 at midnight), ``fields``;
            every row's merchant is in ``selection`` and its date in that
            merchant's range (several snapshots of one merchant may be returned).

        Raises
        ------
        DataValidationError
            ``MISSING_COLUMNS``/``EXTRA_COLUMNS`` (a mapping lists the whole table;
            without one only the read columns must exist), ``WRONG_TYPE``,
            ``NEGATIVE_VALUE``.
        DataError
            ``SOURCE_UNREADABLE``, ``UNKNOWN_FIELD``.
        """
        m = self.mapping
        requested = _known_fields(fields, m)
        keys = [MERCHANT_ID, AS_OF]
        present = self.source_columns()
        required, columns = _layout(m, present)
        # Declared-absent fields (and optional ones the table lacks) come back as missing.
        wanted = [f for f in requested if f in columns or (
            not self.strict and f not in _OPTIONAL and f not in m.absent)]
        sources = [m.source(f) for f in keys] + [columns.get(f, f) for f in wanted]
        if self.strict:
            all_sources = [m.source(f) for f in (*keys, *required)]
            check_columns(present, all_sources, [*all_sources, *columns.values(), *m.ignore])
        else:
            check_columns(present, sources, present)
        names = [*keys, *wanted]
        if len(selection) == 0:
            raw = pd.DataFrame({c: pd.Series(dtype=object) for c in sources})
        else:
            raw = self._read_selected(sources, selection)
        raw = raw[sources].reset_index(drop=True)
        raw.columns = names
        # Exact filter (the push-down may be coarser): only now is any value typed.
        as_of = _dates(raw[AS_OF])
        keep = selection.mask(raw[MERCHANT_ID], as_of)
        raw = _with_absent(raw[keep].reset_index(drop=True), keys, requested)
        wanted = requested
        if coerce:
            return coerce_frame(raw, wanted, scales={f: m.scale(f) for f in wanted},
                                offsets={f: m.offset(f) for f in wanted},
                                extras=m.extra_fields)
        out = raw.assign(**{MERCHANT_ID: raw[MERCHANT_ID].astype(str).str.strip(),
                            AS_OF: as_of[keep].reset_index(drop=True)})
        for f in wanted:
            if not pd.api.types.is_numeric_dtype(out[f]):
                try:
                    out[f] = pd.to_numeric(out[f])
                except (TypeError, ValueError) as exc:
                    raise DataValidationError(f"{f}: not a number: {exc}", code="WRONG_TYPE",
                                              column=f) from exc
        return out

    def merchant_ids(self) -> list[str]:
        """The distinct merchant ids in the table (the id column only; nothing else is read)."""
        column = self.mapping.source(MERCHANT_ID)
        check_columns(self.source_columns(), [column], self.source_columns())
        ids = self._read_columns([column])[column].dropna().astype(str).str.strip()
        return sorted(set(ids) - {""})

    @property
    def strict(self) -> bool:
        """A mapping file was given: the whole table must match it (else only read columns)."""
        return self._strict

    @abstractmethod
    def _read_selected(self, columns: Sequence[str], selection: RowSelection) -> pd.DataFrame:
        """``columns`` (source names) of at least the selected rows; ideally only those."""


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
