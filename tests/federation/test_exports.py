"""The public surface of ``federation`` is declared once, in ``__all__``, and pinned here."""

from __future__ import annotations

import federation

EXPECTED = {
    "FederationError", "SpecError", "BudgetExceeded", "ReceiptInvalid", "JobFailed",
    "DataError", "MappingError", "DataValidationError", "DatasetUnavailable", "ModelError",
    "SPECS", "DPBudget", "ModelSpec", "get_spec", "spec_from_run_config", "spec_to_run_config",
    "HOLDOUT_BUCKETS", "is_holdout",
    "UsageReceipt", "merchant_ids_hash", "sign_receipt", "verify_receipt",
    "JobResult", "RoundMetrics", "SimulationRuntime", "check_budget", "run_job", "run_jobs",
    "PrivacyLedger", "check_job_budget",
}  # fmt: skip


def test_all_is_pinned() -> None:
    """``__all__`` lists exactly the expected names, once each, and every one resolves
    (the Flower-side names lazily, on first use)."""
    assert len(federation.__all__) == len(set(federation.__all__))
    assert set(federation.__all__) == EXPECTED
    assert all(getattr(federation, name) is not None for name in federation.__all__)


def test_errors_have_one_root() -> None:
    """Every exported error derives from FederationError."""
    errors = [getattr(federation, n) for n in federation.__all__
              if n.endswith(("Error", "Exceeded", "Invalid", "Failed", "Unavailable"))]

    assert len(errors) == 10
    assert all(issubclass(e, federation.FederationError) for e in errors)
