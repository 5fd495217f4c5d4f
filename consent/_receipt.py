"""Consent receipts: what every lifecycle transition hands back (Kantara / ISO/IEC 27560 style).

A receipt is derived from the ledger entry written with the transition, so an
auditor can recompute it: ``receipt_id`` is a UUIDv5 of the entry's leaf hash.
The notice fields a Kantara receipt carries that the artefact does not
(jurisdiction, language, privacy-policy URL, the controller's contact, how
consent was collected) come from a :class:`ReceiptNotice` that the caller
passes in (the gateway builds one from its settings); the defaults below are
only for the embedded demo and tests.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ._artefact import ConsentArtefact
from ._vocab import PURPOSES, format_time

__all__ = [
    "ConsentReceipt",
    "ReceiptNotice",
    "RECEIPT_VERSION",
    "DEFAULT_NOTICE",
    "make_receipt",
]

RECEIPT_VERSION: Final = "KI-CR-v1.1.0"
"""The Kantara Consent Receipt specification version whose fields these follow."""

DEFAULT_JURISDICTION: Final = "CN"
DEFAULT_LANGUAGE: Final = "zh-CN"
DEFAULT_POLICY_URL: Final = "https://fedgate.example/privacy"
DEFAULT_CONTROLLER_CONTACT: Final = "privacy@fedgate.example"
DEFAULT_COLLECTION_METHOD: Final = "platform consent form, signed by the consent manager"

_NAMESPACE: Final = uuid.UUID("6f1c7a3e-4c1b-5d0e-9a55-0f6b0c6e7a21")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptNotice:
    """The notice a receipt states: where, in what language, under which policy, whom to ask.

    Parameters
    ----------
    jurisdiction : str, default ``"CN"``
        Where the controller operates (Kantara ``jurisdiction``).
    language : str, default ``"zh-CN"``
        BCP 47 language of the notice the merchant saw (Kantara ``language``).
    policy_url : str, default ``"https://fedgate.example/privacy"``
        The privacy policy that governs the processing (Kantara ``policyUrl``).
    controller_contact : str, default ``"privacy@fedgate.example"``
        How the merchant reaches the controller (Kantara ``piiControllers[].contact``).
    collection_method : str, default a platform consent form
        How the consent was collected (Kantara ``collectionMethod``).
    """

    jurisdiction: str = DEFAULT_JURISDICTION
    language: str = DEFAULT_LANGUAGE
    policy_url: str = DEFAULT_POLICY_URL
    controller_contact: str = DEFAULT_CONTROLLER_CONTACT
    collection_method: str = DEFAULT_COLLECTION_METHOD

    def __post_init__(self) -> None:
        """Refuse empty fields: a receipt that names no policy or contact is no notice."""
        for name in (
            "jurisdiction",
            "language",
            "policy_url",
            "controller_contact",
            "collection_method",
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"ReceiptNotice.{name} must be a non-empty string")


DEFAULT_NOTICE: Final = ReceiptNotice()


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
    data_life_days : int
        How long data derived from a use may be kept (the signed term).
    notice : ReceiptNotice, default ``DEFAULT_NOTICE``
        Jurisdiction, language, policy URL, controller contact, collection method.
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
    data_life_days: int
    notice: ReceiptNotice = DEFAULT_NOTICE
    version: str = RECEIPT_VERSION

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times in RFC 3339 UTC)."""
        return {
            "version": self.version,
            "receipt_id": self.receipt_id,
            "timestamp": format_time(self.timestamp),
            "jurisdiction": self.notice.jurisdiction,
            "language": self.notice.language,
            "policy_url": self.notice.policy_url,
            "collection_method": self.notice.collection_method,
            "principal": self.principal,
            "controller": self.controller,
            "controller_contact": self.notice.controller_contact,
            "data_provider": self.data_provider,
            "consent_id": self.consent_id,
            "artefact_hash": self.artefact_hash,
            "purposes": [{"code": c, "dpv": iri} for c, iri in self.purposes],
            "categories": list(self.categories),
            "data_life_days": self.data_life_days,
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
    notice: ReceiptNotice = DEFAULT_NOTICE,
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
        data_life_days=artefact.data_life_days,
        notice=notice,
    )
