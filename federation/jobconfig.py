"""The job configuration: one TOML file that names every table of a federated job.

It replaces the undocumented ``world.json``. Paths are relative to the file::

    # job.toml
    [data]
    from = "2020-01-01"              # the consented data range every ERP snapshot lies in
    to = "2026-12-31"

    [platform]
    table = "platform.csv"           # CSV or Parquet: one row per merchant
    id = "merchant_id"               # the merchant-id column (default "merchant_id")
    label = "default"                # 0/1 label; an empty cell = unlabelled (never trained on)
    features = ["Home", "Age"]       # f_platform's inputs (default: every other column)

    [holdout]                        # the nodes' validation merchants (documented rule)
    buckets = 5                      # merchant m is held out iff sha256(m)[0] % buckets == 0

    [isvs.fixed]                     # one table per ISV node
    source = "erp_fixed.csv"         # CSV/Parquet path, or a SQLAlchemy URL with table = "..."
    mapping = "erp_mapping.toml"     # column mapping (federation.data.load_mapping)
    policy = "isv_policy.toml"       # the ISV node's own policy (its [policy] table;
                                     # federation.node); none: the node's safe defaults

:func:`load_job_config` parses and checks the file's shape (no table is read);
:func:`check_job_config` reads every table through the same connectors and
validator a node uses (:meth:`federation.data.Connector.read`), so
``fedgate data check --config`` and ``fedgate fl run --config`` apply one set
of rules, and a bad configuration fails before any Flower or Ray start-up.
Errors are :class:`~federation._errors.DataError` with a ``code`` (``BAD_CONFIG``
for the file itself, the validator's codes for a table) and the ISV or key in
the message.

Extra fields (:mod:`federation.schema`): each ISV's mapping may declare fields
of its own (``[declared.<name>]``); a field declared by several ISVs must be
declared identically at each, and a job whose spec uses a declared field needs
that exact declaration at every ISV — ``FIELD_MISMATCH`` / ``FIELD_NOT_DECLARED``
name the ISV before any Ray start-up (the nodes check it again themselves).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._errors import DataError
from .data import ColumnMapping, Connector, load_mapping, make_connector
from .holdout import HOLDOUT_BUCKETS
from .schema import ERP_OPTIONAL_FIELDS, MERCHANT_ID, FieldSpec

__all__ = [
    "DEFAULT_HOLDOUT_BUCKETS",
    "HoldoutRule",
    "IsvSource",
    "PlatformTable",
    "JobConfig",
    "SourceReport",
    "load_job_config",
    "check_job_config",
    "check_declarations",
    "read_platform",
]

DEFAULT_HOLDOUT_BUCKETS = HOLDOUT_BUCKETS
"""One merchant in five (by the first byte of SHA-256 of its id) is a node's validation merchant."""

_TOP = {"data", "platform", "holdout", "isvs"}
_ISV_KEYS = {"source", "table", "mapping", "kind", "policy"}
_PLATFORM_KEYS = {"table", "id", "label", "features"}


