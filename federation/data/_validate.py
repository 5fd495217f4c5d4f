"""Validation of an ERP frame against the schema, after renaming to schema names.

Checks run in a fixed order and the first failure raises one
:class:`~federation._errors.DataValidationError` whose ``code`` names it:

``MISSING_COLUMNS``, ``EXTRA_COLUMNS`` (header level, before any row is read),
``WRONG_TYPE`` (a value that is not a number / date / id), ``NEGATIVE_VALUE``
(a cost, count or day figure below zero, after scale and offset),
``EMPTY_COLUMN`` (a mapped field with no value in any row: declare it
``absent`` in the mapping instead), ``DUPLICATE_MERCHANT`` (two rows for one
merchant), ``OUT_OF_RANGE`` (``as_of`` outside the consented
``[data_from, data_to]``).

The same rules run for ``fedgate data check`` and before every training job
(:mod:`federation.jobconfig`), and a node types its rows with
:func:`coerce_frame`, the first half of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

import numpy as np
import pandas as pd

from .._errors import DataValidationError
from ..schema import AS_OF, MERCHANT_ID, FieldSpec, erp_field

__all__ = ["check_columns", "coerce_frame", "coerce_and_validate"]

_SHOW = 5  # ids or values quoted in an error message


def check_columns(present: Iterable[str], required: Iterable[str], allowed: Iterable[str]
                  ) -> None:
    """Header-level check: every required column exists and none outside ``allowed`` does.

    Raises
    ------
    DataValidationError
        ``MISSING_COLUMNS`` or ``EXTRA_COLUMNS``, with ``column`` set to the first one.
    """
    have = list(present)
    missing = [c for c in required if c not in have]
    if missing:
        raise DataValidationError(f"missing columns: {missing}", code="MISSING_COLUMNS",
                                  column=missing[0])
    allowed_set = set(allowed)
    extra = [c for c in have if c not in allowed_set]
    if extra:
        raise DataValidationError(
            f"unexpected columns {extra}; map them or list them under ignore",
            code="EXTRA_COLUMNS", column=extra[0])


def _as_dates(s: pd.Series) -> pd.Series:
    try:
        if pd.api.types.is_datetime64_any_dtype(s):
            out = s.dt.normalize()
        else:
            # ERP exports carry ISO dates as text; anything else is a type error.
            out = pd.to_datetime(s, errors="coerce", format="ISO8601").dt.normalize()
    except (TypeError, ValueError):
        out = pd.Series(pd.NaT, index=s.index)
    if out.dt.tz is not None:
        out = out.dt.tz_localize(None)
    bad = out.isna() & s.notna()
    if bad.any() or s.isna().any():
        shown = s[bad | s.isna()].head(_SHOW).tolist()
        raise DataValidationError(f"{AS_OF}: not a date: {shown}", code="WRONG_TYPE",
                                  column=AS_OF)
    return out


def coerce_frame(
    df: pd.DataFrame,
    fields: Sequence[str],
    *,
    scales: dict[str, float] | None = None,
    offsets: dict[str, float] | None = None,
    extras: Sequence[FieldSpec] = (),
) -> pd.DataFrame:
    """Type and scale a frame already renamed to schema names (no duplicate or range check).

    What a node applies to the rows a manifest lets it read (several snapshots of
    one merchant are allowed there); :func:`coerce_and_validate` adds the checks
    on a whole export.

    Raises
    ------
    DataValidationError
        ``MISSING_COLUMNS``/``EXTRA_COLUMNS``, ``WRONG_TYPE`` or ``NEGATIVE_VALUE``.
    """
    check_columns(df.columns, [MERCHANT_ID, AS_OF, *fields], [MERCHANT_ID, AS_OF, *fields])
    scales = scales or {}
    offsets = offsets or {}
    out = pd.DataFrame(index=df.index)

    ids = df[MERCHANT_ID]
    if ids.isna().any():
        raise DataValidationError(f"{MERCHANT_ID}: empty id", code="WRONG_TYPE",
                                  column=MERCHANT_ID)
    out[MERCHANT_ID] = ids.astype(str).str.strip().astype("string")
    if (out[MERCHANT_ID] == "").any():
        raise DataValidationError(f"{MERCHANT_ID}: empty id", code="WRONG_TYPE",
                                  column=MERCHANT_ID)
    out[AS_OF] = _as_dates(df[AS_OF])

    for name in fields:
        spec = erp_field(name, extras)
        raw = df[name]
        num = pd.to_numeric(raw, errors="coerce")
        bad = num.isna() & raw.notna()
        if bad.any():
            raise DataValidationError(f"{name}: not a number: {raw[bad].head(_SHOW).tolist()}",
                                      code="WRONG_TYPE", column=name)
        values = num.astype("float64") * float(scales.get(name, 1.0)) + float(
            offsets.get(name, 0.0))
        if not np.isfinite(values.dropna()).all():
            raise DataValidationError(f"{name}: infinite value", code="WRONG_TYPE", column=name)
        if spec.nonnegative and (values < 0).any():
            ids_bad = out.loc[values < 0, MERCHANT_ID].head(_SHOW).tolist()
            raise DataValidationError(f"{name} ({spec.unit}) is negative for merchants {ids_bad}",
                                      code="NEGATIVE_VALUE", column=name)
        out[name] = values.round().astype("Int64") if spec.dtype == "int64" else values
    return out


def coerce_and_validate(
    df: pd.DataFrame,
    fields: Sequence[str],
    *,
    data_from: date,
    data_to: date,
    scales: dict[str, float] | None = None,
    offsets: dict[str, float] | None = None,
    absent: Iterable[str] = (),
    extras: Sequence[FieldSpec] = (),
) -> pd.DataFrame:
    """Type, scale and check a frame already renamed to schema names.

    Parameters
    ----------
    df : pandas.DataFrame
        Columns :data:`MERCHANT_ID`, :data:`AS_OF` and ``fields``.
    fields : Sequence[str]
        ERP feature fields to keep (missing values allowed, kept as NaN / ``<NA>``).
    data_from, data_to : datetime.date
        The consented data range; every ``as_of`` must lie within it (inclusive).
    scales : dict[str, float] | None, default None
        Per-field factor from source units to schema units.
    offsets : dict[str, float] | None, default None
        Per-field value added after scaling.
    absent : Iterable[str], default ()
        Fields the ISV declared absent (all missing by design, not ``EMPTY_COLUMN``).
    extras : Sequence[FieldSpec], default ()
        The ISV's declared fields (their unit, sign and dtype rules apply as for core fields).

    Returns
    -------
    pandas.DataFrame
        ``merchant_id`` (string), ``as_of`` (datetime64, midnight), then ``fields``
        (``Int64`` for integer fields, money rounded to whole fen; ``float64`` otherwise).
    """
    if data_from > data_to:
        raise ValueError(f"data_from {data_from} is after data_to {data_to}")
    out = coerce_frame(df, fields, scales=scales, offsets=offsets, extras=extras)
    skip = set(absent)
    empty = [f for f in fields if f not in skip and len(out) and out[f].isna().all()]
    if empty:
        raise DataValidationError(
            f"columns with no value in any row: {empty}; declare them under absent in the "
            "mapping if this ISV does not hold them", code="EMPTY_COLUMN", column=empty[0])

    dup = out[MERCHANT_ID].duplicated(keep=False)
    if dup.any():
        shown = sorted(set(out.loc[dup, MERCHANT_ID].head(2 * _SHOW)))
        raise DataValidationError(f"several rows for merchants {shown}",
                                  code="DUPLICATE_MERCHANT", column=MERCHANT_ID)

    lo, hi = pd.Timestamp(data_from), pd.Timestamp(data_to)
    outside = (out[AS_OF] < lo) | (out[AS_OF] > hi)
    if outside.any():
        shown = out.loc[outside, MERCHANT_ID].head(_SHOW).tolist()
        raise DataValidationError(
            f"{int(outside.sum())} rows have {AS_OF} outside the consented range "
            f"[{data_from}, {data_to}] (merchants {shown})", code="OUT_OF_RANGE", column=AS_OF)
    return out.reset_index(drop=True)
