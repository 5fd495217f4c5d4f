"""Where the platform learns which merchants a job may use: the cohort source.

A :class:`CohortSource` answers one :class:`consent.Use` (naming no merchant)
with the manifest entries of every merchant whose consent allows it.
:class:`ConsentCohortSource` is the one implementation over the consent store:
each call opens a session and runs :func:`consent.cohort_entries`, so a
revocation committed before a round is never in that round's manifest. Tests
and benchmarks that measure learning rather than consent pass their own source.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from consent import ManifestEntry, Use, cohort_entries

__all__ = ["CohortSource", "ConsentCohortSource"]


class CohortSource(Protocol):
    """Where the platform learns which merchants may be used: the live consent state."""

    def entries(self, use: Use) -> list[ManifestEntry]:
        """Manifest entries (label unset) for every merchant whose consent allows ``use``."""
        ...


class ConsentCohortSource:
    """The consent store's cohort check, every artefact's signature verified.

    Parameters
    ----------
    sessions : sessionmaker[Session]
        Sessions on the platform database (consent state).
    consent_key : Ed25519PublicKey
        The consent manager's public key: a forged artefact is denied
        (``SIGNATURE_INVALID``) and never enters a manifest.
    engine : Engine | None, default None
        The engine behind ``sessions``, disposed by :meth:`close` when given.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        consent_key: Ed25519PublicKey,
        *,
        engine: Engine | None = None,
    ) -> None:
        self._sessions = sessions
        self._consent_key = consent_key
        self._engine = engine

    def entries(self, use: Use) -> list[ManifestEntry]:
        """Entries for every merchant of ``use.data_provider`` whose consent allows ``use``."""
        with self._sessions() as session:
            return list(cohort_entries(session, use, consent_manager_key=self._consent_key))

    def close(self) -> None:
        """Release the database connections (when this source owns its engine)."""
        if self._engine is not None:
            self._engine.dispose()
