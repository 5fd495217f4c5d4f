"""Consent receipts: what every lifecycle transition hands back (Kantara / ISO/IEC 27560 style).

A receipt is derived from the ledger entry written with the transition, so an
auditor can recompute it: ``receipt_id`` is a UUIDv5 of the entry's leaf hash.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ._artefact import ConsentArtefact
from ._vocab import PURPOSES, format_time

__all__ = ["ConsentReceipt", "RECEIPT_VERSION", "make_receipt"]

RECEIPT_VERSION: Final = "KI-CR-v1.1.0"
"""The Kantara Consent Receipt specification version whose fields these follow."""

_NAMESPACE: Final = uuid.UUID("6f1c7a3e-4c1b-5d0e-9a55-0f6b0c6e7a21")


@dataclass(frozen=True, slots=True)
class ConsentReceipt:
    """Proof handed to the parties that a consent transition was recorded.

    Parameters
    ----------
    receipt_id : str
        UUIDv5 of the ledger leaf hash (recomputable from the log).
    timestamp : datetime
        When the transition happened.
    principal : str
        The merchant (the PII principal in Kantara terms).
    controller : str
        The data consumer (the lender) that uses the data.
    data_provider : str
        The ISV that holds the data.
    consent_id, artefact_hash : str
        The consent and its signed artefact.
    purposes : tuple[tuple[str, str], ...]
        ``(code, W3C DPV IRI)`` pairs.
    categories : tuple[str, ...]
        Data categories covered.
    transition : str
        The ledger entry kind, e.g. ``consent.revoked``.
    status : str
        The consent's status after the transition.
    ledger_seq : int
        Sequence number of the ledger entry.
    ledger_leaf_hash : str
        Hex leaf hash of that entry.
    version : str, default ``RECEIPT_VERSION``
    """

    receipt_id: str
    timestamp: datetime
    principal: str
    controller: str
    data_provider: str
    consent_id: str
    artefact_hash: str
    purposes: tuple[tuple[str, str], ...]
    categories: tuple[str, ...]
    transition: str
    status: str
    ledger_seq: int
    ledger_leaf_hash: str
    version: str = RECEIPT_VERSION

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times in RFC 3339 UTC)."""
        return {
            "version": self.version,
            "receipt_id": self.receipt_id,
            "timestamp": format_time(self.timestamp),
            "principal": self.principal,
            "controller": self.controller,
            "data_provider": self.data_provider,
            "consent_id": self.consent_id,
            "artefact_hash": self.artefact_hash,
            "purposes": [{"code": c, "dpv": iri} for c, iri in self.purposes],
            "categories": list(self.categories),
            "transition": self.transition,
            "status": self.status,
            "ledger_seq": self.ledger_seq,
            "ledger_leaf_hash": self.ledger_leaf_hash,
        }


def make_receipt(
    artefact: ConsentArtefact,
    artefact_hash: str,
    *,
    transition: str,
    status: str,
    at: datetime,
    ledger_seq: int,
    leaf_hash: bytes,
) -> ConsentReceipt:
    """Build the receipt for one recorded transition."""
    return ConsentReceipt(
        receipt_id=str(uuid.uuid5(_NAMESPACE, leaf_hash.hex())),
        timestamp=at,
        principal=artefact.merchant_id,
        controller=artefact.data_consumer,
        data_provider=artefact.data_provider,
        consent_id=artefact.consent_id,
        artefact_hash=artefact_hash,
        purposes=tuple((p, PURPOSES[p].dpv_iri) for p in artefact.purposes),
        categories=artefact.categories,
        transition=transition,
        status=status,
        ledger_seq=ledger_seq,
        ledger_leaf_hash=leaf_hash.hex(),
    )
