"""Witnesses over real loopback HTTP: quorum checkpoints, exports that carry them, a fork.

Three `fedgate witness` folders serve C2SP add-checkpoint on 127.0.0.1 (uvicorn
in a thread); `fedgate ledger checkpoint --witness URL,VKEY … --quorum N`
collects cosignatures, and `fedgate audit verify --witness VKEY … --quorum N`
requires them. Then the operator forks its log and the witnesses refuse.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import text
from typer.testing import CliRunner

import ledger
from gateway.cli import app
from gateway.db import make_engine, make_sessionmaker
from gateway.keys import load_or_create_key
from gateway.witness import make_app, open_witness, serve_in_thread
from tests.utils.cli import cli_settings

ORIGIN = "fedgate.example/ledger"


def _run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def data_dir(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI on the test database with a fresh data directory (keys)."""
    monkeypatch.delenv("FEDGATE_KEY_DIR", raising=False)
    with cli_settings(monkeypatch, db_url, tmp_path / "data"):
        yield tmp_path / "data"


@pytest.fixture
def witnesses(data_dir: Path, tmp_path: Path) -> Iterator[list[tuple[Path, str, str]]]:
    """Three witnesses following the log: (folder, URL, cosigner vkey) each."""
    log_vkey = ledger.make_vkey(ORIGIN, load_or_create_key(data_dir / "keys", "log").public_key())
    found = []
    with ExitStack() as stack:
        for n in range(3):
            folder = tmp_path / f"w{n}"
            init = _run("witness", "init", str(folder), "--name", f"isv-{n}.example/witness")
            assert init.exit_code == 0, init.output
            assert _run("witness", "trust", str(folder), log_vkey).exit_code == 0
            url = stack.enter_context(serve_in_thread(make_app(open_witness(folder))))
            found.append((folder, url, init.stdout.strip()))
        yield found


def _flags(witnesses: list[tuple[Path, str, str]], *, urls: bool) -> list[str]:
    out = []
    for _, url, vkey in witnesses:
        out += ["--witness", f"{url},{vkey}" if urls else vkey]
    return out


def test_quorum_checkpoint_export_and_audit(
    data_dir: Path, tmp_path: Path, witnesses: list[tuple[Path, str, str]]
) -> None:
    """Three witnesses cosign twice (0→5, 5→6); the export carries them; the audit counts them."""
    assert _run("ledger", "demo").exit_code == 0
    first = _run("ledger", "checkpoint", *_flags(witnesses, urls=True), "--quorum", "3")
    assert _run("book", "open", "cash", "--kind", "asset", "--currency", "CNY").exit_code == 0
    second = _run("ledger", "checkpoint", *_flags(witnesses, urls=True), "--quorum", "3")
    export = tmp_path / "out.jsonl"
    assert _run("ledger", "export", str(export)).exit_code == 0
    vkey = ledger.make_vkey(ORIGIN, load_or_create_key(data_dir / "keys", "log").public_key())
    audited = _run("audit", "verify", str(export), "--vkey", vkey, *_flags(witnesses, urls=False))
    stranger = ledger.make_cosigner_vkey(
        "stranger.example/w", load_or_create_key(tmp_path / "s", "k").public_key()
    )
    short = _run("audit", "verify", str(export), "--vkey", vkey, "--witness", stranger,
                 "--witness", witnesses[0][2], "--quorum", "2")  # fmt: skip

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert "witnessed by 3 of 3" in second.output
    assert second.stdout.count("\u2014 isv-") == 3
    assert audited.exit_code == 0, audited.output
    assert "witnessed by" in audited.output
    assert short.exit_code == 1
    assert "FAILED NO_QUORUM" in short.output and "first bad index" in short.output
    for folder, _, _ in witnesses:
        assert open_witness(folder).latest(ORIGIN).size == 6  # type: ignore[union-attr]


def test_fork_is_refused_by_witnesses_and_named_by_the_audit(
    data_dir: Path, db_url: str, tmp_path: Path, witnesses: list[tuple[Path, str, str]]
) -> None:
    """The operator signs another tree of the same size: witnesses say FORK, so does the audit."""
    assert _run("ledger", "demo").exit_code == 0
    assert _run("ledger", "checkpoint", *_flags(witnesses, urls=True)).exit_code == 0
    # The fork: a fresh database history of the same size under the same key.
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            for table in ("ledger_cosignatures", "ledger_checkpoints", "ledger_tree_nodes",
                          "ledger_entries", "ledger_head"):  # fmt: skip
                conn.execute(text(f"DELETE FROM {table}"))
    finally:
        engine.dispose()
    key = load_or_create_key(data_dir / "keys", "log")
    for n in range(5):
        assert (
            _run("book", "open", f"acct-{n}", "--kind", "asset", "--currency", "CNY").exit_code == 0
        )

    refused = _run("ledger", "checkpoint", *_flags(witnesses, urls=True), "--quorum", "2")
    export = tmp_path / "forked.jsonl"
    assert _run("ledger", "export", str(export)).exit_code == 0
    pin = tmp_path / "pin.note"
    shown = _run("witness", "show", str(witnesses[0][0]), "--out", str(pin))
    vkey = ledger.make_vkey(ORIGIN, key.public_key())
    audit = _run("audit", "verify", str(export), "--vkey", vkey, "--since", str(pin))
    quorum = _run("audit", "verify", str(export), "--vkey", vkey, *_flags(witnesses, urls=False))

    assert refused.exit_code == 1
    assert refused.output.count("refused: FORK (HTTP 409)") == 3
    assert "error[NO_QUORUM]" in refused.output
    assert shown.exit_code == 0 and "FORK" in shown.output
    assert audit.exit_code == 1
    assert "FAILED FORK" in audit.output and "first bad index" in audit.output
    assert "4" in audit.output.split("first bad index")[1][:40]
    assert quorum.exit_code == 1 and "FAILED NO_QUORUM" in quorum.output


def test_cosign_a_request_file_without_http(data_dir: Path, db_url: str, tmp_path: Path) -> None:
    """`fedgate witness cosign DIR FILE` answers one request; a replayed stale one is refused."""
    log_key = load_or_create_key(data_dir / "keys", "log")
    folder = tmp_path / "w"
    assert _run("witness", "init", str(folder), "--name", "node.example/w").exit_code == 0
    assert _run("witness", "trust", str(folder), ledger.make_vkey(ORIGIN, log_key.public_key()))
    assert _run("ledger", "demo").exit_code == 0
    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine)() as s:
            checkpoint = ledger.list_checkpoints(s)[-1]
            (tmp_path / "req").write_bytes(ledger.witness_request(s, checkpoint, 0))
    finally:
        engine.dispose()

    first = _run("witness", "cosign", str(folder), str(tmp_path / "req"))
    again = _run("witness", "cosign", str(folder), str(tmp_path / "req"))

    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("\u2014 node.example/w ")
    assert again.exit_code == 1 and "error[OLD_SIZE_MISMATCH]" in again.output
