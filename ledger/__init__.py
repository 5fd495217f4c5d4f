"""fedgate ledger: the RFC 9162 transparency log, signed checkpoints, and the double-entry book.

Public surface only; implementation lives in private modules. Helpers: add
names here with small edits and keep ``__all__`` sorted by section.
"""

from ._canonical import canonical_json, parse_canonical
from ._hasher import EMPTY_ROOT, hash_children, hash_leaf
from ._log import Entry, append_entries, append_entry
from ._errors import (
    BookError,
    CheckpointRefused,
    LedgerError,
    LogError,
    TransferRejected,
    VerificationError,
)
from ._models import LedgerBase

metadata = LedgerBase.metadata

__all__ = [
    # canonical form and hashing
    "canonical_json",
    "parse_canonical",
    "EMPTY_ROOT",
    "hash_children",
    "hash_leaf",
    # the log
    "Entry",
    "append_entries",
    "append_entry",
    # errors
    "LedgerError",
    "LogError",
    "VerificationError",
    "CheckpointRefused",
    "BookError",
    "TransferRejected",
    # storage
    "LedgerBase",
    "metadata",
]
