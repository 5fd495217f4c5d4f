"""The ERP schema an ISV node holds and the platform schema the lending platform holds.

Every field has a unit, a storage dtype and the consent data category that
covers it. Money is stored as integer minor units (``CNY_fen``), never as
floats; ratios and day counts are floats. A manifest's consented categories
select the ERP columns a job may read (:func:`erp_fields_for`), so a node
never loads a column that no consent covers.

The category codes are exactly the consent vocabulary (``consent.CATEGORIES``);
``tax`` is a consentable category that has no ERP field yet.

Beyond the fourteen core fields a job may use **extra fields**
(:func:`extra_field`, :func:`declare_field`, :func:`job_features`):

* the schema's optional, **signed** money fields (:data:`ERP_OPTIONAL_FIELDS`:
  ``net_profit``, ``cash_flow``), where a negative value is meaningful; an ISV
  table without such a column reads it as missing for every merchant;
* fields an ISV declares itself (name, unit, integer or not, signed or not,
  consent category), the same declaration at every node.

A job's features are the core fields its consented categories cover, then the
extra fields the job names whose category is consented, in the job's order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from consent import CATEGORY_CODES

from ._errors import DataError

__all__ = [
    "MERCHANT_ID",
    "AS_OF",
    "LABEL",
    "FAKE_LABEL",
    "SECTOR",
    "SECTORS",
    "FieldSpec",
    "ERP_FIELDS",
    "ERP_FEATURES",
    "ERP_CATEGORIES",
    "PLATFORM_FIELDS",
    "PLATFORM_FEATURES",
    "ERP_OPTIONAL_FIELDS",
    "extra_field",
    "declare_field",
    "job_features",
    "erp_field",
    "erp_fields_for",
    "fields_to_json",
    "fields_from_json",
]

MERCHANT_ID = "merchant_id"
"""Column holding the merchant's id (string, the consent vocabulary's id alphabet)."""
AS_OF = "as_of"
"""Date of an ERP snapshot row; checked against the consented data range."""
LABEL = "default_12m"
"""Credit label: 1 when the merchant defaulted within 12 months of ``as_of``."""
FAKE_LABEL = "fake_trade"
"""Ground-truth fake-trade (order brushing) flag; exists only in the synthetic world."""
SECTOR = "sector"

SECTORS: tuple[str, ...] = (
    "apparel",
    "electronics",
    "food",
    "home",
    "beauty",
    "sports",
    "toys",
    "books",
)
"""Merchant sectors on the platform (categorical platform feature)."""

MONEY = "CNY_fen"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One column of a schema.

    Parameters
    ----------
    name : str
        Column name in fedgate's schema.
    unit : str
        Unit of the stored value (``CNY_fen``, ``days``, ``ratio``, ``count`` …).
    dtype : str
        Storage dtype: ``int64``, ``float64`` or ``category``.
    category : str
        Consent data category (ERP) or ``platform`` (platform fields).
    nonnegative : bool
        Whether a negative value is invalid (costs, counts, days); ``False`` for
        signed amounts (margins, net profit, cash flow).
    optional : bool, default False
        An extra field (not one of the core ERP fields): a job uses it only when
        it names it, and a table without its column reads it as missing.
    """

    name: str
    unit: str
    dtype: str
    category: str
    nonnegative: bool
    optional: bool = False

    def declaration(self) -> dict[str, object]:
        """The declaration two nodes must agree on (canonical, JSON-ready)."""
        return {"name": self.name, "unit": self.unit, "dtype": self.dtype,
                "category": self.category, "signed": not self.nonnegative}


