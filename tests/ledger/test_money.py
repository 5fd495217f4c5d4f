"""Money: integer minor units with a currency; floats and mixed currencies are refused."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import CurrencyMismatch, FloatMoneyError, Money, MoneyError


def test_add_and_subtract_same_currency() -> None:
    """Adding and subtracting amounts of one currency is exact."""
    a, b = Money(1050, "CNY"), Money(25, "CNY")

    total, diff = a + b, a - b

    assert total == Money(1075, "CNY")
    assert diff == Money(1025, "CNY")


@pytest.mark.parametrize("value", [1.0, 0.5, float("nan")])
def test_float_amount_is_refused(value: float) -> None:
    """A float amount raises FloatMoneyError with code FLOAT_MONEY."""
    with pytest.raises(FloatMoneyError) as info:
        Money(value, "CNY")  # type: ignore[arg-type]
    assert info.value.code == "FLOAT_MONEY"


@pytest.mark.parametrize("value", [True, "100", Decimal("1"), None])
def test_non_int_amount_is_refused(value: Any) -> None:
    """Bools, strings, Decimals and None are not minor units."""
    with pytest.raises(MoneyError) as info:
        Money(value, "CNY")
    assert info.value.code == "NOT_INTEGER"


@pytest.mark.parametrize("currency", ["cny", "CN", "CNYY", "", "1NY", 156, "CNY\n", "\nCNY"])
def test_bad_currency_is_refused(currency: Any) -> None:
    """Only three upper-case letters are an ISO 4217 code."""
    with pytest.raises(MoneyError) as info:
        Money(1, currency)
    assert info.value.code == "INVALID_CURRENCY"


def test_float_arithmetic_is_refused() -> None:
    """Adding or multiplying by a float raises FloatMoneyError."""
    m = Money(100, "CNY")

    with pytest.raises(FloatMoneyError):
        m + 1.5  # type: ignore[operator]  # noqa: B018
    with pytest.raises(FloatMoneyError):
        m * 1.5  # noqa: B018


def test_mixing_currencies_is_refused() -> None:
    """Adding, subtracting or comparing CNY with USD raises CurrencyMismatch."""
    cny, usd = Money(100, "CNY"), Money(100, "USD")

    for op in (lambda: cny + usd, lambda: cny - usd, lambda: cny < usd, lambda: cny >= usd):
        with pytest.raises(CurrencyMismatch) as info:
            op()
        assert info.value.code == "CURRENCY_MISMATCH"


def test_division_is_refused() -> None:
    """Dividing money would lose fen: it raises LOSSY_DIVISION and points at split()."""
    with pytest.raises(MoneyError) as info:
        Money(100, "CNY") / 3  # noqa: B018
    assert info.value.code == "LOSSY_DIVISION"


def test_int_multiplication_and_negation() -> None:
    """Multiplying by an int and negating stay in the currency."""
    m = Money(7, "CNY")

    assert m * 3 == Money(21, "CNY")
    assert 3 * m == Money(21, "CNY")
    assert -m == Money(-7, "CNY")
    assert abs(-m) == m


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [(1050, "CNY", "10.50 CNY"), (-5, "CNY", "-0.05 CNY"), (1200, "JPY", "1200 JPY"),
     (1, "KWD", "0.001 KWD")],
)  # fmt: skip
def test_str_uses_minor_unit_exponent(amount: int, currency: str, text: str) -> None:
    """str() formats major units with the currency's ISO 4217 exponent."""
    assert str(Money(amount, currency)) == text


def test_from_major_is_exact() -> None:
    """Major-unit strings parse exactly; extra decimals and floats are refused."""
    assert Money.from_major("10.50", "CNY") == Money(1050, "CNY")
    assert Money.from_major(Decimal("-3"), "JPY") == Money(-3, "JPY")
    with pytest.raises(MoneyError) as info:
        Money.from_major("10.505", "CNY")
    assert info.value.code == "NOT_INTEGER"
    with pytest.raises(FloatMoneyError):
        Money.from_major(10.5, "CNY")  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        Money.from_major("ten", "CNY")


def test_total_of_empty_is_zero() -> None:
    """Money.total over nothing is zero in the currency; over items it adds them."""
    assert Money.total([], "CNY") == Money.zero("CNY")
    assert Money.total([Money(1, "CNY"), Money(2, "CNY")], "CNY") == Money(3, "CNY")
    with pytest.raises(CurrencyMismatch):
        Money.total([Money(1, "USD")], "CNY")


@given(st.integers(-(10**15), 10**15), st.integers(-(10**15), 10**15))
def test_addition_round_trips(a: int, b: int) -> None:
    """(a + b) - b == a for any amounts: integer arithmetic never drifts."""
    x, y = Money(a, "CNY"), Money(b, "CNY")

    assert (x + y) - y == x


@given(st.integers(-(10**12), 10**12))
def test_str_from_major_round_trip(amount: int) -> None:
    """Parsing str() back gives the same amount."""
    m = Money(amount, "CNY")

    assert Money.from_major(str(m).split()[0], "CNY") == m
