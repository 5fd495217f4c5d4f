"""The ERP schema an ISV node holds and the platform schema the lending platform holds.

Every field has a unit, a storage dtype and the consent data category that
covers it. Money is stored as integer minor units (``CNY_fen``), never as
floats; ratios and day counts are floats. A manifest's consented categories
select the ERP columns a job may read (:func:`erp_fields_for`), so a node
never loads a column that no consent covers.

The category codes are exactly the consent vocabulary (``consent.CATEGORIES``);
``tax`` is a consentable category that has no ERP field yet.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    "erp_field",
    "erp_fields_for",
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
        Whether a negative value is invalid (costs, counts, days).
    """

    name: str
    unit: str
    dtype: str
    category: str
    nonnegative: bool


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

_ERP_BY_NAME = {f.name: f for f in ERP_FIELDS}


def erp_field(name: str) -> FieldSpec:
    """The :class:`FieldSpec` of ERP field ``name``; raises ``DataError`` (``UNKNOWN_FIELD``)."""
    try:
        return _ERP_BY_NAME[name]
    except KeyError:
        raise DataError(f"unknown ERP field {name!r}", code="UNKNOWN_FIELD") from None


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
