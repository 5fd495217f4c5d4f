"""Write the cohort-manifest test vectors into ``tests/testdata/consent_manifest/``.

Run ``python -m tests.consent.make_manifest_vectors`` from the repository root.
The gateway key is derived from a fixed seed and Ed25519 signatures are
deterministic, so the files are byte-for-byte reproducible. Each file is one
case named for the corruption it applies, with a description and the error
code a node must answer (``null`` when the manifest must be accepted).
``seen`` lists what the node's replay guard accepted before, as
``[job_id, round, hex SHA-256 of the signed JWS payload]``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry

from consent import ManifestEntry, build_manifest, sign_manifest
from consent._manifest import _REGISTRY, MANIFEST_TYPE, entry_line, merkle_root
from ledger import canonical_json, hash_leaf

OUT = Path(__file__).resolve().parents[1] / "testdata" / "consent_manifest"
GATEWAY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"manifest vectors").digest())
OTHER = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"someone else").digest())
ISSUED = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=10)


def _entry(i: int, **changes: Any) -> ManifestEntry:
    fields: dict[str, Any] = {
        "merchant_id": f"m-{i:03d}",
        "consent_id": f"c-{i:03d}",
        "artefact_hash": hashlib.sha256(b"artefact %d" % i).hexdigest(),
        "consent_start": ISSUED - timedelta(days=10),
        "consent_expiry": ISSUED + timedelta(days=100 + i),
        "data_from": date(2025, 1, 1),
        "data_to": date(2025, 12, 31),
        "label": i % 2,
        "data_life_days": 90,
    }
    fields.update(changes)
    return ManifestEntry(**fields)


def _token(entries: list[ManifestEntry], **changes: Any) -> bytes:
    args: dict[str, Any] = {
        "job_id": "job-v",
        "round": 3,
        "data_provider": "isv-a",
        "data_consumer": "lender-1",
        "purpose": "model_training",
        "categories": ["margins", "turnover"],
        "entries": entries,
        "issued_at": ISSUED,
        "ttl": TTL,
    }
    args.update(changes)
    return sign_manifest(build_manifest(**args), GATEWAY)


def _resign(token: bytes, lines: list[bytes], alg: str = "EdDSA", **header_changes: Any) -> bytes:
    """Re-sign with the real key after changing entries/header: a buggy or hostile gateway."""
    header = json.loads(jws.extract_compact(token.split(b"\n")[0]).payload)
    header.update(count=len(lines), root=merkle_root([hash_leaf(x) for x in lines]).hex())
    header.update(header_changes)
    signed = jws.serialize_compact(
        {"alg": alg, "typ": MANIFEST_TYPE},
        canonical_json(header),
        OKPKey.import_key(GATEWAY),
        registry=_REGISTRY if alg == "EdDSA" else JWSRegistry(algorithms=[alg]),
    ).encode()
    return b"\n".join([signed, *lines])


def _payload_sha256(token: bytes) -> str:
    return hashlib.sha256(jws.extract_compact(token.split(b"\n")[0]).payload).hexdigest()


def cases() -> dict[str, dict[str, Any]]:
    """Every vector: name -> fields."""
    good = _token([_entry(i) for i in range(4)])
    lines = good.split(b"\n")
    digest = _payload_sha256(good)
    now = ISSUED + timedelta(seconds=30)
    flipped = bytearray(good)
    flipped[lines[0].index(b".") + 30] ^= 0x01
    out: dict[str, tuple[str, bytes, str | None, dict[str, Any]]] = {
        "valid": ("A well-formed manifest, verified within its window.", good, None, {}),
        "valid_redelivered": (
            "The same manifest again (same job, round and payload) is a harmless re-delivery.",
            good,
            None,
            {"seen": [["job-v", 3, digest]]},
        ),
        "valid_next_round": (
            "Round 3 after round 2 of the same job.",
            good,
            None,
            {"seen": [["job-v", 2, "ab" * 32]]},
        ),
        "replayed_other_content": (
            "The node already accepted job-v round 3 with another payload.",
            good,
            "REPLAYED",
            {"seen": [["job-v", 3, "ab" * 32]]},
        ),
        "replayed_same_entries_other_purpose": (
            "Same job, round and entries (same root) as an accepted manifest, another purpose.",
            _token([_entry(i) for i in range(4)], purpose="credit_scoring"),
            "REPLAYED",
            {"seen": [["job-v", 3, digest]]},
        ),
        "stale_round": (
            "Round 3 presented after the node accepted round 4 of the same job.",
            good,
            "STALE_ROUND",
            {"seen": [["job-v", 4, "cd" * 32]]},
        ),
        "alg_ed25519": (
            "Signed by the gateway key, but with JWS alg Ed25519 instead of EdDSA.",
            _resign(good, lines[1:], alg="Ed25519"),
            "SIGNATURE_INVALID",
            {},
        ),
        "window_over_max_ttl_signed": (
            "Signed, but valid_until is more than 24 hours after issued_at.",
            _resign(good, lines[1:], valid_until="2026-11-29T12:00:00.000001Z"),
            "MALFORMED",
            {},
        ),
        "wrong_key": (
            "Signed by a key that is not the gateway's.",
            good,
            "SIGNATURE_INVALID",
            {"gateway_key": "other"},
        ),  # fmt: skip
        "flipped_payload_bit": (
            "One bit of the JWS payload flipped.",
            bytes(flipped),
            "SIGNATURE_INVALID",
            {},
        ),  # fmt: skip
        "truncated_signature": (
            "The JWS signature cut short.",
            lines[0][:-8],
            "SIGNATURE_INVALID",
            {},
        ),  # fmt: skip
        "dropped_entry": (
            "The last entry line removed.",
            b"\n".join(lines[:-1]),
            "ROOT_MISMATCH",
            {},
        ),  # fmt: skip
        "trailing_garbage": ("A garbage line appended.", good + b"\nxx", "ROOT_MISMATCH", {}),
        "tampered_label": (
            "One entry's label changed after signing.",
            good.replace(b",1,90]", b",0,90]", 1),
            "ROOT_MISMATCH",
            {},
        ),
        "tampered_data_life": (
            "One entry's data_life_days changed after signing.",
            good.replace(b",90]", b",900]", 1),
            "ROOT_MISMATCH",
            {},
        ),
        "stale": (
            "Presented after valid_until plus the skew allowance.",
            good,
            "EXPIRED",
            {"now": ISSUED + TTL + timedelta(seconds=61)},
        ),  # fmt: skip
        "not_yet_valid": (
            "Presented before issued_at minus the skew allowance.",
            good,
            "NOT_YET_VALID",
            {"now": ISSUED - timedelta(seconds=61)},
        ),  # fmt: skip
        "wrong_provider": (
            "Addressed to isv-a, presented at isv-b.",
            good,
            "WRONG_PROVIDER",
            {"data_provider": "isv-b"},
        ),  # fmt: skip
        "duplicate_merchant_signed": (
            "Signed and root-consistent, but one merchant appears twice.",
            _resign(good, [lines[1], lines[1]]),
            "ENTRY_INVALID",
            {},
        ),
        "non_canonical_entry_signed": (
            "Signed and root-consistent, but an entry has a space after a comma.",
            _resign(good, [lines[1].replace(b",", b", ", 1)]),
            "ENTRY_INVALID",
            {},
        ),
        "keyed_entry_signed": (
            "Signed and root-consistent, but an entry is a keyed object (the old format).",
            _resign(good, [canonical_json({"merchant_id": "m-000", "label": 0})]),
            "ENTRY_INVALID",
            {},
        ),
        "consent_ended_signed": (
            "Signed, but an entry's consent expired before the node's now.",
            _resign(good, [entry_line(_entry(9, consent_expiry=ISSUED))]),
            "ENTRY_INVALID",
            {},
        ),
        "header_not_canonical_field": (
            "Signed, but the header names an unknown purpose.",
            _resign(good, lines[1:], purpose="marketing"),
            "MALFORMED",
            {},
        ),
    }
    vectors = {}
    for name, (description, token, error, extra) in out.items():
        vectors[name] = {
            "description": description,
            "token_b64": base64.b64encode(token).decode(),
            "gateway_key": extra.get("gateway_key", "gateway"),
            "data_provider": extra.get("data_provider", "isv-a"),
            "now": extra.get("now", now).isoformat(),
            "seen": extra.get("seen", []),
            "expected_error": error,
        }
    return vectors


def public_key(name: str) -> bytes:
    """Raw public key bytes of the named vector key."""
    from cryptography.hazmat.primitives import serialization

    key = GATEWAY if name == "gateway" else OTHER
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def main() -> None:
    """(Re)write every vector file."""
    OUT.mkdir(parents=True, exist_ok=True)
    for name, vector in cases().items():
        (OUT / f"{name}.json").write_text(json.dumps(vector, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
