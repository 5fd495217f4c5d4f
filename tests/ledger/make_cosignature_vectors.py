"""Write ``tests/testdata/cosignature/*.json``: C2SP cosignature/v1 known answers.

Run ``python -m tests.ledger.make_cosignature_vectors``. The key is RFC 8032's
test 1 key (published), the checkpoint and time are the tlog-cosignature spec's
own example, so the signed message can be compared with the spec's text and
the deterministic Ed25519 signature pinned. Each mutation is its own file with
``valid`` saying whether a verifier must accept it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import cosign, make_cosigner_vkey

OUT = Path(__file__).resolve().parents[1] / "testdata" / "cosignature"
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
NAME = "witness.example.com/w1"
BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
TIME = 1679315147


def _blob(line: str) -> bytes:
    return base64.b64decode(line.rstrip("\n").split(" ")[-1])


def _line(blob: bytes) -> str:
    return f"\u2014 {NAME} {base64.b64encode(blob).decode()}"


def main() -> None:
    """Write one JSON file per case."""
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    vkey = make_cosigner_vkey(NAME, key.public_key())
    good = cosign(BODY, NAME, key, TIME).rstrip("\n")
    blob = _blob(good)
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    later = blob[:4] + (TIME + 1).to_bytes(8, "big") + blob[12:]
    cases = {
        "valid": ("the pinned cosignature on the spec's example checkpoint", good, True),
        "flipped_signature_bit": ("last signature bit flipped", _line(bytes(flipped)), False),
        "timestamp_changed": ("timestamp +1 s, signature kept", _line(later), False),
        "wrong_key_id": ("key id of type 0x01 (a note key)", _line(b"\0\0\0\0" + blob[4:]), False),
        "truncated": ("signature cut by one byte", _line(blob[:-1]), False),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (description, line, valid) in cases.items():
        record = {
            "description": description,
            "vkey": vkey,
            "body": BODY,
            "time": TIME,
            "line": line,
            "valid": valid,
        }
        (OUT / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