def _bad(message: str) -> DataError:
    return DataError(message, code="BAD_CONFIG")


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldoutRule:
    """Which merchants a node keeps for validation (never trained on).

    Parameters
    ----------
    buckets : int, default 5
        Merchant ``m`` is held out iff ``sha256(m.encode())[0] % buckets == 0``:
        about ``1 / buckets`` of the merchants, the same at every node and at the
        platform (which fits the combiner on exactly these merchants' ``g`` scores).
    """

    buckets: int = DEFAULT_HOLDOUT_BUCKETS

    def __post_init__(self) -> None:
        if not 2 <= self.buckets <= 20:
            raise _bad(f"[holdout] buckets must be in 2..20, got {self.buckets}")

    def mask(self, merchant_ids: Sequence[str]) -> np.ndarray:
        """Boolean per merchant id: held out."""
        import hashlib

        return np.fromiter(
            (hashlib.sha256(str(m).encode()).digest()[0] % self.buckets == 0 for m in merchant_ids),
            dtype=bool,
            count=len(merchant_ids),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class IsvSource:
    """One ISV node's table and how its columns map to the ERP schema."""

    isv_id: str
    kind: str
    path: Path | None = None
    url: str | None = field(default=None, repr=False)
    table: str | None = None
    mapping_path: Path | None = None
    mapping: ColumnMapping = field(default_factory=ColumnMapping)
    policy: Path | None = None

    def connector(self) -> Connector:
        """The connector a node reads this table through."""
        return make_connector(
            self.kind, path=self.path, url=self.url, table=self.table, mapping=self.mapping
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformTable:
    """The platform's own table: merchant ids, the label, the platform features."""

    path: Path
    id_column: str = MERCHANT_ID
    label: str = "default_12m"
    features: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobConfig:
    """A parsed job configuration (see the module docstring)."""

    path: Path
    data_from: date
    data_to: date
    platform: PlatformTable
    isvs: tuple[IsvSource, ...]
    holdout: HoldoutRule = field(default_factory=HoldoutRule)


@dataclass(frozen=True, slots=True)
class SourceReport:
    """What :func:`check_job_config` found in one table."""

    name: str
    rows: int
    present: tuple[str, ...]
    absent: tuple[str, ...]
    missing_share: Mapping[str, float]


def _table(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise _bad(f"[{key}] must be a table")
    return value


def _date(value: Any, key: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise _bad(f"[data] {key} must be a date (YYYY-MM-DD), got {value!r}") from None


def _str(table: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise _bad(f"{where} {key} must be a non-empty string")
    return value


def _policy(path: Path, where: str) -> Path:
    """An ISV's node policy file, read and validated now (the node reads it again)."""
    from ._errors import FederationError
    from .node import load_policy

    if not path.is_file():
        raise _bad(f"{where} policy {path} does not exist")
    try:
        load_policy(path)
    except FederationError as exc:
        raise _bad(f"{where} {exc}") from exc
    return path


def load_job_config(path: str | Path) -> JobConfig:
    """Parse and shape-check a job configuration; no table is read.

    Raises
    ------
    DataError
        ``BAD_CONFIG`` (unreadable file, unknown key, a missing or wrong value, a
        missing file); ``BAD_MAPPING`` for a malformed column mapping.
    """
    cfg_path = Path(path)
    try:
        data = tomllib.loads(cfg_path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _bad(f"cannot read job config {cfg_path}: {exc}") from exc
    unknown = sorted(set(data) - _TOP)
    if unknown:
        raise _bad(f"unknown top-level keys {unknown}; expected {sorted(_TOP)}")
    base = cfg_path.resolve().parent

    def local(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else base / p

    rng = _table(data, "data")
    if set(rng) - {"from", "to"} or not {"from", "to"} <= set(rng):
        raise _bad("[data] needs exactly from and to")
    lo, hi = _date(rng["from"], "from"), _date(rng["to"], "to")
    if lo > hi:
        raise _bad(f"[data] from {lo} is after to {hi}")

    plat = _table(data, "platform")
    extra = sorted(set(plat) - _PLATFORM_KEYS)
    if extra:
        raise _bad(f"unknown [platform] keys {extra}; expected {sorted(_PLATFORM_KEYS)}")
    features = plat.get("features")
    if features is not None and (
        not isinstance(features, list) or not all(isinstance(f, str) and f for f in features)
    ):
        raise _bad("[platform] features must be a list of column names")
    platform = PlatformTable(
        path=local(_str(plat, "table", "[platform]")),
        id_column=_str(plat, "id", "[platform]", MERCHANT_ID),
        label=_str(plat, "label", "[platform]"),
        features=tuple(features) if features is not None else None,
    )
    if not platform.path.is_file():
        raise _bad(f"[platform] table {platform.path} does not exist")

    hold = _table(data, "holdout")
    if set(hold) - {"buckets"}:
        raise _bad("[holdout] takes only buckets")
    buckets = hold.get("buckets", DEFAULT_HOLDOUT_BUCKETS)
    if isinstance(buckets, bool) or not isinstance(buckets, int):
        raise _bad("[holdout] buckets must be an integer")
    holdout = HoldoutRule(buckets=buckets)

    isvs: list[IsvSource] = []
    for isv_id, entry in sorted(_table(data, "isvs").items()):
        where = f"[isvs.{isv_id}]"
        if not isinstance(entry, dict):
            raise _bad(f"{where} must be a table")
        extra = sorted(set(entry) - _ISV_KEYS)
        if extra:
            raise _bad(f"unknown {where} keys {extra}; expected {sorted(_ISV_KEYS)}")
        source = _str(entry, "source", where)
        mapping_path = local(_str(entry, "mapping", where)) if "mapping" in entry else None
        mapping = load_mapping(mapping_path) if mapping_path is not None else ColumnMapping()
        policy = _policy(local(_str(entry, "policy", where)), where) if "policy" in entry else None
        if "table" in entry:
            isvs.append(IsvSource(isv_id=isv_id, kind="sql", url=source,
                                  table=_str(entry, "table", where), mapping_path=mapping_path,
                                  mapping=mapping, policy=policy))
            continue
        file = local(source)
        kind = str(entry.get("kind", "csv" if file.suffix.lower() == ".csv" else "parquet"))
        if kind not in ("csv", "parquet"):
            raise _bad(f"{where} kind must be csv or parquet (or give table = ... for SQL)")
        if not file.exists():
            raise _bad(f"{where} source {file} does not exist")
        isvs.append(IsvSource(isv_id=isv_id, kind=kind, path=file, mapping_path=mapping_path,
                              mapping=mapping, policy=policy))
    if not isvs:
        raise _bad("the job config names no ISV ([isvs.<id>] tables)")
    return JobConfig(path=cfg_path.resolve(), data_from=lo, data_to=hi, platform=platform,
                     isvs=tuple(isvs), holdout=holdout)


def read_platform(cfg: JobConfig) -> pd.DataFrame:
    """The platform table with ``merchant_id`` (str), ``label`` (0/1 or NaN) and the features.

    Raises
    ------
    DataError
        ``SOURCE_UNREADABLE``, ``MISSING_COLUMNS``, ``DUPLICATE_MERCHANT``,
        ``WRONG_TYPE`` (a label other than 0, 1 or empty), ``EMPTY_COLUMN``.
    """
    p = cfg.platform
    try:
        if p.path.suffix.lower() == ".csv":
            df = pd.read_csv(p.path, dtype={p.id_column: str})
        else:
            df = pd.read_parquet(p.path)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {p.path}: {exc}", code="SOURCE_UNREADABLE") from exc
    features = list(p.features) if p.features is not None else [
        c for c in df.columns if c not in (p.id_column, p.label)
    ]
    missing = [c for c in (p.id_column, p.label, *features) if c not in df.columns]
    if missing:
        raise DataError(f"platform table {p.path.name} lacks columns {missing}",
                        code="MISSING_COLUMNS", column=missing[0])
    ids = df[p.id_column].astype(str).str.strip()
    if df[p.id_column].isna().any() or (ids == "").any():
        raise DataError(f"platform table: empty {p.id_column}", code="WRONG_TYPE",
                        column=p.id_column)
    if ids.duplicated().any():
        shown = sorted(set(ids[ids.duplicated()]))[:5]
        raise DataError(f"platform table: several rows for merchants {shown}",
                        code="DUPLICATE_MERCHANT", column=p.id_column)
    label = pd.to_numeric(df[p.label], errors="coerce")
    bad = (label.isna() & df[p.label].notna()) | ~(label.isna() | label.isin([0, 1]))
    if bad.any():
        raise DataError(f"platform label {p.label!r} must be 0, 1 or empty; got "
                        f"{df.loc[bad, p.label].head(5).tolist()}", code="WRONG_TYPE",
                        column=p.label)
    if label.notna().sum() == 0 or label.dropna().nunique() < 2:
        raise DataError(f"platform label {p.label!r} needs labelled merchants of both classes",
                        code="EMPTY_COLUMN", column=p.label)
    empty = [c for c in features if df[c].isna().all()]
    if empty:
        raise DataError(f"platform columns with no value in any row: {empty}",
                        code="EMPTY_COLUMN", column=empty[0])
    out = df[features].copy()
    out.insert(0, "label", label.astype("float64"))
    out.insert(0, MERCHANT_ID, ids.astype(str))
    return out.reset_index(drop=True)


def check_declarations(cfg: JobConfig, extras: Sequence[FieldSpec] = ()) -> None:
    """Every ISV declares each shared field identically, and every field the job uses.

    Parameters
    ----------
    cfg : JobConfig
    extras : Sequence[FieldSpec], default ()
        The job's extra fields (its spec's); the schema's optional fields need no
        declaration, every other one must be declared by every ISV exactly so.

    Raises
    ------
    DataError
        ``FIELD_MISMATCH`` (two declarations differ) or ``FIELD_NOT_DECLARED``,
        naming the ISV(s) and the field.
    """
    first: dict[str, tuple[str, FieldSpec]] = {}
    for isv in cfg.isvs:
        for name, spec in isv.mapping.declared.items():
            if name not in first:
                first[name] = (isv.isv_id, spec)
            elif first[name][1].declaration() != spec.declaration():
                other, ref = first[name]
                raise DataError(
                    f"ISV {isv.isv_id} declares {name!r} as {spec.declaration()}, ISV {other} "
                    f"as {ref.declaration()}: a field must mean the same at every node",
                    code="FIELD_MISMATCH", column=name)
    for f in extras:
        if f in ERP_OPTIONAL_FIELDS:
            continue
        for isv in cfg.isvs:
            mine = isv.mapping.declared.get(f.name)
            if mine is None:
                raise DataError(f"ISV {isv.isv_id} does not declare {f.name!r}, which the job "
                                f"uses; add [declared.{f.name}] to its mapping (or list it "
                                "under absent there as well)", code="FIELD_NOT_DECLARED",
                                column=f.name)
            if mine.declaration() != f.declaration():
                raise DataError(f"ISV {isv.isv_id} declares {f.name!r} as "
                                f"{mine.declaration()}, the job as {f.declaration()}",
                                code="FIELD_MISMATCH", column=f.name)


def check_job_config(cfg: JobConfig, extras: Sequence[FieldSpec] = ()) -> list[SourceReport]:
    """Read every table of ``cfg`` through the node's validator; one report each.

    ``extras``: the job's extra fields (:func:`check_declarations` runs first).

    Raises
    ------
    DataError
        The first table that breaks a rule; the message names the ISV.
    """
    check_declarations(cfg, extras)
    reports: list[SourceReport] = []
    plat = read_platform(cfg)
    feats = [c for c in plat.columns if c not in (MERCHANT_ID, "label")]
    reports.append(SourceReport("platform", len(plat), tuple(feats), (),
                                {c: float(plat[c].isna().mean()) for c in feats}))
    for isv in cfg.isvs:
        try:
            df = isv.connector().read(data_from=cfg.data_from, data_to=cfg.data_to)
        except DataError as exc:
            raise type(exc)(f"ISV {isv.isv_id}: {exc}", code=exc.code,
                            column=exc.column) from exc
        fields = [c for c in df.columns if c not in (MERCHANT_ID, "as_of")]
        present = tuple(f for f in fields if f not in isv.mapping.absent)
        reports.append(SourceReport(
            isv.isv_id, len(df), present, tuple(sorted(isv.mapping.absent)),
            {f: float(df[f].isna().mean()) for f in present},
        ))
    return reports
