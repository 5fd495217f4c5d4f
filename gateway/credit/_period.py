"""Periods are calendar months written ``YYYY-MM``; days are counted in them."""

from __future__ import annotations

import re
from calendar import monthrange
from datetime import date, timedelta

from ._errors import PeriodError

__all__ = ["Period", "parse_period", "period_of"]

_PERIOD = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")


class Period(str):
    """A month ``YYYY-MM``; :attr:`first` and :attr:`last` are its first and last day."""

    __slots__ = ()

    @property
    def first(self) -> date:
        """The first day of the month."""
        return date(int(self[:4]), int(self[5:7]), 1)

    @property
    def last(self) -> date:
        """The last day of the month."""
        f = self.first
        return date(f.year, f.month, monthrange(f.year, f.month)[1])

    @property
    def days(self) -> int:
        """Days in the month."""
        return self.last.day

    @property
    def next(self) -> Period:
        """The following month."""
        return period_of(self.last + timedelta(days=1))


def parse_period(text: str) -> Period:
    """``Period`` from ``YYYY-MM``; :class:`PeriodError` (``BAD_PERIOD``) otherwise."""
    if not isinstance(text, str) or not _PERIOD.fullmatch(text):
        raise PeriodError(f"period must be YYYY-MM, got {text!r}", code="BAD_PERIOD")
    return Period(text)


def period_of(day: date) -> Period:
    """The month that holds ``day``."""
    return Period(f"{day.year:04d}-{day.month:02d}")
