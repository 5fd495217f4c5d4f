"""Column-mapping files: how an ISV's own table maps onto fedgate's ERP schema.

A mapping is a small TOML file that the ISV writes once (top-level keys
first: in TOML, a key after a ``[table]`` header belongs to that table)::

    # erp_mapping.toml
    ignore = ["Notes", "UpdatedBy"]    # source columns the node must never read
    absent = ["gross_margin"]          # schema fields this ISV does not hold

    [columns]                      # schema field = the ISV's column name
    merchant_id = "MerchID"
    as_of = "SnapshotDate"
    monthly_revenue = "Revenue"
    labour_cost = "Wages"
    # ... one line per ERP field; a field not listed is read from a column of
    # the same name as the field.

    [units]                        # schema value = source value * scale + offset
    monthly_revenue = 100                              # a bare number is the scale
    labour_cost = { from = "yuan", scale = 100 }       # or say what the source unit is
    gross_margin = { from = "percent", scale = 0.01 }
    months_of_history = { from = "years", scale = 12, offset = 0 }
    net_worth = { from = "yuan", scale = 100 }         # a declared field (below)

    [declared.net_worth]           # a numeric field beyond the ERP schema
    unit = "CNY_fen"               # after scale and offset
    category = "cash_and_debt"     # the consent category that covers it
    signed = true                  # negative values allowed (default false)
    integer = true                 # stored in whole units (default false)

Rules: money fields are stored as integer fen, so a source in yuan needs
``scale = 100`` (the scaled value is rounded to the nearest fen); ``from`` is
documentation only; ``offset`` (default 0) is added after scaling, in schema
units. Any source column that is neither mapped nor ignored is an
``EXTRA_COLUMNS`` error, so a schema change at the ISV is noticed, not silently
read. A field listed under ``absent`` is optional for this ISV: it is read as
missing for every merchant (the model sees it through its missing-value
indicator), and no source column is expected for it; every other field must
have a column.

Extra fields (:mod:`federation.schema`): the schema's optional signed fields
(``net_profit``, ``cash_flow``) are read from a column of that name, or from
the column ``[columns]`` maps them to; a table without one reads them as
missing. A ``[declared.<name>]`` table declares a field of the ISV's own (unit,
consent category, signed, integer); it then needs a column like any core field
(or ``absent``), takes ``[units]`` like any field, and a job that uses it must
carry exactly the same declaration (``FIELD_MISMATCH`` otherwise).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .._errors import DataError, MappingError
from ..schema import AS_OF, ERP_FEATURES, ERP_OPTIONAL_FIELDS, MERCHANT_ID, FieldSpec, declare_field

__all__ = ["ColumnMapping", "load_mapping"]

_KEY_COLUMNS = (MERCHANT_ID, AS_OF)
_TOP_KEYS = {"columns", "units", "ignore", "absent", "declared"}
_OPTIONAL = tuple(f.name for f in ERP_OPTIONAL_FIELDS)
_DECLARED_KEYS = {"unit", "category", "signed", "integer"}


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Schema field -> source column, per-field scale factors, and ignored source columns.

    Parameters
    ----------
    columns : Mapping[str, str]
        Schema field name -> the ISV's column name; missing fields map to themselves.
    scales : Mapping[str, float]
        Schema field -> factor applied to the source value (default 1).
    ignore : frozenset[str]
        Source columns that exist but are never read.
    offsets : Mapping[str, float]
        Schema field -> value added after scaling (default 0).
    absent : frozenset[str]
        ERP fields this ISV does not hold: read as missing, no column expected.
    declared : Mapping[str, FieldSpec]
        Fields of the ISV's own (:func:`federation.schema.declare_field`), by name.
    """

    columns: Mapping[str, str] = field(default_factory=dict)
    scales: Mapping[str, float] = field(default_factory=dict)
    ignore: frozenset[str] = frozenset()
    offsets: Mapping[str, float] = field(default_factory=dict)
    absent: frozenset[str] = frozenset()
    declared: Mapping[str, FieldSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        full = {f: f for f in (*_KEY_COLUMNS, *ERP_FEATURES, *self.declared)}
        numeric = {*ERP_FEATURES, *_OPTIONAL, *self.declared}
        unknown = sorted(set(self.columns) - full.keys() - set(_OPTIONAL))
        if unknown:
            raise MappingError(f"[columns] names unknown schema fields: {unknown}")
        full.update(self.columns)
        bad_absent = sorted(set(self.absent) - numeric)
        if bad_absent:
            raise MappingError(f"absent names unknown ERP fields: {bad_absent}")
        both = sorted(set(self.absent) & set(self.columns))
        if both:
            raise MappingError(f"fields both mapped under [columns] and absent: {both}")
        for name in self.absent:
            del full[name]
        sources = list(full.values())
        dupes = sorted({s for s in sources if sources.count(s) > 1})
        if dupes:
            raise MappingError(f"source columns mapped to several fields: {dupes}")
        bad_scale = sorted(set(self.scales) - numeric)
        if bad_scale:
            raise MappingError(f"[units] names unknown or non-numeric fields: {bad_scale}")
        for name, scale in self.scales.items():
            if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
                raise MappingError(f"[units] {name}: scale must be a positive number",
                                   column=name)
        bad_offset = sorted(set(self.offsets) - numeric)
        if bad_offset:
            raise MappingError(f"[units] offsets name unknown or non-numeric fields: {bad_offset}")
        for name, offset in self.offsets.items():
            if not (isinstance(offset, int | float) and math.isfinite(offset)):
                raise MappingError(f"[units] {name}: offset must be a finite number",
                                   column=name)
        sources = list(full.values())
        clash = sorted(self.ignore & set(sources))
        if clash:
            raise MappingError(f"columns both mapped and ignored: {clash}")
        object.__setattr__(self, "columns", MappingProxyType(full))
        object.__setattr__(self, "scales", MappingProxyType(dict(self.scales)))
        object.__setattr__(self, "offsets", MappingProxyType(dict(self.offsets)))
        object.__setattr__(self, "absent", frozenset(self.absent))
        object.__setattr__(self, "declared", MappingProxyType(dict(self.declared)))

    @property
    def extra_fields(self) -> tuple[FieldSpec, ...]:
        """The fields this ISV declares itself, in declaration order."""
        return tuple(self.declared.values())

    def required(self) -> list[str]:
        """Schema fields that must have a source column: core and declared, minus absent."""
        return self.present([*ERP_FEATURES, *self.declared, *(
            f for f in _OPTIONAL if f in self.columns)])

    def optional_source(self, name: str) -> str | None:
        """The column an optional schema field is read from, if not explicitly mapped/absent."""
        if name in self.columns or name in self.absent:
            return None
        return name

    def source(self, schema_field: str) -> str:
        """The ISV's column name for ``schema_field`` (``KeyError`` for an absent field)."""
        return self.columns[schema_field]

    def present(self, fields: Sequence[str]) -> list[str]:
        """``fields`` without the ones this ISV declared absent, in order."""
        return [f for f in fields if f not in self.absent]

    def offset(self, schema_field: str) -> float:
        """Value added after scaling (0 when not given)."""
        return float(self.offsets.get(schema_field, 0.0))

    def scale(self, schema_field: str) -> float:
        """Factor from source value to schema value (1 when not given)."""
        return float(self.scales.get(schema_field, 1.0))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnMapping:
        """Build from parsed TOML; raises ``MappingError`` on any malformed part."""
        extra = sorted(set(data) - _TOP_KEYS)
        if extra:
            raise MappingError(f"unknown top-level keys {extra}; expected {sorted(_TOP_KEYS)}")
        columns = data.get("columns", {})
        if not isinstance(columns, dict) or not all(isinstance(v, str) and v
                                                    for v in columns.values()):
            raise MappingError("[columns] must map field names to non-empty column names")
        scales: dict[str, float] = {}
        offsets: dict[str, float] = {}
        units = data.get("units", {})
        if not isinstance(units, dict):
            raise MappingError("[units] must be a table")
        for name, spec in units.items():
            offset: Any = 0.0
            if isinstance(spec, dict):
                if set(spec) - {"from", "scale", "offset"} or not ({"scale", "offset"} & set(spec)):
                    raise MappingError(
                        f"[units] {name}: expected {{ from = ..., scale = ..., offset = ... }}",
                        column=name)
                offset = spec.get("offset", 0.0)
                spec = spec.get("scale", 1.0)
            for what, value in (("scale", spec), ("offset", offset)):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise MappingError(f"[units] {name}: {what} must be a number", column=name)
            scales[name] = float(spec)
            if offset:
                offsets[name] = float(offset)
        declared: dict[str, FieldSpec] = {}
        table = data.get("declared", {})
        if not isinstance(table, dict):
            raise MappingError("[declared] must hold one table per field")
        for name, spec in table.items():
            if not isinstance(spec, dict) or set(spec) - _DECLARED_KEYS or not {
                "unit", "category"} <= set(spec):
                raise MappingError(f"[declared.{name}] needs unit and category and takes only "
                                   f"{sorted(_DECLARED_KEYS)}", column=name)
            try:
                declared[name] = declare_field(name, **spec)
            except (DataError, TypeError) as exc:
                raise MappingError(f"[declared.{name}]: {exc}", column=name) from exc
        lists: dict[str, frozenset[str]] = {}
        for key in ("ignore", "absent"):
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
                raise MappingError(f"{key} must be a list of names")
            lists[key] = frozenset(value)
        return cls(columns=dict(columns), scales=scales, ignore=lists["ignore"], offsets=offsets,
                   absent=lists["absent"], declared=declared)


def load_mapping(path: str | Path) -> ColumnMapping:
    """Read a mapping TOML file; raises ``MappingError`` if unreadable or malformed."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MappingError(f"cannot read mapping {path}: {exc}") from exc
    return ColumnMapping.from_dict(data)
