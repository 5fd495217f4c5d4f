"""Walk the manifest vectors in ``tests/testdata/consent_manifest/``; report every failure."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consent import ManifestRejected, ManifestReplayGuard, verify_manifest

from . import make_manifest_vectors as gen

VECTORS = gen.OUT


def _run(vector: dict[str, object]) -> str | None:
    """The error code a node answers for this vector (None when accepted)."""
    guard = ManifestReplayGuard()
    for job_id, round_, payload_sha256 in vector["seen"]:  # type: ignore[attr-defined]
        guard.check_and_record(job_id, round_, payload_sha256)
    key = Ed25519PublicKey.from_public_bytes(gen.public_key(str(vector["gateway_key"])))
    try:
        verify_manifest(
            base64.b64decode(str(vector["token_b64"])),
            gateway_key=key,
            data_provider=str(vector["data_provider"]),
            now=datetime.fromisoformat(str(vector["now"])),
            replay_guard=guard,
        )
    except ManifestRejected as exc:
        return exc.code
    return None


def test_every_vector_gets_its_expected_answer() -> None:
    """Each case file's expected error (or acceptance) holds; all mismatches are listed at once."""
    files = sorted(VECTORS.glob("*.json"))
    failures = []
    for path in files:
        vector = json.loads(path.read_text())
        got = _run(vector)
        if got != vector["expected_error"]:
            failures.append(f"{path.stem}: expected {vector['expected_error']}, got {got}")

    assert len(files) >= 22
    assert failures == []


def test_generator_reproduces_the_files() -> None:
    """The checked-in files are exactly what the generator writes (no hand edits, no drift)."""
    expected = {f"{name}.json": v for name, v in gen.cases().items()}

    on_disk = {p.name: json.loads(p.read_text()) for p in Path(VECTORS).glob("*.json")}

    assert on_disk == expected
