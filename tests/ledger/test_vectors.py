"""RFC 9162 test vectors from ``../shared/testvectors/rfc9162``: every case, one report."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from ledger import LogError, verify_consistency, verify_inclusion

_REPO = Path(__file__).resolve().parents[2]
_SHARED = Path("shared") / "testvectors" / "rfc9162"
# ``../shared`` next to the checkout; a clone made deeper in the same workspace finds the
# nearest ``shared/`` above it. The first candidate is reported when none exists.
_CANDIDATES = [parent / _SHARED for parent in _REPO.parents]
_DEFAULT_ROOT = next((c for c in _CANDIDATES if c.is_dir()), _CANDIDATES[0])


def _vector_root() -> Path:
    override = os.environ.get("FEDGATE_TESTVECTORS")
    root = Path(override) / "rfc9162" if override else _DEFAULT_ROOT
    if override and not root.is_dir():
        root = Path(override)
    return root


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "", validate=True)


def _proof(values: list[str] | None) -> list[bytes]:
    return [_b64(v) for v in values or []]


def _check_inclusion(case: dict[str, Any]) -> None:
    verify_inclusion(
        _b64(case["leafHash"]),
        case["leafIdx"],
        case["treeSize"],
        _proof(case["proof"]),
        _b64(case["root"]),
    )


def _check_consistency(case: dict[str, Any]) -> None:
    verify_consistency(
        case["size1"],
        case["size2"],
        _proof(case["proof"]),
        _b64(case["root1"]),
        _b64(case["root2"]),
    )


def _run_folder(kind: str) -> tuple[int, list[str]]:
    check = _check_inclusion if kind == "inclusion" else _check_consistency
    files = sorted((_vector_root() / kind).rglob("*.json"))
    failures: list[str] = []
    for path in files:
        case = json.loads(path.read_text())
        relative = path.relative_to(_vector_root()).as_posix()
        name = f"{relative} ({case.get('desc')})"
        try:
            check(case)
        except LogError as exc:
            if not case["wantErr"]:
                failures.append(f"{name}: rejected a valid case: {exc.code} {exc}")
        else:
            if case["wantErr"]:
                failures.append(f"{name}: accepted a case that must fail")
    return len(files), failures


@pytest.mark.parametrize("kind", ["inclusion", "consistency"])
def test_rfc9162_vectors(kind: str) -> None:
    """Every happy path verifies and every wantErr case is rejected with a LogError."""
    if not _vector_root().is_dir():
        pytest.fail(f"test vectors not found at {_vector_root()} (set FEDGATE_TESTVECTORS)")

    count, failures = _run_folder(kind)

    assert count > 0, f"no {kind} vectors under {_vector_root()}"
    assert failures == []
