"""C2SP signed notes with Ed25519 keys (https://c2sp.org/signed-note).

A note is UTF-8 text ending in a newline, a blank line, then one line per signature::

    <text>\\n
    \\n
    — <key name> <base64(key id ‖ signature)>\\n

The key id is the first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key), 0x01
being the Ed25519 signature type. A verifier key is published as the "vkey"
string ``<name>+<key id hex>+<base64(0x01 ‖ public key)>``. Verification ignores
signatures by keys it does not know and needs at least one by the given key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ._errors import NoteError

__all__ = [
    "NoteVerifier",
    "decode_vkey",
    "key_id",
    "make_vkey",
    "parse_vkey",
    "sign_note",
    "verify_note",
]

ED25519_TYPE = b"\x01"
SIGNATURE_PREFIX = "\u2014 "  # em dash and a space
MAX_SIGNATURES = 100


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteError(
            f"key name {name!r} must be non-empty, without spaces or '+'", code="BAD_KEY_NAME"
        )


def key_id(name: str, public_key: Ed25519PublicKey, sig_type: bytes = ED25519_TYPE) -> bytes:
    """The 4-byte key id: SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4] (type 0x01 by default)."""
    digest = hashlib.sha256(name.encode() + b"\n" + sig_type + _raw_public(public_key))
    return digest.digest()[:4]


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A named Ed25519 public key that checks note signatures."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    @property
    def vkey(self) -> str:
        """The verifier key string ``<name>+<hex key id>+<base64(0x01 ‖ key)>``."""
        return make_vkey(self.name, self.public_key)

    def verify(self, text: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's Ed25519 signature over ``text``."""
        try:
            self.public_key.verify(signature, text)
        except InvalidSignature:
            return False
        return True


def make_vkey(name: str, public_key: Ed25519PublicKey) -> str:
    """Encode ``public_key`` under ``name`` as a C2SP verifier key string."""
    _check_name(name)
    raw = base64.b64encode(ED25519_TYPE + _raw_public(public_key)).decode()
    return f"{name}+{key_id(name, public_key).hex()}+{raw}"


def parse_vkey(vkey: str) -> NoteVerifier:
    """Parse a verifier key string, checking that its key id matches its name and key.

    Raises
    ------
    NoteError
        ``code="BAD_VKEY"`` for any malformed or inconsistent verifier key.
    """
    return NoteVerifier(*decode_vkey(vkey, ED25519_TYPE))


def decode_vkey(vkey: str, sig_type: bytes) -> tuple[str, bytes, Ed25519PublicKey]:
    """``(name, key id, key)`` of an Ed25519 vkey of signature type ``sig_type``, checked.

    Raises
    ------
    NoteError
        ``code="BAD_VKEY"`` for a malformed key, another type, or an id that
        does not match the name and key.
    """
    if not isinstance(vkey, str) or len(vkey) > 1024:
        raise NoteError("verifier key must be a string of at most 1024 characters", code="BAD_VKEY")
    parts = vkey.split("+", 2)  # base64 may itself contain '+'; name and id may not
    if len(parts) != 3:
        raise NoteError("verifier key must be <name>+<hex id>+<base64 key>", code="BAD_VKEY")
    name, hex_id, b64 = parts
    try:
        _check_name(name)
        raw = base64.b64decode(b64, validate=True)
        wanted = bytes.fromhex(hex_id)
    except (NoteError, binascii.Error, ValueError) as exc:
        raise NoteError(f"malformed verifier key: {exc}", code="BAD_VKEY") from exc
    if len(raw) != 33 or raw[:1] != sig_type or len(hex_id) != 8:
        raise NoteError(
            f"verifier key is not an Ed25519 key of type 0x{sig_type.hex()} with an 8-hex-digit id",
            code="BAD_VKEY",
        )
    public = Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_id(name, public, sig_type) != wanted:
        raise NoteError("verifier key id does not match its name and key", code="BAD_VKEY")
    return name, wanted, public


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline", code="MALFORMED_NOTE")
    if any((ord(c) < 0x20 and c != "\n") or c == "\x7f" for c in text):
        raise NoteError("note text has control characters", code="MALFORMED_NOTE")


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> str:
    """Sign ``text`` (which must end with a newline) as ``name``; return the whole note.

    Raises
    ------
    NoteError
        If the text or the name is not allowed in a signed note.
    """
    _check_name(name)
    _check_text(text)
    kid = key_id(name, key.public_key())
    signature = key.sign(text.encode())
    line = f"{SIGNATURE_PREFIX}{name} {base64.b64encode(kid + signature).decode()}\n"
    return f"{text}\n{line}"


def verify_note(note: str, verifier: NoteVerifier | str) -> str:
    """Check ``note`` carries a valid signature by ``verifier``; return the signed text.

    Parameters
    ----------
    note : str
        The whole signed note.
    verifier : NoteVerifier | str
        The trusted key, or its vkey string.

    Returns
    -------
    str
        The note text (up to and including its last newline before the blank line).

    Raises
    ------
    NoteError
        ``MALFORMED_NOTE`` for a note that does not parse, ``BAD_SIGNATURE`` when
        the trusted key's signature does not verify, ``UNVERIFIED_NOTE`` when
        no signature is by the trusted key.
    """
    trusted = parse_vkey(verifier) if isinstance(verifier, str) else verifier
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteError("note has no signature block", code="MALFORMED_NOTE")
    text, block = note[: split + 1], note[split + 2 :]
    _check_text(text)
    lines = block[:-1].split("\n")
    if not block or len(lines) > MAX_SIGNATURES:
        raise NoteError("note has no signatures or too many", code="MALFORMED_NOTE")
    message = text.encode()
    verified = False
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError(f"bad signature line {line!r}", code="MALFORMED_NOTE")
        name, _, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        try:
            _check_name(name)
            blob = base64.b64decode(b64, validate=True)
        except (NoteError, binascii.Error) as exc:
            raise NoteError(f"bad signature line {line!r}", code="MALFORMED_NOTE") from exc
        if len(blob) < 5:
            raise NoteError(f"signature too short in {line!r}", code="MALFORMED_NOTE")
        if name != trusted.name or blob[:4] != trusted.key_id:
            continue  # someone else's signature: ignored, as the spec says
        if not trusted.verify(message, blob[4:]):
            raise NoteError(f"signature by {name} does not verify", code="BAD_SIGNATURE")
        verified = True
    if not verified:
        raise NoteError(f"no signature by {trusted.name}", code="UNVERIFIED_NOTE")
    return text
