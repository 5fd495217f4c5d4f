"""The ledger package's public surface is declared once, in ``__all__``."""

from __future__ import annotations

import ledger

LOG_NAMES = {
    "append_entries",
    "append_entry",
    "append_many",
    "tree_head",
    "inclusion_proof",
    "consistency_proof",
    "verify_inclusion",
    "verify_consistency",
    "root_from_inclusion_proof",
    "root_from_consistency_proof",
    "sign_checkpoint",
    "list_checkpoints",
    "open_checkpoint",
    "verify_note",
    "export_log",
    "audit_export",
    "verify_log",
    "Checkpoint",
    "AuditReport",
    "RootMismatch",
    "InvalidProof",
    "NoteError",
    "OutOfRange",
    "LogCorrupted",
    "ExportFormatError",
}


def test_all_matches_public_names() -> None:
    """Every public attribute is in __all__, once, and every name in __all__ exists."""
    public = {name for name in dir(ledger) if not name.startswith("_")}

    assert len(ledger.__all__) == len(set(ledger.__all__))
    assert set(ledger.__all__) == public


def test_log_api_is_exported() -> None:
    """The transparency-log API other packages and auditors use is all public."""
    assert set(ledger.__all__) >= LOG_NAMES


def test_log_errors_have_codes_under_log_error() -> None:
    """Each log error is a LogError with its own machine-readable code."""
    errors = [
        ledger.RootMismatch,
        ledger.InvalidProof,
        ledger.NoteError,
        ledger.OutOfRange,
        ledger.LogCorrupted,
        ledger.ExportFormatError,
        ledger.CheckpointRefused,
    ]

    codes = [e.code for e in errors]

    assert all(issubclass(e, ledger.LogError) for e in errors)
    assert len(set(codes)) == len(codes)
