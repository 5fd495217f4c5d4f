"""``fedgate ledger …`` and ``fedgate audit verify`` end to end, on both databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from gateway.cli import app
from tests.utils.cli import cli_settings


@pytest.fixture
def data_dir(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh data directory (keys) on the test database; CLI caches reset around."""
    monkeypatch.delenv("FEDGATE_KEY_DIR", raising=False)
    with cli_settings(monkeypatch, db_url, tmp_path / "data"):
        yield tmp_path / "data"


def _run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def _vkey(export: Path) -> str:
    header: dict[str, object] = json.loads(export.read_text().splitlines()[0])
    return str(header["vkey"])


def _entries(export: Path) -> int:
    return sum(1 for line in export.read_text().splitlines() if '"leaf"' in line)


def test_demo_then_audit_and_tamper(data_dir: Path, tmp_path: Path) -> None:
    """The demo exports a log that `audit verify` accepts; one edited byte makes it exit 1."""
    export = tmp_path / "out.jsonl"

    demo = _run("ledger", "demo")
    exported = _run("ledger", "export", str(export))
    vkey = _vkey(export)
    clean = _run("audit", "verify", str(export), "--vkey", vkey)
    lines = export.read_text().splitlines(keepends=True)
    lines[2 + 3] = lines[2 + 3].replace('"seq":3', '"seq":4')
    export.write_text("".join(lines))
    tampered = _run("audit", "verify", str(export), "--vkey", vkey)

    assert demo.exit_code == 0, demo.output
    assert "OK" in demo.output
    assert exported.exit_code == 0, exported.output
    assert clean.exit_code == 0, clean.output
    assert tampered.exit_code == 1
    assert "SEQ_GAP" in tampered.output
    assert "first bad index" in tampered.output


def test_proof_checkpoint_and_errors(data_dir: Path) -> None:
    """`proof` prints a verifiable RFC 9162 proof; bad indices exit non-zero with a code."""
    _run("ledger", "demo")

    proof = _run("ledger", "proof", "2", "--size", "4")
    checkpoint = _run("ledger", "checkpoint")
    listed = _run("ledger", "checkpoints")
    beyond = _run("ledger", "proof", "99")
    live = _run("ledger", "verify")
    missing = _run("audit", "verify", str(data_dir / "nope.jsonl"), "--trust-export-key")

    assert proof.exit_code == 0, proof.output
    body = json.loads(proof.output)
    assert (body["leafIdx"], body["treeSize"], len(body["proof"])) == (2, 4, 2)
    assert checkpoint.exit_code == 0, checkpoint.output
    assert "size 5" in checkpoint.output
    assert listed.exit_code == 0 and "5" in listed.output
    assert beyond.exit_code == 1
    assert "OUT_OF_RANGE" in beyond.output
    assert live.exit_code == 0, live.output
    assert missing.exit_code == 2
    assert "NO_FILE" in missing.output


def test_export_signs_the_head_first(data_dir: Path, tmp_path: Path) -> None:
    """Entries appended after the last checkpoint are signed by `export`, so the file audits."""
    _run("ledger", "demo")
    _run("book", "open", "cash", "--kind", "asset", "--currency", "CNY")
    export = tmp_path / "out.jsonl"

    exported = _run("ledger", "export", str(export))
    audited = _run("audit", "verify", str(export), "--vkey", _vkey(export))
    listed = _run("ledger", "checkpoints")

    assert exported.exit_code == 0, exported.output
    assert "6 entries, 2 checkpoints" in exported.output
    assert audited.exit_code == 0, audited.output
    assert _entries(export) == 6
    assert "6" in listed.output


def test_export_no_sign_refuses_an_unsigned_tail(data_dir: Path, tmp_path: Path) -> None:
    """--no-sign refuses an unsigned tail with UNSIGNED_TAIL and the fix; nothing is written."""
    _run("ledger", "demo")
    _run("book", "open", "cash", "--kind", "asset", "--currency", "CNY")
    export = tmp_path / "out.jsonl"

    refused = _run("ledger", "export", str(export), "--no-sign")

    assert refused.exit_code == 1
    assert "error[UNSIGNED_TAIL]" in refused.output
    assert "fedgate ledger checkpoint" in refused.output
    assert not export.exists()


def test_export_into_missing_folder_is_a_clean_error(data_dir: Path, tmp_path: Path) -> None:
    """`ledger export /nodir/x` exits 1 with CANNOT_WRITE instead of a traceback."""
    _run("ledger", "demo")

    result = _run("ledger", "export", str(tmp_path / "nodir" / "out.jsonl"))

    assert result.exit_code == 1
    assert "error[CANNOT_WRITE]" in result.output
    assert isinstance(result.exception, SystemExit)


def test_audit_needs_a_pinned_key(data_dir: Path, tmp_path: Path) -> None:
    """No --vkey exits 2; --trust-export-key passes with a warning; --vkey takes a file too."""
    _run("ledger", "demo")
    export = tmp_path / "out.jsonl"
    _run("ledger", "export", str(export))
    key_file = tmp_path / "log.vkey"
    key_file.write_text(_vkey(export) + "\n")

    unpinned = _run("audit", "verify", str(export))
    trusting = _run("audit", "verify", str(export), "--trust-export-key")
    from_file = _run("audit", "verify", str(export), "--vkey", str(key_file))
    bad_key = _run("audit", "verify", str(export), "--vkey", "not-a-key")

    assert unpinned.exit_code == 2
    assert "error[NO_VKEY]" in unpinned.output
    assert trusting.exit_code == 0, trusting.output
    assert "WARNING" in trusting.stderr and "self-consistent" in trusting.stderr
    assert from_file.exit_code == 0, from_file.output
    assert "WARNING" not in from_file.output
    assert bad_key.exit_code == 2
    assert "error[BAD_VKEY]" in bad_key.output


def test_audit_of_a_non_utf8_file_is_a_clean_error(data_dir: Path, tmp_path: Path) -> None:
    """A file that is not UTF-8 exits 2 with BAD_EXPORT, not a UnicodeDecodeError traceback."""
    _run("ledger", "demo")
    export = tmp_path / "out.jsonl"
    _run("ledger", "export", str(export))
    vkey = _vkey(export)
    export.write_bytes(b"\xff\xfe" + export.read_bytes())

    result = _run("audit", "verify", str(export), "--vkey", vkey)

    assert result.exit_code == 2
    assert "error[BAD_EXPORT]" in result.output
    assert isinstance(result.exception, SystemExit)
