"""The ledger's exceptions: one tree, grouped by what a caller can do about each.

    LedgerError                      root: catch-all for ledger failures
    ├── LogError                     the transparency log
    │   ├── VerificationError        a proof, root or checkpoint does not hold (data is wrong)
    │   │   ├── RootMismatch         a recomputed root differs from the claimed one (holds both)
    │   │   ├── InvalidProof         a proof has the wrong shape for its sizes/indices
    │   │   └── NoteError            a signed note or checkpoint is malformed or badly signed
    │   ├── CheckpointRefused        signing would contradict the previous checkpoint
    │   ├── OutOfRange               a size or index beyond the log (caller can fix)
    │   ├── LogCorrupted             the stored log lacks a node it must have (operator must act)
    │   └── ExportFormatError        an export cannot be read (wrong file) or written as asked
    └── BookError                    the double-entry book
        ├── MoneyError               a money value was misused (a bug in the caller)
        │   ├── FloatMoneyError      a float met a money value (code FLOAT_MONEY)
        │   └── CurrencyMismatch     two currencies were mixed (code CURRENCY_MISMATCH)
        ├── AccountRejected          an account cannot be opened or found; ``code`` says why
        ├── TransferRejected         the request is invalid; ``code`` says why (client can fix)
        └── SplitError               a payout split cannot be made or does not add up

Each leaf carries a machine-readable ``code`` so the CLI and HTTP layers can
report it without parsing messages.
"""

from __future__ import annotations

__all__ = [
    "LedgerError",
    "LogError",
    "VerificationError",
    "CheckpointRefused",
    "RootMismatch",
    "InvalidProof",
    "NoteError",
    "OutOfRange",
    "LogCorrupted",
    "ExportFormatError",
    "BookError",
    "MoneyError",
    "FloatMoneyError",
    "CurrencyMismatch",
    "AccountRejected",
    "TransferRejected",
    "SplitError",
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
    """Signing this checkpoint would contradict an earlier one (smaller or inconsistent tree)."""

    code = "CHECKPOINT_INCONSISTENT"


class RootMismatch(VerificationError):
    """A root recomputed from a proof differs from the root it was checked against.

    ``expected`` is the root the caller trusted, ``computed`` the one the proof yields.
    """

    code = "ROOT_MISMATCH"

    def __init__(self, message: str, *, expected: bytes, computed: bytes) -> None:
        super().__init__(message)
        self.expected = expected
        self.computed = computed


class InvalidProof(VerificationError):
    """A proof cannot be checked at all: wrong length, bad hash size, impossible index or sizes."""

    code = "INVALID_PROOF"


class NoteError(VerificationError):
    """A signed note or checkpoint body is malformed, or no trusted signature verifies."""

    code = "BAD_NOTE"


class OutOfRange(LogError):
    """A requested index or tree size lies beyond the current log."""

    code = "OUT_OF_RANGE"


class LogCorrupted(LogError):
    """A stored tree node that must exist is missing: the database was altered."""

    code = "LOG_CORRUPTED"


class ExportFormatError(LogError):
    """A file is not a readable fedgate log export, or an export cannot be written as asked.

    Reading: ``BAD_EXPORT`` (bad header, version, line or encoding). Writing:
    ``NO_ORIGIN`` (no origin to name the key) and ``UNSIGNED_TAIL`` (entries
    beyond the newest checkpoint when a signed head is required).
    """

    code = "BAD_EXPORT"


class BookError(LedgerError):
    """Something about the double-entry book."""

    code = "BOOK_ERROR"


class MoneyError(BookError):
    """A money value was built or combined in a way that would lose exactness or meaning."""

    code = "MONEY_ERROR"


class FloatMoneyError(MoneyError):
    """A float was given where integer minor units are required (amounts, multipliers)."""

    code = "FLOAT_MONEY"


class CurrencyMismatch(MoneyError):
    """Two amounts in different currencies were added, subtracted or compared."""

    code = "CURRENCY_MISMATCH"


class AccountRejected(BookError):
    """An account could not be opened or found; nothing was written. ``code`` names the reason.

    Codes: ``DUPLICATE_ACCOUNT``, ``UNKNOWN_ACCOUNT``, ``INVALID_ACCOUNT``.
    """

    code = "ACCOUNT_REJECTED"


class TransferRejected(BookError):
    """A transfer request was refused; nothing was posted. ``code`` names the reason.

    Codes: ``INVALID_ID``, ``INVALID_AMOUNT``, ``INVALID_METADATA``, ``SAME_ACCOUNT``,
    ``UNKNOWN_ACCOUNT``, ``CURRENCY_MISMATCH``, ``INSUFFICIENT_FUNDS``,
    ``IDEMPOTENCY_CONFLICT``, ``INVALID_BATCH``. ``transfer_id`` names the refused
    request (for a linked batch, the first one refused).
    """

    code = "TRANSFER_REJECTED"

    def __init__(
        self, message: str, *, code: str | None = None, transfer_id: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.transfer_id = transfer_id


class SplitError(BookError):
    """A payout split got unusable weights (``INVALID_WEIGHTS``) or failed its closing check."""

    code = "SPLIT_ERROR"
