"""``fedgate ledger …`` and ``fedgate audit verify`` end to end on a SQLite data directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import _common, app


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh fedgate data directory for the CLI (settings and engine caches reset)."""
    monkeypatch.setenv("FEDGATE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("FEDGATE_DATABASE_URL", raising=False)
    monkeypatch.delenv("FEDGATE_KEY_DIR", raising=False)
    _common.settings.cache_clear()
    _common.sessions.cache_clear()
    yield tmp_path / "data"
    _common.settings.cache_clear()
    _common.sessions.cache_clear()


def test_demo_then_audit_and_tamper(data_dir: Path, tmp_path: Path) -> None:
    """The demo exports a log that `audit verify` accepts; one edited byte makes it exit 1."""
    runner = CliRunner()

    demo = runner.invoke(app, ["ledger", "demo"])
    export = tmp_path / "out.jsonl"
    exported = runner.invoke(app, ["ledger", "export", str(export)])
    vkey = json.loads(export.read_text().splitlines()[0])["vkey"]
    clean = runner.invoke(app, ["audit", "verify", str(export), "--vkey", vkey])
    lines = export.read_text().splitlines(keepends=True)
    lines[2 + 3] = lines[2 + 3].replace('"seq":3', '"seq":4')
    export.write_text("".join(lines))
    tampered = runner.invoke(app, ["audit", "verify", str(export), "--vkey", vkey])

    assert demo.exit_code == 0, demo.output
    assert "OK" in demo.output
    assert exported.exit_code == 0, exported.output
    assert clean.exit_code == 0, clean.output
    assert tampered.exit_code == 1
    assert "SEQ_GAP" in tampered.output
    assert "first bad index" in tampered.output


def test_proof_checkpoint_and_errors(data_dir: Path) -> None:
    """`proof` prints a verifiable RFC 9162 proof; bad indices exit non-zero with a code."""
    runner = CliRunner()
    runner.invoke(app, ["ledger", "demo"])

    proof = runner.invoke(app, ["ledger", "proof", "2", "--size", "4"])
    checkpoint = runner.invoke(app, ["ledger", "checkpoint"])
    listed = runner.invoke(app, ["ledger", "checkpoints"])
    beyond = runner.invoke(app, ["ledger", "proof", "99"])
    live = runner.invoke(app, ["ledger", "verify"])
    missing = runner.invoke(app, ["audit", "verify", str(data_dir / "nope.jsonl")])

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
