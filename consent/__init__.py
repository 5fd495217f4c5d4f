"""fedgate consent: signed merchant authorizations, their lifecycle, checks and cohort manifests."""

from ._errors import (
    ConsentDenied,
    ConsentError,
    ConsentIntegrityError,
    ConsentNotFound,
    InvalidConsentRequest,
    ManifestRejected,
    TransitionRefused,
)
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
from ._vocab import CATEGORIES, DENY_CODES, PURPOSES, Purpose

__all__ = [
    # vocabulary
    "CATEGORIES",
    "DENY_CODES",
    "PURPOSES",
    "Purpose",
    # cohort manifests
    "DEFAULT_CLOCK_SKEW",
    "MAX_MANIFEST_TTL",
    "CohortManifest",
    "ManifestEntry",
    "ManifestReplayGuard",
    "build_manifest",
    "sign_manifest",
    "verify_manifest",
    # errors
    "ConsentError",
    "ConsentDenied",
    "ManifestRejected",
    "InvalidConsentRequest",
    "ConsentNotFound",
    "TransitionRefused",
    "ConsentIntegrityError",
]
