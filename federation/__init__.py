"""fedgate federation: ERP data, models and the Flower apps that train and score on ISV nodes."""

from typing import Any

from ._errors import (
    BudgetExceeded,
    DataError,
    DatasetUnavailable,
    DataValidationError,
    FederationError,
    JobFailed,
    MappingError,
    ModelError,
    ReceiptInvalid,
    SpecError,
)
from .holdout import HOLDOUT_BUCKETS, is_holdout
from .receipts import UsageReceipt, merchant_ids_hash, sign_receipt, verify_receipt
from .specs import SPECS, DPBudget, ModelSpec, get_spec, spec_from_run_config, spec_to_run_config

# Flower apps, runner and DP pull in flwr, Ray, torch and Opacus: loaded on first use so
# that ``import federation.schema`` (CLI, data tools) stays light.
_LAZY = {
    "JobResult": "runner",
    "RoundMetrics": "runner",
    "SimulationRuntime": "runner",
    "check_budget": "runner",
    "run_job": "runner",
    "run_jobs": "runner",
    "PrivacyLedger": "dp",
    "check_job_budget": "dp",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__: list[str] = [
    # errors (Flower side)
    "FederationError",
    "SpecError",
    "BudgetExceeded",
    "ReceiptInvalid",
    "JobFailed",
    # errors (data side)
    "DataError",
    "MappingError",
    "DataValidationError",
    "DatasetUnavailable",
    "ModelError",
    # model specs
    "SPECS",
    "DPBudget",
    "ModelSpec",
    "get_spec",
    "spec_from_run_config",
    "spec_to_run_config",
    # the evaluation hold-out
    "HOLDOUT_BUCKETS",
    "is_holdout",
    # usage receipts
    "UsageReceipt",
    "merchant_ids_hash",
    "sign_receipt",
    "verify_receipt",
    # jobs and DP (lazy)
    "JobResult",
    "RoundMetrics",
    "SimulationRuntime",
    "check_budget",
    "run_job",
    "run_jobs",
    "PrivacyLedger",
    "check_job_budget",
]
