"""The credit package's one exception tree.

* :class:`CreditError` — root of this branch (under :class:`gateway.GatewayError`);
  carries a machine-readable ``code``.

  * :class:`PolicyError` — a policy file that does not parse or breaks a range
    (``BAD_POLICY``); nothing took effect.
  * :class:`ImportRefused` — a loan-event file refused as a whole (``BAD_ROW`` with
    ``line``, ``CONFLICTING_REPEAT``, ``UNKNOWN_LOAN``, ``BAD_FILE``, ``NOT_WRITTEN_OFF``,
    ``RECOVERY_EXCEEDS_WRITE_OFF``); nothing was kept.
  * :class:`PeriodError` — a bad period string or a period that cannot be closed or
    settled (``BAD_PERIOD``, ``NOT_CLOSED``, ``ALREADY_CLOSED``).
  * :class:`NotFound` — an unknown merchant, loan or ISV (``UNKNOWN_MERCHANT``, …).
  * :class:`OffPlatformInputError` — an off-platform scores file, signals (turnover)
    file or model refused as a whole (``BAD_COLUMNS``, ``BAD_ROW``, ``BAD_TURNOVER``,
    ``NEGATIVE_TURNOVER``, ``DUPLICATE_TURNOVER``, ``DUPLICATE_SCORE``, ``BAD_MODEL``,
    ``UNKNOWN_SPEC``, ``CALIBRATION_REQUIRED``, … with ``line``); nothing was decided.
"""

from __future__ import annotations

from .._errors import GatewayError

__all__ = [
    "CreditError",
    "PolicyError",
    "ImportRefused",
    "PeriodError",
    "NotFound",
    "OffPlatformInputError",
]


class CreditError(GatewayError):
    """Root of the credit errors; ``code`` says what went wrong for machines."""


class PolicyError(CreditError):
    """The credit policy text is invalid."""


class ImportRefused(CreditError):
    """A loan-event import was refused; ``line`` is the 1-based line of the bad row, if any."""

    def __init__(self, message: str, *, code: str, line: int | None = None) -> None:
        super().__init__(message, code=code)
        self.line = line


class PeriodError(CreditError):
    """A period is malformed or not in the state the operation needs."""


class NotFound(CreditError):
    """The merchant, loan or ISV is unknown."""


class OffPlatformInputError(CreditError):
    """An off-platform input was refused; ``line`` is the 1-based line of the bad row, if any."""

    def __init__(self, message: str, *, code: str, line: int | None = None) -> None:
        super().__init__(message, code=code)
        self.line = line
