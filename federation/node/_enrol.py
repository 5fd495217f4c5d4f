"""Register merchant approvals from a JSON Lines file (``fedgate node approve``).

The file is the one ``fedgate consent import`` takes, one consent a line::

    {"terms": {...}, "merchant_signature": "<detached JWS>", "merchant_key": "<PEM>"}

The node does not take the platform's word for an approval: every line's
``merchant_signature`` is verified against the canonical terms with the
merchant's Ed25519 key (:func:`consent.verify_approval`) **before the first
write**; one bad line (unreadable, malformed terms, a signature that does not
verify, an id twice) refuses the whole file and nothing is registered. Lines
whose terms name another ISV as data provider are counted and skipped: a node
registers only its own merchants.

An approval registered this way binds the **terms** the merchant signed
(consent id, merchant, provider, consumer, purposes, categories, data range,
consent window, data life), not the consent manager's token, which the ISV does
not hold: its ``artefact_hash`` is empty and :meth:`Approval.covers` then
checks every term but not the hash.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consent import (
    ConsentArtefact,
    ConsentError,
    ImportRefused,
    consent_lines,
    parse_terms,
    verify_approval,
)

from .._errors import FederationError
from ._approvals import Approval, ApprovalRegister

__all__ = ["ApproveResult", "approve_lines", "register_approvals"]



@dataclass(frozen=True, slots=True)
class ApproveResult:
    """What :func:`approve_lines` did: approvals registered, lines for other ISVs skipped."""

    registered: int
    other_isv: int


def _refuse(line: int, message: str, code: str = "BAD_APPROVALS") -> FederationError:
    return FederationError(f"line {line}: {message}", code=code)


def _merchant_key(pem: object, line: int) -> Ed25519PublicKey:
    if not isinstance(pem, str):
        raise _refuse(line, "merchant_key must be a PEM string", "SIGNATURE_INVALID")
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeError) as exc:
        raise _refuse(line, f"merchant_key unreadable: {exc}", "SIGNATURE_INVALID") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise _refuse(line, "merchant_key is not an Ed25519 key", "SIGNATURE_INVALID")
    return key


def _parse(lines: Iterable[str | bytes], isv_id: str, now: datetime
           ) -> tuple[list[tuple[ConsentArtefact, str]], int]:
    mine: list[tuple[ConsentArtefact, str]] = []
    other = 0
    seen: set[str] = set()
    try:
        docs = list(consent_lines(lines))
    except ImportRefused as exc:
        raise FederationError(str(exc), code=exc.code) from exc
    for n, doc in docs:
        signature = doc["merchant_signature"]
        if not isinstance(signature, str):
            raise _refuse(n, "merchant_signature must be a string", "SIGNATURE_INVALID")
        key = _merchant_key(doc["merchant_key"], n)
        try:
            terms = parse_terms(doc["terms"], now=now)
            verify_approval(terms, signature, key)
        except ConsentError as exc:
            raise _refuse(n, str(exc), exc.code) from exc
        if terms.consent_id in seen:
            raise _refuse(n, f"consent id {terms.consent_id!r} twice in the file", "DUPLICATE_ID")
        seen.add(terms.consent_id)
        if terms.data_provider != isv_id:
            other += 1
            continue
        mine.append((terms, ""))  # bound to the signed terms, not a token the ISV lacks
    return mine, other


def register_approvals(register: ApprovalRegister, approved: Iterable[tuple[Any, str]]) -> int:
    """The one way approvals enter a node's register: what each merchant approved.

    Parameters
    ----------
    register : ApprovalRegister
        The node's own register (:meth:`federation.apps.NodeConfig.approvals`).
    approved : Iterable[tuple[ConsentArtefact, str]]
        The consent terms each merchant approved in the ISV's system, with the
        consent manager's artefact hash, or ``""`` when the ISV holds only the
        signed terms (``fedgate node approve``): the approval then binds every term
        but not the hash.

    Returns
    -------
    int
        Approvals registered (streamed in one locked append).
    """
    return register.register_many(Approval.from_terms(t, h) for t, h in approved)


def approve_lines(
    lines: Iterable[str | bytes], register: ApprovalRegister, *, isv_id: str
) -> ApproveResult:
    """Verify every merchant approval of a JSON Lines file, then register this ISV's.

    Parameters
    ----------
    lines : Iterable[str | bytes]
        The file's lines (blank lines are skipped).
    register : ApprovalRegister
        The node's own register (:meth:`federation.apps.NodeConfig.approvals`).
    isv_id : str
        This node's ISV id: only terms naming it as ``data_provider`` are registered.

    Raises
    ------
    FederationError
        The first bad line (``MALFORMED_JSON``, ``MALFORMED``, ``SIGNATURE_INVALID``,
        ``DUPLICATE_ID`` or a code of :func:`consent.parse_terms`); nothing is registered.
    """
    mine, other = _parse(lines, isv_id, datetime.now(UTC))
    registered = register_approvals(register, mine)
    return ApproveResult(registered=registered, other_isv=other)
