"""Money: integer minor units with an ISO 4217 currency, never a float.

Arithmetic stays exact because nothing but ``int`` ever enters it: a float
raises :class:`FloatMoneyError`, mixing currencies raises
:class:`CurrencyMismatch`. Modelled on hordak's ``Balance``, but with one
currency per value; sums over several currencies are kept as a mapping by the
caller (see :func:`ledger.trial_balance`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ._errors import CurrencyMismatch, FloatMoneyError, MoneyError

__all__ = ["Money", "minor_unit_exponent"]

# Used with fullmatch: "$" would also accept a trailing newline ("CNY\n").
_CURRENCY = re.compile(r"[A-Z]{3}")

# ISO 4217 minor-unit exponents that differ from the default of 2. Only used to
# format and parse major units; stored amounts are always minor units.
_EXPONENTS: dict[str, int] = {
    "BHD": 3, "CLP": 0, "IQD": 3, "ISK": 0, "JOD": 3, "JPY": 0, "KMF": 0, "KRW": 0,
    "KWD": 3, "LYD": 3, "OMR": 3, "PYG": 0, "RWF": 0, "TND": 3, "UGX": 0, "VND": 0,
    "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
}  # fmt: skip


def minor_unit_exponent(currency: str) -> int:
    """Digits after the decimal point for ``currency`` (2 unless ISO 4217 says otherwise)."""
    return _EXPONENTS.get(currency, 2)


def _check_int(value: object, what: str) -> int:
    """``value`` if it is a plain ``int``; a typed error otherwise (bool is not money)."""
    if isinstance(value, float):
        raise FloatMoneyError(f"{what} must be integer minor units, got float {value!r}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise MoneyError(f"{what} must be an int, got {type(value).__name__}", code="NOT_INTEGER")
    return value


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount: ``amount`` minor units (fen, cents) of ``currency``.

    Parameters
    ----------
    amount : int
        Minor units; may be zero or negative (balances can be). Floats are refused
        with :class:`FloatMoneyError`, other non-integers with ``MoneyError(code="NOT_INTEGER")``.
    currency : str
        ISO 4217 alphabetic code, three upper-case letters (``"CNY"``).

    Examples
    --------
    >>> Money(1050, "CNY") + Money(25, "CNY")
    Money(amount=1075, currency='CNY')
    >>> str(Money(-1050, "CNY"))
    '-10.50 CNY'
    """

    amount: int
    currency: str

    def __post_init__(self) -> None:
        _check_int(self.amount, "amount")
        if not isinstance(self.currency, str) or not _CURRENCY.fullmatch(self.currency):
            raise MoneyError(
                f"currency must be an ISO 4217 code like 'CNY', got {self.currency!r}",
                code="INVALID_CURRENCY",
            )

    # -- construction -------------------------------------------------------------

    @classmethod
    def zero(cls, currency: str) -> Money:
        """Zero in ``currency``."""
        return cls(0, currency)

    @classmethod
    def from_major(cls, value: str | Decimal, currency: str) -> Money:
        """Parse major units exactly (``"10.50"`` CNY → 1050 fen); refuses lost digits.

        Parameters
        ----------
        value : str | Decimal
            A decimal string or ``Decimal``; floats are refused.
        currency : str
            ISO 4217 code; its minor-unit exponent decides the scaling.
        """
        if isinstance(value, float):
            raise FloatMoneyError(f"major units must be a str or Decimal, got float {value!r}")
        try:
            dec = Decimal(value)
        except ArithmeticError as exc:
            raise MoneyError(f"not a decimal amount: {value!r}", code="NOT_INTEGER") from exc
        scaled = dec.scaleb(minor_unit_exponent(currency))
        if not scaled.is_finite() or scaled != scaled.to_integral_value():
            raise MoneyError(
                f"{value!r} has more decimals than {currency} allows", code="NOT_INTEGER"
            )
        return cls(int(scaled), currency)

    @staticmethod
    def total(items: Iterable[Money], currency: str) -> Money:
        """Sum ``items``, all in ``currency`` (an empty iterable gives zero)."""
        acc = Money.zero(currency)
        for item in items:
            acc = acc + item
        return acc

    # -- arithmetic ---------------------------------------------------------------

    def _same(self, other: object, op: str) -> Money:
        if isinstance(other, float):
            raise FloatMoneyError(f"cannot {op} a float and money ({other!r})")
        if not isinstance(other, Money):
            raise MoneyError(f"cannot {op} money and {type(other).__name__}", code="NOT_MONEY")
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot {op} {self.currency} and {other.currency}")
        return other

    def __add__(self, other: object) -> Money:
        return Money(self.amount + self._same(other, "add").amount, self.currency)

    def __sub__(self, other: object) -> Money:
        return Money(self.amount - self._same(other, "subtract").amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __abs__(self) -> Money:
        return Money(abs(self.amount), self.currency)

    def __mul__(self, factor: object) -> Money:
        return Money(self.amount * _check_int(factor, "multiplier"), self.currency)

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> Any:
        raise MoneyError(
            "dividing money loses fen; use ledger.split() for an exact share-out",
            code="LOSSY_DIVISION",
        )

    def __lt__(self, other: object) -> bool:
        return self.amount < self._same(other, "compare").amount

    def __le__(self, other: object) -> bool:
        return self.amount <= self._same(other, "compare").amount

    def __gt__(self, other: object) -> bool:
        return self.amount > self._same(other, "compare").amount

    def __ge__(self, other: object) -> bool:
        return self.amount >= self._same(other, "compare").amount

    def __bool__(self) -> bool:
        return self.amount != 0

    def __str__(self) -> str:
        exp = minor_unit_exponent(self.currency)
        sign = "-" if self.amount < 0 else ""
        units, minor = divmod(abs(self.amount), 10**exp)
        body = f"{units}.{minor:0{exp}d}" if exp else str(units)
        return f"{sign}{body} {self.currency}"