ERP_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("monthly_revenue", MONEY, "int64", "turnover", True),
    FieldSpec("cost_of_goods", MONEY, "int64", "cost_of_goods", True),
    FieldSpec("gross_margin", "ratio", "float64", "margins", False),
    FieldSpec("operating_margin", "ratio", "float64", "margins", False),
    FieldSpec("inventory_days", "days", "float64", "inventory", True),
    FieldSpec("receivable_days", "days", "float64", "receivables", True),
    FieldSpec("payable_days", "days", "float64", "turnover", True),
    FieldSpec("labour_cost", MONEY, "int64", "labour_cost", True),
    FieldSpec("shipping_cost_per_order", MONEY, "int64", "logistics_cost", True),
    FieldSpec("orders_shipped", "count", "int64", "orders_and_shipping", True),
    FieldSpec("refunds", MONEY, "int64", "orders_and_shipping", True),
    FieldSpec("cash", MONEY, "int64", "cash_and_debt", True),
    FieldSpec("debt", MONEY, "int64", "cash_and_debt", True),
    FieldSpec("months_of_history", "months", "int64", "turnover", True),
)
"""ERP feature fields (monthly values are 12-month averages up to ``as_of``).

A node's table also carries :data:`MERCHANT_ID` (string) and :data:`AS_OF` (date).
"""

ERP_FEATURES: tuple[str, ...] = tuple(f.name for f in ERP_FIELDS)

ERP_OPTIONAL_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("net_profit", MONEY, "int64", "margins", False, optional=True),
    FieldSpec("cash_flow", MONEY, "int64", "cash_and_debt", False, optional=True),
)
"""Signed money fields (12-month averages; negative allowed), used only by jobs that name them.

``net_profit`` is revenue minus every cost; ``cash_flow`` the net operating cash flow.
"""

ERP_CATEGORIES: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {c: tuple(f.name for f in ERP_FIELDS if f.category == c) for c in CATEGORY_CODES}
)
"""Consent data category -> the ERP field names it covers (``tax`` covers none yet)."""

PLATFORM_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("sales", MONEY, "int64", "platform", True),
    FieldSpec("orders", "count", "int64", "platform", True),
    FieldSpec("visitors", "count", "int64", "platform", True),
    FieldSpec("conversion", "ratio", "float64", "platform", True),
    FieldSpec("return_rate", "ratio", "float64", "platform", True),
    FieldSpec("rating", "stars", "float64", "platform", True),
    FieldSpec("seller_online_hours", "hours", "float64", "platform", True),
    FieldSpec("tenure_months", "months", "int64", "platform", True),
    FieldSpec(SECTOR, "code", "category", "platform", False),
)
"""Platform feature fields (monthly 12-month averages); the table adds the label columns."""

PLATFORM_FEATURES: tuple[str, ...] = tuple(f.name for f in PLATFORM_FIELDS)

_ERP_BY_NAME = {f.name: f for f in (*ERP_FIELDS, *ERP_OPTIONAL_FIELDS)}
_RESERVED = {MERCHANT_ID, AS_OF, LABEL, FAKE_LABEL, *PLATFORM_FEATURES}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DTYPES = {True: "int64", False: "float64"}


def erp_field(name: str, extras: Iterable[FieldSpec] = ()) -> FieldSpec:
    """The :class:`FieldSpec` of field ``name`` (core, optional, or one of ``extras``).

    Raises ``DataError`` (``UNKNOWN_FIELD``).
    """
    for f in extras:
        if f.name == name:
            return f
    try:
        return _ERP_BY_NAME[name]
    except KeyError:
        raise DataError(f"unknown ERP field {name!r}", code="UNKNOWN_FIELD") from None


def extra_field(name: str) -> FieldSpec:
    """The schema's optional field ``name`` (:data:`ERP_OPTIONAL_FIELDS`).

    Raises ``DataError`` (``UNKNOWN_FIELD``) for any other name.
    """
    for f in ERP_OPTIONAL_FIELDS:
        if f.name == name:
            return f
    known = [f.name for f in ERP_OPTIONAL_FIELDS]
    raise DataError(f"{name!r} is not an optional ERP field; known: {known}",
                    code="UNKNOWN_FIELD")


