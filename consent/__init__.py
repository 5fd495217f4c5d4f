"""fedgate consent: signed merchant authorizations, their lifecycle, checks and cohort manifests.

Public surface only; implementation lives in private modules. ``metadata``
holds consent's own tables (``gateway.db.all_metadata`` picks it up).
"""

from ._artefact import (
    ConsentArtefact,
    Frequency,
    SignedArtefact,
    approve_artefact,
    parse_terms,
    sign_artefact,
    verify_approval,
    verify_artefact,
)
from ._bulk import ImportResult, consent_lines, import_consents
from ._check import ConsentRecord, Decision, evaluate
from ._entry_table import EntryTable, parse_entry_table
from ._errors import (
    ConsentDenied,
    ConsentError,
    ConsentIntegrityError,
    ConsentNotFound,
    ImportRefused,
    InvalidConsentRequest,
    ManifestRejected,
    TransitionRefused,
)
from ._index import Cohort, ConsentIndex, cohort_entries
from ._integrity import verify_consent_log
from ._lifecycle import ConsentEvent, ConsentState, Status, apply_event, fold_events
from ._manifest import (
    DEFAULT_CLOCK_SKEW,
    MAX_MANIFEST_TTL,
    CohortManifest,
    ManifestEntry,
    ManifestReplayGuard,
    build_manifest,
    sign_manifest,
    verify_manifest,
)
from ._models import ConsentBase
from ._reads import ConsentView, check, get_consent, list_consents, require
from ._receipt import ConsentReceipt, ReceiptNotice
from ._stream import (
    DEFAULT_CHUNK_SIZE,
    ManifestStream,
    StreamVerifier,
    open_stream,
    stream_manifest,
    verify_stream,
)
from ._use import Use
from ._uses import consent_ids_hash, count_round_uses, record_use
from ._vocab import CATEGORIES, CATEGORY_CODES, DENY_CODES, ID_PATTERN, PURPOSES, Purpose
from ._writes import Grant, activate, expire_due, grant, pause, reject, resume, revoke

metadata = ConsentBase.metadata

__all__ = [
    # vocabulary
    "CATEGORIES",
    "CATEGORY_CODES",
    "DENY_CODES",
    "ID_PATTERN",
    "PURPOSES",
    "Purpose",
    # the artefact
    "ConsentArtefact",
    "Frequency",
    "SignedArtefact",
    "parse_terms",
    "sign_artefact",
    "verify_artefact",
    "approve_artefact",
    "verify_approval",
    # lifecycle
    "Status",
    "ConsentEvent",
    "ConsentState",
    "apply_event",
    "fold_events",
    "ConsentReceipt",
    "ReceiptNotice",
    # the database
    "Grant",
    "ConsentView",
    "grant",
    "activate",
    "reject",
    "pause",
    "resume",
    "revoke",
    "record_use",
    "count_round_uses",
    "import_consents",
    "consent_lines",
    "ImportResult",
    "ImportRefused",
    "consent_ids_hash",
    "expire_due",
    "get_consent",
    "list_consents",
    "verify_consent_log",
    # checks
    "Use",
    "Decision",
    "ConsentRecord",
    "evaluate",
    "check",
    "require",
    "ConsentIndex",
    "Cohort",
    "cohort_entries",
    # cohort manifests
    "DEFAULT_CLOCK_SKEW",
    "MAX_MANIFEST_TTL",
    "CohortManifest",
    "ManifestEntry",
    "EntryTable",
    "parse_entry_table",
    "ManifestReplayGuard",
    "build_manifest",
    "sign_manifest",
    "verify_manifest",
    # streamed cohort manifests (chunks verified one by one against the signed root)
    "DEFAULT_CHUNK_SIZE",
    "ManifestStream",
    "StreamVerifier",
    "open_stream",
    "stream_manifest",
    "verify_stream",
    # errors
    "ConsentError",
    "ConsentDenied",
    "ManifestRejected",
    "InvalidConsentRequest",
    "ConsentNotFound",
    "TransitionRefused",
    "ConsentIntegrityError",
    # storage
    "ConsentBase",
    "metadata",
]
