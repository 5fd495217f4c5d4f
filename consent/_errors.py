"""The consent package's exceptions: one tree, grouped by what a caller can do about each.

    ConsentError                     root: catch-all for consent failures
    ├── ConsentDenied                a check said no; ``code`` is the deny code (callers catch this)
    ├── ManifestRejected             a node refused a cohort manifest; ``code`` says why
    ├── InvalidConsentRequest        bad input, refused before anything was stored (client can fix)
    │   ├── ConsentNotFound          no consent with that id
    │   ├── TransitionRefused        the consent's status does not allow this transition
    │   └── ImportRefused            a bulk import's line is bad; ``line`` names it, nothing stored
    └── ConsentIntegrityError        stored records contradict themselves or their signature (a bug
                                     or tampering; never the caller's fault)

Each class carries a machine-readable ``code`` so the CLI and HTTP layers can
report it without parsing messages.
"""

from __future__ import annotations

__all__ = [
    "ConsentError",
    "ConsentDenied",
    "ManifestRejected",
    "InvalidConsentRequest",
    "ConsentNotFound",
    "TransitionRefused",
    "ConsentIntegrityError",
    "ImportRefused",
]


class ConsentError(Exception):
    """Root of every consent exception."""

    code: str = "CONSENT_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class ConsentDenied(ConsentError):
    """A consent check denied the use; ``code`` is one of :data:`consent.DENY_CODES`."""

    code = "NO_CONSENT"


class ManifestRejected(ConsentError):
    """A node refused a cohort manifest; nothing in it may be used.

    ``code`` is one of ``SIGNATURE_INVALID``, ``MALFORMED``, ``EXPIRED``,
    ``NOT_YET_VALID``, ``WRONG_PROVIDER``, ``STALE_ROUND`` (a round below the
    job's highest accepted one), ``REPLAYED`` (another manifest for a round
    already accepted), ``ROOT_MISMATCH``, ``ENTRY_INVALID``; for a streamed
    manifest also ``CHUNK_FOREIGN`` (a chunk of another manifest), ``CHUNK_ORDER``
    (reordered, duplicated or extra) and ``CHUNK_MISSING``.
    """

    code = "MALFORMED"


class InvalidConsentRequest(ConsentError):
    """A request was refused for its content; nothing was stored."""

    code = "INVALID_REQUEST"


class ConsentNotFound(InvalidConsentRequest):
    """No consent with the given id exists."""

    code = "NOT_FOUND"


class TransitionRefused(InvalidConsentRequest):
    """The consent's current status does not allow the requested transition."""

    code = "INVALID_TRANSITION"


class ConsentIntegrityError(ConsentError):
    """Stored consent records are inconsistent (bad signature, broken event order)."""

    code = "INTEGRITY"


class ImportRefused(InvalidConsentRequest):
    """A line of a bulk import is bad; nothing was written. ``line`` is 1-based."""

    def __init__(self, message: str, *, code: str, line: int) -> None:
        super().__init__(f"line {line}: {message}", code=code)
        self.line = line