def declare_field(
    name: str, *, unit: str, category: str, signed: bool = False, integer: bool = False
) -> FieldSpec:
    """An ISV-declared numeric field.

    Parameters
    ----------
    name : str
        Lower-case identifier (``[a-z][a-z0-9_]*``), not a schema or platform field.
    unit : str
        The unit values are stored in after the node's scale and offset
        (``CNY_fen``, ``days``, ``ratio`` …; free text, compared verbatim across nodes).
    category : str
        The consent data category that covers it; a job reads it only when consented.
    signed : bool, default False
        Whether negative values are meaningful; otherwise a negative is ``NEGATIVE_VALUE``.
    integer : bool, default False
        Stored as a whole number (money in fen, counts); values are rounded.

    Raises
    ------
    DataError
        ``BAD_FIELD`` for a bad name, a clash with a schema field, an empty unit or
        an unknown category.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise DataError(f"declared field name {name!r} must match [a-z][a-z0-9_]*",
                        code="BAD_FIELD", column=str(name))
    if name in _ERP_BY_NAME or name in _RESERVED:
        raise DataError(f"declared field {name!r} clashes with a schema field",
                        code="BAD_FIELD", column=name)
    if not isinstance(unit, str) or not unit.strip():
        raise DataError(f"declared field {name!r} needs a unit", code="BAD_FIELD", column=name)
    if category not in ERP_CATEGORIES:
        raise DataError(f"declared field {name!r}: unknown consent category {category!r}",
                        code="BAD_FIELD", column=name)
    if not isinstance(signed, bool) or not isinstance(integer, bool):
        raise DataError(f"declared field {name!r}: signed and integer are true or false",
                        code="BAD_FIELD", column=name)
    return FieldSpec(name, unit, _DTYPES[integer], category, not signed, optional=True)


def job_features(categories: Iterable[str], extras: Sequence[FieldSpec] = ()) -> list[str]:
    """A job's feature columns: the core fields ``categories`` cover, then the consented extras.

    Raises ``DataError`` (``UNKNOWN_CATEGORY``) like :func:`erp_fields_for`.
    """
    wanted = set(categories)
    return [*erp_fields_for(wanted), *(f.name for f in extras if f.category in wanted)]


def fields_to_json(extras: Sequence[FieldSpec]) -> str:
    """The extra fields as canonical JSON (the ``extra-fields`` run-config value)."""
    return json.dumps([f.declaration() for f in extras], sort_keys=True, separators=(",", ":"))


def fields_from_json(text: str) -> tuple[FieldSpec, ...]:
    """Parse :func:`fields_to_json` output; optional schema fields must match the schema.

    Raises ``DataError`` (``BAD_FIELD``) on malformed input.
    """
    try:
        items = json.loads(text or "[]")
    except ValueError as exc:
        raise DataError(f"extra fields are not JSON: {exc}", code="BAD_FIELD") from exc
    if not isinstance(items, list) or not all(
        isinstance(d, dict) and set(d) == {"name", "unit", "dtype", "category", "signed"}
        for d in items
    ):
        raise DataError("extra fields must be a list of declarations", code="BAD_FIELD")
    out: list[FieldSpec] = []
    for d in items:
        if d["name"] in _ERP_BY_NAME:
            f = _ERP_BY_NAME[d["name"]]
            if not f.optional or f.declaration() != d:
                raise DataError(f"extra field {d['name']!r} differs from the schema's",
                                code="FIELD_MISMATCH", column=str(d["name"]))
        else:
            if d["dtype"] not in ("int64", "float64"):
                raise DataError(f"extra field {d['name']!r}: bad dtype", code="BAD_FIELD")
            f = declare_field(d["name"], unit=d["unit"], category=d["category"],
                              signed=d["signed"], integer=d["dtype"] == "int64")
        out.append(f)
    names = [f.name for f in out]
    if len(set(names)) != len(names):
        raise DataError(f"extra fields named twice: {names}", code="BAD_FIELD")
    return tuple(out)


def erp_fields_for(categories: Iterable[str]) -> list[str]:
    """The ERP feature columns that the consented ``categories`` allow, in schema order.

    Parameters
    ----------
    categories : Iterable[str]
        Consent data category codes (a manifest's categories).

    Returns
    -------
    list[str]
        Field names in :data:`ERP_FIELDS` order; empty when no category covers a field.

    Raises
    ------
    DataError
        ``UNKNOWN_CATEGORY`` when a code is not a consent data category.
    """
    wanted = set(categories)
    unknown = sorted(wanted - ERP_CATEGORIES.keys())
    if unknown:
        raise DataError(f"unknown data categories: {unknown}", code="UNKNOWN_CATEGORY")
    return [f.name for f in ERP_FIELDS if f.category in wanted]
