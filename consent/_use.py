"""One consent query as a value: who reads whose data, for what, which categories, when.

Every consent question fedgate asks — the pure :func:`consent.evaluate`, the
database :func:`consent.check` / :func:`consent.require`, a snapshot's
:meth:`~consent.ConsentIndex.check` and :meth:`~consent.ConsentIndex.cohort`,
:func:`consent.cohort_entries` and a federation cohort source — takes one
:class:`Use`. A single check names one merchant; a cohort query names none
(every merchant of the provider) and is written ``use.for_merchant(m)`` when
one of its merchants is checked alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime

__all__ = ["Use"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Use:
    """One use of merchant data that a consent must allow.

    Parameters
    ----------
    data_provider : str
        The ISV whose data is read.
    data_consumer : str
        The lender that uses it.
    purpose : str
        Purpose code (:data:`consent.PURPOSES`).
    categories : tuple[str, ...]
        Data categories read; all must be covered. Any iterable is accepted and
        kept as a tuple.
    at : datetime
        Time of the use (timezone-aware; checked where the use is evaluated).
    merchant_id : str | None, default None
        The merchant of a single check; ``None`` for a cohort query (every merchant).
    data_range : tuple[date, date] | None, default None
        The data period read; ``None`` skips the range rule.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> use = Use(data_provider="isv0", data_consumer="bank", purpose="model_training",
    ...           categories=["margins"], at=datetime(2026, 1, 1, tzinfo=UTC))
    >>> use.for_merchant("m-1").merchant_id, use.categories
    ('m-1', ('margins',))
    """

    data_provider: str
    data_consumer: str
    purpose: str
    categories: tuple[str, ...]
    at: datetime
    merchant_id: str | None = None
    data_range: tuple[date, date] | None = None

    def __post_init__(self) -> None:
        if type(self.categories) is not tuple:
            object.__setattr__(self, "categories", tuple(self.categories))

    def for_merchant(self, merchant_id: str) -> Use:
        """This use, asked about one merchant."""
        return replace(self, merchant_id=merchant_id)

    def for_everyone(self) -> Use:
        """This use as a cohort query (no merchant named)."""
        return self if self.merchant_id is None else replace(self, merchant_id=None)

