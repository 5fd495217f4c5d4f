"""Usage receipts: what a node signs about each reply (job, round, rows, merchants, ε).

A receipt is a JWS compact serialisation (RFC 7515, ``alg`` EdDSA / Ed25519)
whose payload is the RFC 8785 canonical JSON of :class:`UsageReceipt`. The
ServerApp verifies it with the node's registered public key and writes the
payload to the ledger as ``data.used``. Merchant ids are not in the receipt,
only :func:`merchant_ids_hash` of them, so the ledger never lists a cohort.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._errors import ReceiptInvalid

__all__ = [
    "entry_bitmap",
    "parse_entry_bitmap",
    "hash_key",
    "UsageReceipt",
    "merchant_ids_hash",
    "sign_receipt",
    "verify_receipt",
    "RECEIPT_TYPE",
]

RECEIPT_TYPE = "fedgate-usage-receipt+jws"
_HEADER = {"alg": "EdDSA", "typ": RECEIPT_TYPE}


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageReceipt:
    """One node's account of one reply.

    Parameters
    ----------
    job_id : str
    round : int
    data_provider : str
        The ISV id of the node that signed.
    action : str
        ``train``, ``evaluate``, ``query.sketch`` or ``query.score``.
    rows_used : int
        ERP rows the reply was computed from (one per merchant used).
    merchants_used : int
    merchants_hash : str
        :func:`merchant_ids_hash` of the merchant ids actually used.
    rows_read : int
        ERP rows the node read for this reply (after manifest filtering: every
        snapshot inside a consented range of a merchant the handler selected).
    merchants_read : int
    merchants_read_hash : str
        :func:`merchant_ids_hash` of the merchants whose rows were read; the used
        merchants are a subset, and both are a subset of the manifest.
    manifest_root : str
        The Merkle root of the manifest that authorised the read.
    epsilon_spent : float
        ε of the job at this node after this reply (cumulative over rounds; 0 without DP).
    delta : float
    issued_at : str
        RFC 3339 UTC time of signing.
    refusal : str, default ""
        The node's refusal code when it refused the request (nothing was released).
    aggregation : str, default ""
        ``"secagg+"`` when the node's update left through SecAgg+ masking: the
        node's own word, not the server's.
    unused_entries : str, default ""
        Positions (0-based, in manifest order, :func:`entry_bitmap`) of the manifest
        entries whose merchant the reply did not use: the platform's lifetime ε
        account charges only the others. Positions, not ids: the platform holds
        the manifest; no one else learns whom they name.
    """

    job_id: str
    round: int
    data_provider: str
    action: str
    rows_used: int
    merchants_used: int
    merchants_hash: str
    rows_read: int
    merchants_read: int
    merchants_read_hash: str
    manifest_root: str
    epsilon_spent: float
    delta: float
    issued_at: str
    refusal: str = ""
    aggregation: str = ""
    unused_entries: str = ""

    def to_body(self) -> dict[str, Any]:
        """The receipt as a JSON-ready dict (the ledger entry body)."""
        return asdict(self)


def merchant_ids_hash(ids: Iterable[str], key: bytes | None = None) -> str:
    """Hex digest of the canonical JSON list of the sorted, distinct merchant ids.

    With the node's ``key`` (:func:`hash_key`) it is HMAC-SHA256, so nobody without
    the key (the platform, a ledger reader) can test guessed merchant sets against
    it; the ISV reveals the key to an auditor who must check a set. Without a key,
    plain SHA-256 (brute-forceable for small sets: only for tests and tools).
    """
    payload = rfc8785.dumps(sorted(set(ids)))
    if key is None:
        return hashlib.sha256(payload).hexdigest()
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def hash_key(state_dir: Path) -> bytes:
    """The node's merchant-set hashing key (32 bytes from the OS CSPRNG, made on first use)."""
    path = Path(state_dir) / "hash-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(secrets.token_bytes(32))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # first writer wins; a racing one reads the winner's key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_bytes()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_receipt(receipt: UsageReceipt, key: Ed25519PrivateKey) -> bytes:
    """The receipt as JWS compact bytes signed with the node's key."""
    signing_input = f"{_b64(rfc8785.dumps(_HEADER))}.{_b64(rfc8785.dumps(receipt.to_body()))}"
    signature = key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{_b64(signature)}".encode("ascii")


