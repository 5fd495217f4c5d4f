"""C2SP signed notes and verifier keys: round trip, key ids, strict parsing."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger import NoteError, make_vkey, parse_vkey, sign_note, verify_note

from . import make_note_vectors as gen

_NAME = "fedgate.test/log"


def _vector(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((gen.OUT / f"{name}.json").read_text(encoding="utf-8"))
    return data


def _go_signer(skey: str) -> tuple[str, Ed25519PrivateKey]:
    """Name and key from a Go ``PRIVATE+KEY+<name>+<id>+<base64(0x01 ‖ seed)>`` string."""
    _, _, name, _, encoded = skey.split("+", 4)
    raw = base64.b64decode(encoded)
    assert raw[:1] == b"\x01" and len(raw) == 33
    return name, Ed25519PrivateKey.from_private_bytes(raw[1:])


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


def test_go_reference_key_and_note_match_byte_for_byte() -> None:
    """The Go sumdb/note example: same key id, same vkey, same signed note as Go produces."""
    vector = _vector("go_known_answer")
    name, key = _go_signer(vector["skey"])
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    vkey = make_vkey(name, key.public_key())
    note = sign_note(vector["text"], name, key)

    assert hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()[:4].hex() == "c74f20a3"
    assert parse_vkey(vector["vkey"]).key_id.hex() == "c74f20a3"
    assert vkey == vector["vkey"]
    assert note == vector["note"]


def _answer(vector: dict[str, Any]) -> str | None:
    """The NoteError code verifying the vector's note raises, or None when it verifies."""
    try:
        text = verify_note(vector["note"], vector["vkey"])
    except NoteError as exc:
        return exc.code
    return None if text == vector["text"] else "WRONG_TEXT"


def test_every_note_vector_gets_its_expected_answer() -> None:
    """Each case file's expected error (or acceptance) holds; all mismatches are listed at once."""
    files = sorted(gen.OUT.glob("*.json"))

    failures = []
    for path in files:
        vector = json.loads(path.read_text(encoding="utf-8"))
        got = _answer(vector)
        if got != vector["expected_error"]:
            failures.append(f"{path.stem}: expected {vector['expected_error']}, got {got}")

    assert len(files) >= 6
    assert failures == []


def test_note_generator_reproduces_the_files() -> None:
    """The checked-in vectors are exactly what the generator writes (no hand edits, no drift)."""
    expected = {f"{name}.json": case for name, case in gen.cases().items()}

    on_disk = {
        p.name: json.loads(p.read_text(encoding="utf-8")) for p in Path(gen.OUT).glob("*.json")
    }

    assert on_disk == expected
