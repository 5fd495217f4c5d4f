"""C2SP tlog-cosignature/v1: Ed25519 cosignatures on checkpoints (https://c2sp.org/tlog-cosignature).

A cosignature is a signed-note signature line on a checkpoint::

    — <cosigner name> base64(key id ‖ timestamp ‖ signature)

* key id = SHA-256(name ‖ 0x0A ‖ 0x04 ‖ 32-byte Ed25519 public key)[:4]
  (signature type 0x04, not the 0x01 of an ordinary note key);
* timestamp = u64 big-endian POSIX seconds, at most 2^63 − 1;
* signature = Ed25519 over ``"cosignature/v1\\ntime <t>\\n"`` followed by the
  whole checkpoint body (every line up to the blank line, extension lines too).

A cosigner's public key is published as a vkey ``<name>+<hex id>+<base64(0x04 ‖ key)>``.
Verification is a pure function: it ignores lines by keys it was not given and
returns the timestamp of each valid cosignature by a given key.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ._errors import NoteError
from ._note import SIGNATURE_PREFIX, _check_name, decode_vkey, key_id

__all__ = [
    "COSIGNATURE_TYPE",
    "Cosigner",
    "cosign",
    "cosignature_message",
    "cosigner_key_id",
    "make_cosigner_vkey",
    "parse_cosigner_vkey",
    "split_note",
    "verify_cosignatures",
]

COSIGNATURE_TYPE = b"\x04"
MAX_TIMESTAMP = 2**63 - 1
_BLOB = 4 + 8 + 64


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def cosigner_key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """SHA-256(name ‖ 0x0A ‖ 0x04 ‖ public key)[:4]."""
    return key_id(name, public_key, COSIGNATURE_TYPE)


@dataclass(frozen=True, slots=True)
class Cosigner:
    """A witness's public identity: name, 4-byte key id, Ed25519 key."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    @property
    def vkey(self) -> str:
        """``<name>+<hex id>+<base64(0x04 ‖ key)>``."""
        return make_cosigner_vkey(self.name, self.public_key)


def make_cosigner_vkey(name: str, public_key: Ed25519PublicKey) -> str:
    """The cosigner's verifier key string (signature type 0x04)."""
    _check_name(name)
    raw = base64.b64encode(COSIGNATURE_TYPE + _raw(public_key)).decode()
    return f"{name}+{cosigner_key_id(name, public_key).hex()}+{raw}"


def parse_cosigner_vkey(vkey: str) -> Cosigner:
    """Parse a cosigner vkey, checking its type byte and that its id matches name and key.

    Raises
    ------
    NoteError
        ``code="BAD_VKEY"`` for anything malformed or inconsistent.
    """
    return Cosigner(*decode_vkey(vkey, COSIGNATURE_TYPE))


def cosignature_message(body: str, timestamp: int) -> bytes:
    """The bytes a cosigner signs: header line, time line, then the checkpoint body."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"timestamp {timestamp} out of range", code="BAD_COSIGNATURE")
    if not body.endswith("\n"):
        raise NoteError("checkpoint body must end with a newline", code="MALFORMED_NOTE")
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


def cosign(body: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> str:
    """One cosignature line (ending in a newline) on the checkpoint ``body``."""
    _check_name(name)
    signature = key.sign(cosignature_message(body, timestamp))
    blob = cosigner_key_id(name, key.public_key()) + struct.pack(">Q", timestamp) + signature
    return f"{SIGNATURE_PREFIX}{name} {base64.b64encode(blob).decode()}\n"


def split_note(note: str) -> tuple[str, list[str]]:
    """``(body, signature lines)`` of a signed note; lines without their newline.

    Raises
    ------
    NoteError
        ``MALFORMED_NOTE`` when there is no blank line or no signature.
    """
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n") or split + 2 >= len(note):
        raise NoteError("note has no signature block", code="MALFORMED_NOTE")
    return note[: split + 1], note[split + 2 : -1].split("\n")


def verify_cosignatures(
    body: str, lines: Iterable[str], cosigners: Iterable[Cosigner]
) -> Mapping[str, int]:
    """Which of ``cosigners`` validly cosigned ``body``: vkey → timestamp.

    Lines by other keys are ignored (the log's own signature among them). A
    line by a given key whose signature does not verify is ignored too: it is
    not a cosignature, and the caller counts only what verifies.
    """
    wanted = {(c.name, c.key_id): c for c in cosigners}
    found: dict[str, int] = {}
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            continue
        name, _, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        try:
            blob = base64.b64decode(b64, validate=True)
        except binascii.Error:
            continue
        cosigner = wanted.get((name, blob[:4]))
        if cosigner is None or len(blob) != _BLOB:
            continue
        (timestamp,) = struct.unpack(">Q", blob[4:12])
        if timestamp > MAX_TIMESTAMP:
            continue
        try:
            cosigner.public_key.verify(blob[12:], cosignature_message(body, timestamp))
        except InvalidSignature:
            continue
        found[cosigner.vkey] = timestamp
    return found