def verify_receipt(token: bytes, public_key: Ed25519PublicKey) -> UsageReceipt:
    """Check the signature and shape of a receipt and return it.

    Parameters
    ----------
    token : bytes
        JWS compact bytes from :func:`sign_receipt`.
    public_key : Ed25519PublicKey
        The registered key of the node the receipt claims to come from.

    Raises
    ------
    ReceiptInvalid
        ``code`` ``RECEIPT_MALFORMED`` (not a JWS of a receipt) or ``RECEIPT_SIGNATURE``.
    """
    try:
        header_b64, payload_b64, sig_b64 = token.decode("ascii").split(".")
        header = json.loads(_unb64(header_b64))
        signature = _unb64(sig_b64)
    except (UnicodeDecodeError, ValueError, binascii.Error) as exc:
        raise ReceiptInvalid(
            f"receipt is not JWS compact: {exc}", code="RECEIPT_MALFORMED"
        ) from exc
    if header != _HEADER:
        raise ReceiptInvalid(f"unexpected receipt header {header!r}", code="RECEIPT_MALFORMED")
    try:
        public_key.verify(signature, f"{header_b64}.{payload_b64}".encode("ascii"))
    except InvalidSignature:
        raise ReceiptInvalid(
            "receipt signature does not verify", code="RECEIPT_SIGNATURE"
        ) from None
    try:
        body = json.loads(_unb64(payload_b64))
        return _receipt_from_body(body)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ReceiptInvalid(f"receipt payload malformed: {exc}", code="RECEIPT_MALFORMED") from exc


def _receipt_from_body(body: Mapping[str, Any]) -> UsageReceipt:
    expected = set(UsageReceipt.__dataclass_fields__)
    # absent from receipts signed before they existed
    optional = {"refusal", "aggregation", "unused_entries"}
    if not isinstance(body, Mapping) or not expected - optional <= set(body) <= expected:
        raise ValueError("receipt fields differ from the UsageReceipt schema")
    ints = ("round", "rows_used", "merchants_used", "rows_read", "merchants_read")
    floats = ("epsilon_spent", "delta")
    for k in ints:
        if not isinstance(body[k], int) or isinstance(body[k], bool) or body[k] < 0:
            raise ValueError(f"{k} must be a non-negative integer")
    for k in floats:
        if not isinstance(body[k], int | float) or isinstance(body[k], bool) or body[k] < 0:
            raise ValueError(f"{k} must be a non-negative number")
    for k in (expected - set(ints) - set(floats)) & set(body):
        if not isinstance(body[k], str):
            raise ValueError(f"{k} must be a string")
    if body.get("unused_entries"):
        parse_entry_bitmap(body["unused_entries"])
    return UsageReceipt(**{k: (float(v) if k in floats else v) for k, v in body.items()})


def entry_bitmap(positions: Iterable[int], count: int) -> str:
    """Positions in a manifest of ``count`` entries as ``z1:`` + base64url(zlib(bit array)).

    ``""`` when there are none. About ``count / 8`` bytes before compression (30,000
    entries: ~3 KB), whatever the positions' pattern, where a list of scattered
    positions would take ~6 bytes each.
    """
    bits = np.zeros(count, dtype=np.uint8)
    idx = np.fromiter((int(p) for p in positions), dtype=np.int64)
    if idx.size == 0:
        return ""
    if idx.min() < 0 or idx.max() >= count:
        raise ValueError(f"positions must be in [0, {count})")
    bits[idx] = 1
    return "z1:" + _b64(zlib.compress(np.packbits(bits).tobytes(), 9))


def parse_entry_bitmap(text: str, count: int | None = None) -> list[int]:
    """The sorted positions of :func:`entry_bitmap` text (``ValueError`` if malformed).

    With ``count``, positions at or past it (beyond the manifest) are refused.
    """
    if not text:
        return []
    if not text.startswith("z1:"):
        raise ValueError("entry bitmap must start with 'z1:'")
    try:
        raw = zlib.decompress(_unb64(text[3:]))
    except (zlib.error, binascii.Error, ValueError) as exc:
        raise ValueError(f"entry bitmap does not decode: {exc}") from exc
    positions = np.flatnonzero(np.unpackbits(np.frombuffer(raw, dtype=np.uint8)))
    if count is not None and positions.size and int(positions[-1]) >= count:
        raise ValueError(f"entry position {int(positions[-1])} outside a manifest of {count}")
    return [int(p) for p in positions]
