"""fedgate ledger: the RFC 9162 transparency log, signed checkpoints, and the double-entry book.

Public surface only; implementation lives in private modules. Helpers: add
names here with small edits and keep ``__all__`` sorted by section.
"""

from ._audit import audit_export
from ._audit_report import AuditFailure, AuditReport
from ._book import (
    Account,
    AccountKind,
    Transfer,
    TransferRequest,
    TrialBalance,
    TrialBalanceRow,
    balance,
    get_account,
    get_transfer,
    list_accounts,
    open_account,
    post_linked,
    post_transfer,
    transfers_of,
    trial_balance,
)
from ._bounded import MAX_JSON_DEPTH, BoundedInputError, loads_bounded
from ._bulk import MAX_BULK, BulkPosting, post_many
from ._canonical import canonical_json, parse_canonical
from ._checkpoint import Checkpoint, list_checkpoints, open_checkpoint, sign_checkpoint
from ._cosignature import (
    Cosigner,
    cosign,
    make_cosigner_vkey,
    parse_cosigner_vkey,
    verify_cosignatures,
)
from ._engine import (
    READ_ONLY_OPTION,
    make_engine,
    make_read_sessionmaker,
    make_sessionmaker,
)
from ._errors import (
    AccountRejected,
    BookError,
    CheckpointRefused,
    CurrencyMismatch,
    ExportFormatError,
    FloatMoneyError,
    InvalidProof,
    LedgerError,
    LogCorrupted,
    LogError,
    MoneyError,
    NoteError,
    OutOfRange,
    RootMismatch,
    SplitError,
    TransferRejected,
    VerificationError,
)
from ._export import ExportSummary, export_log
from ._hasher import EMPTY_ROOT, hash_children, hash_leaf
from ._log import Entry, append_entries, append_entry, append_many, copy_text
from ._models import LedgerBase
from ._money import Money
from ._note import NoteVerifier, make_vkey, parse_vkey, sign_note, verify_note
from ._payout import (
    DATA_USAGE_FEE_EXPENSE,
    EQUITY,
    INTEREST_INCOME,
    INTEREST_SHARE_EXPENSE,
    LOANS_RECEIVABLE,
    PLATFORM_CASH,
    data_usage_fee,
    interest_share,
    isv_payable,
    isv_settled,
    open_isv_accounts,
    open_standard_chart,
    settlement_cleared,
    settlement_instructed,
    split,
    split_by,
)
from ._proof import (
    ConsistencyProof,
    InclusionProof,
    TreeHead,
    consistency_proof,
    inclusion_proof,
    tree_head,
)
from ._reconcile import BookFailure, BookReport, reconcile_book
from ._verify import (
    root_from_consistency_proof,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from ._verify_log import verify_log
from ._witness import (
    MAX_REQUEST_BYTES,
    SIZE_CONTENT_TYPE,
    Witness,
    WitnessReply,
    WitnessView,
    add_checkpoint_body,
)
from ._witnessed import (
    Cosigned,
    cosignatures_of,
    cosigned_note,
    last_cosigned_size,
    store_cosignature,
    witness_request,
)

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
    "append_many",
    "copy_text",
    # proofs: generation from stored nodes
    "ConsistencyProof",
    "InclusionProof",
    "TreeHead",
    "consistency_proof",
    "inclusion_proof",
    "tree_head",
    # proofs: verification (pure)
    "root_from_consistency_proof",
    "root_from_inclusion_proof",
    "verify_consistency",
    "verify_inclusion",
    # checkpoints and signed notes
    "Checkpoint",
    "list_checkpoints",
    "open_checkpoint",
    "sign_checkpoint",
    "NoteVerifier",
    "make_vkey",
    "parse_vkey",
    "sign_note",
    "verify_note",
    # witnesses (C2SP tlog-witness, tlog-cosignature)
    "Cosigner",
    "cosign",
    "make_cosigner_vkey",
    "parse_cosigner_vkey",
    "verify_cosignatures",
    "MAX_REQUEST_BYTES",
    "SIZE_CONTENT_TYPE",
    "Witness",
    "WitnessReply",
    "WitnessView",
    "add_checkpoint_body",
    "Cosigned",
    "cosignatures_of",
    "cosigned_note",
    "last_cosigned_size",
    "store_cosignature",
    "witness_request",
    # export and audit
    "AuditFailure",
    "AuditReport",
    "ExportSummary",
    "audit_export",
    "export_log",
    "verify_log",
    # the book proven from the log
    "BookFailure",
    "BookReport",
    "reconcile_book",
    # the database engine every package opens the platform database with
    "READ_ONLY_OPTION",
    "make_engine",
    "make_read_sessionmaker",
    "make_sessionmaker",
    # bounded parsing of outside input
    "MAX_JSON_DEPTH",
    "BoundedInputError",
    "loads_bounded",
    # errors
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
    # the book
    "Money",
    "Account",
    "AccountKind",
    "TransferRequest",
    "Transfer",
    "TrialBalance",
    "TrialBalanceRow",
    "open_account",
    "get_account",
    "list_accounts",
    "post_transfer",
    "post_linked",
    "post_many",
    "BulkPosting",
    "MAX_BULK",
    "get_transfer",
    "transfers_of",
    "balance",
    "trial_balance",
    # payouts and the chart of accounts
    "split",
    "split_by",
    "PLATFORM_CASH",
    "LOANS_RECEIVABLE",
    "EQUITY",
    "INTEREST_INCOME",
    "DATA_USAGE_FEE_EXPENSE",
    "INTEREST_SHARE_EXPENSE",
    "isv_payable",
    "isv_settled",
    "open_standard_chart",
    "open_isv_accounts",
    "data_usage_fee",
    "interest_share",
    "settlement_instructed",
    "settlement_cleared",
    # storage
    "LedgerBase",
    "metadata",
]
