"""The federation package's exceptions: one tree, grouped by what a caller can do about each.

    FederationError                  root: catch-all for federation failures
    ├── SpecError                    an unknown model spec or a bad run-config value (fix the input)
    ├── BudgetExceeded               a job would exceed a per-job or per-merchant DP budget;
    │                                refused before it starts (wait, shrink it, pick fewer)
    ├── ReceiptInvalid               a usage receipt failed verification (tampering or a wrong key)
    ├── JobFailed                    a submitted job did not finish cleanly; ``reasons`` says why
    │                                (a node refused or failed, the ServerApp raised, ...)
    └── DataError                    ERP/platform data or a mapping is unusable (fix the input);
        │                            ``code`` names the case, ``column`` the culprit column
        ├── MappingError             a column-mapping TOML file is malformed (BAD_MAPPING)
        ├── DataValidationError      rows break the schema: MISSING_COLUMNS, EXTRA_COLUMNS,
        │                            WRONG_TYPE, NEGATIVE_VALUE, DUPLICATE_MERCHANT, OUT_OF_RANGE
        ├── DatasetUnavailable       a reference dataset is not installed (DATASET_MISSING)
        └── ModelError               weights or inputs do not fit the model (BAD_WEIGHTS, …)

Data and model errors raised by the data/ML side also derive from :class:`FederationError`.
Each class carries a machine-readable ``code``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "FederationError",
    "SpecError",
    "BudgetExceeded",
    "ReceiptInvalid",
    "JobFailed",
    "DataError",
    "MappingError",
    "DataValidationError",
    "DatasetUnavailable",
    "ModelError",
]


class FederationError(Exception):
    """Root of every federation exception."""

    code: str = "FEDERATION_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class SpecError(FederationError):
    """An unknown model spec, or a run-config value out of range."""

    code = "BAD_SPEC"


class BudgetExceeded(FederationError):
    """A job would push a job's or a merchant's ε past its budget; nothing was trained."""

    code = "BUDGET_EXCEEDED"


class ReceiptInvalid(FederationError):
    """A usage receipt's signature, format or binding to its job/round/node is wrong."""

    code = "RECEIPT_INVALID"


class JobFailed(FederationError):
    """A federated job did not complete; ``reasons`` lists ``CODE: detail`` lines.

    ``scores_path`` names the scores a scoring job did collect from the nodes that
    answered (``None`` when it wrote none), so a caller that treats a node's verified
    policy refusal as an expected outcome can keep the others' scores; ``signals_path``
    and ``receipts`` (the verified receipts' ledger bodies) do the same for a signals job.
    """

    code = "JOB_FAILED"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        reasons: Sequence[str] = (),
        scores_path: str | None = None,
        signals_path: str | None = None,
        receipts: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(message, code=code)
        self.reasons: tuple[str, ...] = tuple(reasons)
        self.scores_path = scores_path
        self.signals_path = signals_path
        self.receipts: tuple[Mapping[str, Any], ...] = tuple(receipts)


class DataError(FederationError):
    """ERP or platform data, or a column-mapping file, cannot be used as given."""

    code = "DATA_ERROR"

    def __init__(self, message: str, *, code: str | None = None, column: str | None = None) -> None:
        super().__init__(message, code=code)
        self.column = column


class MappingError(DataError):
    """A column-mapping TOML file is malformed or names unknown schema fields."""

    code = "BAD_MAPPING"


class DataValidationError(DataError):
    """Rows break the schema; ``code`` says how (missing column, negative cost, …)."""

    code = "INVALID_DATA"


class DatasetUnavailable(DataError):
    """A reference dataset's files are not installed; the message says how to install them."""

    code = "DATASET_MISSING"


class ModelError(DataError):
    """Weights or inputs do not match a model's shapes, or a model is used before it is fitted."""

    code = "BAD_WEIGHTS"
