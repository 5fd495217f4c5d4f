"""The ledger's exceptions: one tree, grouped by what a caller can do about each.

    LedgerError                      root: catch-all for ledger failures
    ├── LogError                     the transparency log
    │   ├── VerificationError        a proof, root or checkpoint does not hold (data is wrong)
    │   └── CheckpointRefused        signing would contradict the previous checkpoint
    └── BookError                    the double-entry book
        └── TransferRejected         the request is invalid; ``code`` says why (client can fix)

Each leaf carries a machine-readable ``code`` so the CLI and HTTP layers can
report it without parsing messages.
"""

from __future__ import annotations

__all__ = [
    "LedgerError",
    "LogError",
    "VerificationError",
    "CheckpointRefused",
    "BookError",
    "TransferRejected",
]


class LedgerError(Exception):
    """Root of every ledger exception."""

    code: str = "LEDGER_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class LogError(LedgerError):
    """Something about the transparency log."""

    code = "LOG_ERROR"


class VerificationError(LogError):
    """A proof, a root, a leaf or a checkpoint signature does not verify."""

    code = "VERIFICATION_FAILED"


class CheckpointRefused(LogError):
    """Signing this checkpoint would contradict an earlier one (smaller size or inconsistent root)."""

    code = "CHECKPOINT_INCONSISTENT"


class BookError(LedgerError):
    """Something about the double-entry book."""

    code = "BOOK_ERROR"


class TransferRejected(BookError):
    """A transfer request was refused; nothing was posted. ``code`` names the reason."""

    code = "TRANSFER_REJECTED"
