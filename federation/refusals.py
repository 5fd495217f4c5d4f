"""A node's signed refusal, read from an error reply, verified, and written to the ledger.

When a node refuses a request (its policy, an unknown model, a consent it does
not hold), its error reason reads ``<CODE>: <RULE> <name=number…> receipt=<JWS>``
(:func:`federation.apps._mods.refuse`): the receipt is a usage receipt signed
with the node's key whose ``refusal`` field names the rule and whose counts of
rows and merchants read and used are all zero. The ServerApp passes such a
reason to :func:`record_refusal`, which

1. parses it (:func:`parse_refusal`; a reason without a receipt is not a
   refusal the node signed, and is left to the caller as a plain failure);
2. verifies the receipt with the node's registered key and checks that it
   answers this request (job, round, node, action, manifest root), that its
   rule is the one in the reason, and that it read and used nothing;
3. appends the receipt to the ledger as a ``refusal`` entry (own transaction).

A forged refusal (not signed by the node's key, or signed for another request)
raises :class:`~federation.ReceiptInvalid` and writes nothing, so a platform
cannot put words in a node's mouth, and a node cannot deny a refusal it signed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session, sessionmaker

from ledger import append_entry

from ._errors import ReceiptInvalid
from .receipts import UsageReceipt, verify_receipt

__all__ = [
    "REFUSAL",
    "RefusalCheck",
    "RefusalClaim",
    "parse_refusal",
    "verify_refusal",
    "record_refusal",
    "refusal_note",
]

RefusalCheck = Callable[[str, str, int, str, str], str | None]
"""``(reason, isv, round, action, manifest root)`` → a note for the failure line, or ``None``."""

REFUSAL = "refusal"
"""Ledger entry kind of a node's verified refusal."""

_CODE = r"[A-Z][A-Z0-9_]*"
_REASON = re.compile(
    rf"^(?P<codes>{_CODE}(?:: {_CODE})*)"
    r"(?P<counts>(?: [a-z][a-z0-9-]*=-?[0-9]+(?:\.[0-9]+)?)*)"
    r" receipt=(?P<token>[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RefusalClaim:
    """What an error reason says, before anything is verified.

    Parameters
    ----------
    code : str
        The error-code name (``POLICY_REFUSED``, ``MODEL_UNKNOWN``, …).
    rule : str
        The rule refused on (the code itself when the reason names no other).
    counts : dict[str, int | float]
        The named numbers of the reason (``min=10`` …).
    token : bytes
        The node's signed receipt.
    """

    code: str
    rule: str
    counts: dict[str, int | float]
    token: bytes


def parse_refusal(reason: str) -> RefusalClaim | None:
    """The claim in a refusal reason, or ``None`` when the reason carries no receipt."""
    m = _REASON.match(reason or "")
    if m is None:
        return None
    codes = m.group("codes").split(": ")
    counts: dict[str, int | float] = {}
    for part in m.group("counts").split():
        name, value = part.split("=", 1)
        counts[name] = float(value) if "." in value else int(value)
    return RefusalClaim(
        code=codes[0], rule=codes[-1], counts=counts, token=m.group("token").encode("ascii")
    )


def verify_refusal(
    claim: RefusalClaim,
    public_key: Ed25519PublicKey,
    *,
    job_id: str,
    round: int,
    data_provider: str,
    action: str,
    manifest_root: str,
) -> UsageReceipt:
    """The node's refusal receipt, if it is signed by ``public_key`` and answers this request.

    Preconditions: ``claim`` comes from :func:`parse_refusal`; the keyword arguments
    name the request the platform sent (not values read from the reply).

    Raises
    ------
    ReceiptInvalid
        ``RECEIPT_SIGNATURE`` / ``RECEIPT_MALFORMED`` (not the node's signed receipt),
        ``RECEIPT_MISMATCH`` (another request, another rule, or anything read or used).
    """
    receipt = verify_receipt(claim.token, public_key)
    got = (receipt.job_id, receipt.round, receipt.data_provider, receipt.action,
           receipt.manifest_root)
    want = (job_id, round, data_provider, action, manifest_root)
    if got != want:
        raise ReceiptInvalid(f"refusal is for {got}, expected {want}", code="RECEIPT_MISMATCH")
    if not receipt.refusal or receipt.refusal != claim.rule:
        raise ReceiptInvalid(
            f"receipt refuses {receipt.refusal!r}, the reason says {claim.rule!r}",
            code="RECEIPT_MISMATCH",
        )
    released = (receipt.rows_used, receipt.merchants_used, receipt.rows_read,
                receipt.merchants_read)
    if any(released) or receipt.epsilon_spent:
        raise ReceiptInvalid(
            "a refusal receipt must read and use nothing", code="RECEIPT_MISMATCH"
        )
    return receipt


def record_refusal(
    sessions: sessionmaker[Session],
    reason: str,
    public_key: Ed25519PublicKey,
    *,
    job_id: str,
    round: int,
    data_provider: str,
    action: str,
    manifest_root: str,
) -> dict[str, Any] | None:
    """Verify the refusal in ``reason`` and append it to the ledger as ``refusal``.

    Returns
    -------
    dict[str, Any] | None
        The ledger entry body plus its ``ledger_seq``; ``None`` when ``reason`` carries
        no receipt (an error that is not a signed refusal: nothing is written).

    Raises
    ------
    ReceiptInvalid
        As :func:`verify_refusal`; nothing is written.
    """
    claim = parse_refusal(reason)
    if claim is None:
        return None
    receipt = verify_refusal(
        claim,
        public_key,
        job_id=job_id,
        round=round,
        data_provider=data_provider,
        action=action,
        manifest_root=manifest_root,
    )
    body = {
        **receipt.to_body(),
        "code": claim.code,
        "counts": {k: claim.counts[k] for k in sorted(claim.counts)},
        "receipt": claim.token.decode("ascii"),
    }
    with sessions() as session, session.begin():
        entry = append_entry(session, REFUSAL, body)
    return {**body, "ledger_seq": entry.seq}


def refusal_note(
    sessions: sessionmaker[Session],
    reason: str,
    public_key: Ed25519PublicKey,
    *,
    job_id: str,
    round: int,
    data_provider: str,
    action: str,
    manifest_root: str,
) -> str | None:
    """:func:`record_refusal` as a note for a job's failure line (never raises on a forgery).

    Returns ``REFUSAL_RECORDED ledger=<seq>``, ``REFUSAL_FORGED: <code>`` (nothing
    written), or ``None`` for an error that carries no signed refusal.
    """
    try:
        body = record_refusal(
            sessions,
            reason,
            public_key,
            job_id=job_id,
            round=round,
            data_provider=data_provider,
            action=action,
            manifest_root=manifest_root,
        )
    except ReceiptInvalid as exc:
        return f"REFUSAL_FORGED: {exc.code}"
    return None if body is None else f"REFUSAL_RECORDED ledger={body['ledger_seq']}"
