"""Tests for the ERP and platform schemas."""

from __future__ import annotations

import pytest

import consent
from federation import schema
from federation._errors import DataError


def test_erp_categories_are_consent_vocabulary() -> None:
    """Every ERP category code is a consent data category, and every consent category is keyed."""
    keys = set(schema.ERP_CATEGORIES)

    assert keys == set(consent.CATEGORIES)


def test_every_erp_field_is_in_exactly_one_category() -> None:
    """The categories partition the ERP fields."""
    covered = [n for names in schema.ERP_CATEGORIES.values() for n in names]

    assert sorted(covered) == sorted(schema.ERP_FEATURES)


def test_money_fields_are_integer_fen() -> None:
    """Money is stored as integer minor units, never floats."""
    money = [f for f in schema.ERP_FIELDS + schema.PLATFORM_FIELDS if f.unit == "CNY_fen"]

    assert money and all(f.dtype == "int64" for f in money)


def test_erp_fields_for_selects_in_schema_order() -> None:
    """Consented categories select their fields in schema order."""
    fields = schema.erp_fields_for(["cash_and_debt", "margins"])

    assert fields == ["gross_margin", "operating_margin", "cash", "debt"]


def test_erp_fields_for_tax_only_is_empty() -> None:
    """A category without ERP fields selects nothing."""
    assert schema.erp_fields_for(["tax"]) == []


def test_erp_fields_for_unknown_category_raises() -> None:
    """An unknown category code is refused with a code."""
    with pytest.raises(DataError) as err:
        schema.erp_fields_for(["margins", "browsing_history"])

    assert err.value.code == "UNKNOWN_CATEGORY"


def test_federation_exports_data_errors() -> None:
    """The data-side error classes are exported by federation and share its root."""
    import federation

    names = {"DataError", "MappingError", "DataValidationError", "DatasetUnavailable",
             "ModelError"}

    assert names <= set(federation.__all__)
    assert all(issubclass(getattr(federation, n), federation.FederationError) for n in names)
