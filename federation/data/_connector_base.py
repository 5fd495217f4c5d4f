"""The :class:`Connector` base: the column check, layout and frame steps every reader shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd

from .._errors import DataError, DataValidationError
from ..schema import AS_OF, ERP_FEATURES, ERP_OPTIONAL_FIELDS, MERCHANT_ID
from ._mapping import ColumnMapping
from ._selection import RowSelection, _dates
from ._validate import check_columns, coerce_and_validate, coerce_frame

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
