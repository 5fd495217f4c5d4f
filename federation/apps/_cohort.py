"""The ServerApp's default cohort source: the consent store named by the run config."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .._errors import FederationError
from ..cohort import ConsentCohortSource
from ._db import open_sessions
from ._keyfiles import load_public_key

__all__ = ["consent_cohort_source", "cohort_source_from_run_config"]


def consent_cohort_source(db_url: str, consent_key: Ed25519PublicKey) -> ConsentCohortSource:
    """The consent package's cohort check over the platform database.

    Parameters
    ----------
    db_url : str
        The platform database (consent state).
    consent_key : Ed25519PublicKey
        The consent manager's public key: every artefact's signature is verified,
        so a forged one is denied (``SIGNATURE_INVALID``) and never enters a manifest.
    """
    engine, sessions = open_sessions(db_url)
    return ConsentCohortSource(sessions, consent_key, engine=engine)


def cohort_source_from_run_config(rc: Mapping[str, Any]) -> ConsentCohortSource:
    """:func:`consent_cohort_source` on ``db-url``, verifying with the ``consent-key`` PEM.

    Raises
    ------
    FederationError
        ``BAD_CONFIG`` when ``db-url`` or ``consent-key`` is missing or the key unreadable.
    """
    if not rc.get("db-url") or not rc.get("consent-key"):
        raise FederationError(
            "run config needs db-url and consent-key (the consent manager's public key PEM) "
            "to read the cohort from consent",
            code="BAD_CONFIG",
        )
    return consent_cohort_source(str(rc["db-url"]), load_public_key(Path(str(rc["consent-key"]))))
