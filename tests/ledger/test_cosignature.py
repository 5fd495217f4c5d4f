"""C2SP cosignature/v1: the spec's message and example line, and pinned known answers."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import ledger
from ledger._cosignature import cosignature_message

VECTORS = Path(__file__).resolve().parents[1] / "testdata" / "cosignature"

SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_MESSAGE = (
    "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)
SPEC_LINE_BLOB = (
    "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZ"
    "qhf5nNo0xUe+mbIUBkBIfZ+qnA=="
)


def test_signed_message_is_the_spec_example() -> None:
    """The bytes a witness signs equal the tlog-cosignature spec's example message."""
    assert cosignature_message(SPEC_BODY, 1679315147) == SPEC_MESSAGE.encode()


def test_spec_example_line_layout() -> None:
    """The spec's example cosignature is key id ‖ u64 big-endian time ‖ 64-byte signature."""
    blob = base64.b64decode(SPEC_LINE_BLOB)

    (timestamp,) = struct.unpack(">Q", blob[4:12])

    assert len(blob) == 4 + 8 + 64
    assert timestamp == 1679315147


def test_key_id_uses_signature_type_4() -> None:
    """The key id is SHA-256(name ‖ LF ‖ 0x04 ‖ key)[:4], not the note key's 0x01."""
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes_raw()

    vkey = ledger.make_cosigner_vkey("w.example/1", key.public_key())
    parsed = ledger.parse_cosigner_vkey(vkey)

    wanted = hashlib.sha256(b"w.example/1\n\x04" + raw).digest()[:4]
    assert parsed.key_id == wanted
    assert vkey.split("+")[1] == wanted.hex()
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == 4
    with pytest.raises(ledger.NoteError):
        ledger.parse_vkey(vkey)  # a cosigner key is not a note (0x01) key


def test_known_answer_vectors() -> None:
    """Every stored case verifies exactly when its file says it should."""
    failures = []
    files = sorted(VECTORS.glob("*.json"))
    for path in files:
        case = json.loads(path.read_text())
        cosigner = ledger.parse_cosigner_vkey(case["vkey"])
        found = ledger.verify_cosignatures(case["body"], [case["line"]], [cosigner])
        if (cosigner.vkey in found) != case["valid"]:
            failures.append(path.name)
        elif case["valid"] and found[cosigner.vkey] != case["time"]:
            failures.append(f"{path.name}: time")

    assert len(files) == 5
    assert failures == []


def test_rfc8032_key_reproduces_the_pinned_signature() -> None:
    """Signing again with RFC 8032's test key gives the stored line byte for byte."""
    case = json.loads((VECTORS / "valid.json").read_text())
    key = Ed25519PrivateKey.from_private_bytes(
        bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    )

    line = ledger.cosign(case["body"], "witness.example.com/w1", key, case["time"])

    assert line == case["line"] + "\n"


def test_malformed_cosigner_vkeys_are_refused() -> None:
    """Wrong type byte, wrong id, bad base64 and oversized strings are BAD_VKEY."""
    key = Ed25519PrivateKey.generate().public_key()
    good = ledger.make_cosigner_vkey("w", key)
    note_key = ledger.make_vkey("w", key)
    bad = [note_key, good.replace(good.split("+")[1], "00000000"), "w+00+!!", "x" * 5000, "w"]

    codes = []
    for value in bad:
        with pytest.raises(ledger.NoteError) as info:
            ledger.parse_cosigner_vkey(value)
        codes.append(info.value.code)

    assert codes == ["BAD_VKEY"] * len(bad)
