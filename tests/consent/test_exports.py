"""The public surface of ``consent`` is declared once and pinned here."""

from __future__ import annotations

import consent

EXPECTED = {
    "CATEGORIES", "CATEGORY_CODES", "DENY_CODES", "ID_PATTERN", "PURPOSES", "Purpose",
    "ConsentArtefact", "Frequency", "SignedArtefact", "parse_terms", "sign_artefact",
    "verify_artefact", "approve_artefact", "verify_approval",
    "Status", "ConsentEvent", "ConsentState", "apply_event", "fold_events", "ConsentReceipt",
    "ReceiptNotice",
    "Grant", "ConsentView", "grant", "activate", "reject", "pause", "resume", "revoke",
    "record_use", "count_round_uses",
        "import_consents",
        "consent_lines",
        "ImportResult",
        "ImportRefused", "consent_ids_hash", "expire_due", "get_consent", "list_consents",
        "verify_consent_log",
    "Use", "Decision", "ConsentRecord", "evaluate", "check", "require",
    "ConsentIndex", "Cohort", "cohort_entries",
    "DEFAULT_CLOCK_SKEW", "MAX_MANIFEST_TTL", "CohortManifest", "ManifestEntry",
    "EntryTable", "parse_entry_table",
    "ManifestReplayGuard", "build_manifest", "sign_manifest", "verify_manifest",
    "DEFAULT_CHUNK_SIZE", "ManifestStream", "StreamVerifier", "open_stream", "stream_manifest",
    "verify_stream",
    "ConsentError", "ConsentDenied", "ManifestRejected", "InvalidConsentRequest",
    "ConsentNotFound", "TransitionRefused", "ConsentIntegrityError",
    "ConsentBase", "metadata",
}  # fmt: skip


def test_all_is_pinned() -> None:
    """``__all__`` lists exactly the expected names, once each, and every one exists."""
    assert len(consent.__all__) == len(set(consent.__all__))
    assert set(consent.__all__) == EXPECTED
    assert all(hasattr(consent, name) for name in consent.__all__)


def test_public_names_are_defined_in_all() -> None:
    """Every public attribute of the package is declared in ``__all__``."""
    public = {n for n in vars(consent) if not n.startswith("_")}

    assert public == set(consent.__all__)


def test_error_tree_has_one_root_and_codes() -> None:
    """Every consent exception derives from ConsentError and carries a code."""
    errors = [getattr(consent, n) for n in consent.__all__ if n.endswith(("Error", "Denied",
              "Rejected", "Request", "NotFound", "Refused"))]  # fmt: skip

    assert len(errors) == 8
    assert all(issubclass(e, consent.ConsentError) and isinstance(e.code, str) for e in errors)
