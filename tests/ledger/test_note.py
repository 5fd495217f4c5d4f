"""C2SP signed notes and verifier keys: round trip, key ids, strict parsing."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger import NoteError, make_vkey, parse_vkey, sign_note, verify_note

_NAME = "fedgate.test/log"


def _key(seed: int = 1) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def test_sign_and_verify_round_trip() -> None:
    """A signed note verifies with the signer's vkey and returns the exact text."""
    key = _key()
    note = sign_note("hello\nworld\n", _NAME, key)

    text = verify_note(note, make_vkey(_NAME, key.public_key()))

    assert text == "hello\nworld\n"
    assert note.startswith("hello\nworld\n\n\u2014 fedgate.test/log ")


def test_key_id_is_sha256_of_name_newline_type_key() -> None:
    """The vkey's id is SHA-256(name ‖ 0x0A ‖ 0x01 ‖ pubkey)[:4] and parses back."""
    pub = _key().public_key()
    raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)

    vkey = make_vkey(_NAME, pub)
    parsed = parse_vkey(vkey)

    expected = hashlib.sha256(_NAME.encode() + b"\n\x01" + raw).digest()[:4]
    encoded = base64.b64encode(b"\x01" + raw).decode()
    assert vkey == f"{_NAME}+{expected.hex()}+{encoded}"
    assert parsed.key_id == expected
    assert parsed.vkey == vkey


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda n: n.replace("hello", "hellO"), "BAD_SIGNATURE"),
        (lambda n: n.replace("\n\n", "\n"), "MALFORMED_NOTE"),
        (lambda n: n.rstrip("\n"), "MALFORMED_NOTE"),
        (lambda n: n.replace("\u2014 ", "- "), "MALFORMED_NOTE"),
        (lambda n: n.replace(_NAME + " ", "other.log "), "UNVERIFIED_NOTE"),
        (lambda n: "hello\x01\n" + n[6:], "MALFORMED_NOTE"),
    ],
)
def test_tampered_notes_are_rejected(mutate: object, code: str) -> None:
    """Edited text, missing blank line or newline, bad prefix, foreign key, control chars fail."""
    key = _key()
    note = sign_note("hello\n", _NAME, key)
    assert callable(mutate)

    with pytest.raises(NoteError) as info:
        verify_note(mutate(note), make_vkey(_NAME, key.public_key()))

    assert info.value.code == code


def test_other_signers_are_ignored() -> None:
    """A co-signature by an unknown key does not stop verification by the trusted one."""
    key, other = _key(1), _key(2)
    note = sign_note("hello\n", _NAME, key)
    foreign = sign_note("hello\n", "witness", other).split("\n\n")[1]

    text = verify_note(note + foreign, make_vkey(_NAME, key.public_key()))

    assert text == "hello\n"


def test_wrong_key_under_same_name_is_unverified() -> None:
    """The same name with another key has another key id, so the note is not verified."""
    note = sign_note("hello\n", _NAME, _key(1))

    with pytest.raises(NoteError) as info:
        verify_note(note, make_vkey(_NAME, _key(2).public_key()))

    assert info.value.code == "UNVERIFIED_NOTE"


@pytest.mark.parametrize(
    "vkey",
    ["no-plus-signs", "a+b+c", "a+00000000+AQ==", "a b+00000000+" + "A" * 44],
)
def test_malformed_vkeys_are_rejected(vkey: str) -> None:
    """Verifier keys with bad structure, key type, length or id raise BAD_VKEY."""
    with pytest.raises(NoteError) as info:
        parse_vkey(vkey)

    assert info.value.code == "BAD_VKEY"


def test_vkey_with_wrong_id_is_rejected() -> None:
    """A vkey whose id does not match its name and key is refused."""
    good = make_vkey(_NAME, _key().public_key())
    name, _, rest = good.split("+")

    with pytest.raises(NoteError) as info:
        parse_vkey(f"{name}+00000000+{rest}")

    assert info.value.code == "BAD_VKEY"
