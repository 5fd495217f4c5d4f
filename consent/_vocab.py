"""The fixed vocabulary: purposes (with W3C DPV IRIs and duration caps), data categories, ids.

Codes are short ASCII strings so that they can be written into canonical JSON
without escaping; identifiers are restricted to the same safe alphabet for the
same reason (and so a manifest entry's canonical bytes can be produced by a
format string that provably equals RFC 8785 output).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, date, datetime
from types import MappingProxyType

__all__ = [
    "Purpose",
    "add_years",
    "PURPOSES",
    "CATEGORIES",
    "CATEGORY_CODES",
    "DENY_CODES",
    "ID_PATTERN",
    "is_valid_id",
    "format_time",
    "parse_time",
    "format_date",
    "parse_date",
]

DPV = "https://w3id.org/dpv#"


@dataclass(frozen=True, slots=True)
class Purpose:
    """A purpose a merchant can consent to.

    Parameters
    ----------
    code : str
        The short code used in artefacts, checks and manifests.
    dpv_iri : str
        The W3C Data Privacy Vocabulary purpose it maps to.
    max_years : int
        The longest consent window, in calendar years from ``consent_start``
        (see :meth:`latest_expiry`).
    """

    code: str
    dpv_iri: str
    max_years: int

    def latest_expiry(self, start: datetime) -> datetime:
        """The latest ``consent_expiry`` allowed for a consent starting at ``start``."""
        return add_years(start, self.max_years)


def add_years(at: datetime, years: int) -> datetime:
    """``at`` moved ``years`` calendar years on; 29 February becomes 28 February.

    A fixed number of days cannot express "one year": 366 days lets a
    one-year consent run a day over in a common year, 365 lets a leap year's
    consent fall short. Past year 9999 there is no later datetime, so the
    latest representable one (in ``at``'s zone) is returned.
    """
    year = at.year + years
    if year > MAXYEAR:
        return datetime.max.replace(tzinfo=at.tzinfo)
    try:
        return at.replace(year=year)
    except ValueError:  # 29 February into a common year
        return at.replace(year=year, day=28)


PURPOSES: MappingProxyType[str, Purpose] = MappingProxyType(
    {
        p.code: p
        for p in (
            Purpose("credit_scoring", DPV + "CreditChecking", 1),
            Purpose("model_training", DPV + "ResearchAndDevelopment", 1),
            Purpose("post_loan_monitoring", DPV + "MaintainCreditCheckingDatabase", 5),
            Purpose("fraud_detection", DPV + "FraudPreventionAndDetection", 2),
            Purpose("identity_verification", DPV + "IdentityVerification", 1),
        )
    }
)
"""Known purposes by code; an artefact naming any other code is refused."""

CATEGORY_CODES: tuple[str, ...] = (
    "cost_of_goods",
    "margins",
    "turnover",
    "inventory",
    "receivables",
    "labour_cost",
    "logistics_cost",
    "cash_and_debt",
    "orders_and_shipping",
    "tax",
)
"""The ERP field groups a consent can cover, in the ERP schema's order (the one list:
``federation.schema`` and ``federation.specs`` read it)."""

CATEGORIES: frozenset[str] = frozenset(CATEGORY_CODES)
"""ERP field groups a consent can cover."""

DENY_CODES: tuple[str, ...] = (
    "NO_CONSENT",
    "NOT_YET_VALID",
    "EXPIRED",
    "PAUSED",
    "REVOKED",
    "PURPOSE_NOT_COVERED",
    "CATEGORY_NOT_COVERED",
    "RANGE_NOT_COVERED",
    "FREQUENCY_EXCEEDED",
    "SIGNATURE_INVALID",
    "SUPERSEDED",
)
"""Every code a denied :class:`~consent.Decision` can carry (exactly one per denial)."""

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
"""Ids: 1-128 characters of a JSON-safe alphabet, starting alphanumeric."""


def is_valid_id(value: object) -> bool:
    """True when ``value`` is a string id that :data:`ID_PATTERN` fully matches."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def format_time(at: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z`` (the ledger's format); ``at`` must be aware."""
    text = at.isoformat(timespec="microseconds")
    # Fast path: already UTC (the common case, one C call); otherwise convert first.
    if text.endswith("+00:00"):
        return text[:-6] + "Z"
    if at.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_time(text: object) -> datetime:
    """Parse exactly the :func:`format_time` form; anything else raises ``ValueError``."""
    if not isinstance(text, str) or _TIME_RE.fullmatch(text) is None:
        raise ValueError(f"not a UTC time of the form YYYY-MM-DDTHH:MM:SS.ffffffZ: {text!r}")
    return datetime.fromisoformat(text)


def format_date(day: date) -> str:
    """ISO 8601 calendar date."""
    return day.isoformat()


def parse_date(text: object) -> date:
    """Parse exactly ``YYYY-MM-DD``; anything else raises ``ValueError``."""
    if not isinstance(text, str) or _DATE_RE.fullmatch(text) is None:
        raise ValueError(f"not a date of the form YYYY-MM-DD: {text!r}")
    return date.fromisoformat(text)
