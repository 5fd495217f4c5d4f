"""Export files and the offline audit: format, key pinning, and what a clean audit reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ledger import (
    ExportFormatError,
    append_entries,
    audit_export,
    export_log,
    make_vkey,
    sign_checkpoint,
    tree_head,
    verify_log,
)
from ledger._models import LogEntryRow

ORIGIN = "fedgate.test/ledger"
KEY = Ed25519PrivateKey.from_private_bytes(b"\x0b" * 32)
VKEY = make_vkey(ORIGIN, KEY.public_key())


def _log(sessions: sessionmaker[Session], sizes: tuple[int, ...]) -> None:
    done = 0
    for size in sizes:
        with sessions() as s, s.begin():
            append_entries(s, [("test.audit", {"i": i, "t": "é"}) for i in range(done, size)])
            sign_checkpoint(s, KEY, ORIGIN)
        done = size


def test_export_layout(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """Header, then checkpoints smallest first, then one line per entry in seq order."""
    _log(sessions, (3, 8))
    path = tmp_path / "log.jsonl"

    with sessions() as s:
        summary = export_log(s, path, KEY, origin=ORIGIN)
        root = tree_head(s).root
    lines = [json.loads(line) for line in path.read_text().splitlines()]

    header = lines[0]
    assert (header["format"], header["version"], header["origin"]) == (
        "fedgate.ledger.export",
        1,
        ORIGIN,
    )
    assert (header["vkey"], header["size"], header["checkpoints"]) == (VKEY, 8, 2)
    assert (summary.size, summary.root, summary.vkey) == (8, root, VKEY)
    assert [line["checkpoint"].split("\n")[1] for line in lines[1:3]] == ["3", "8"]
    assert [line["seq"] for line in lines[3:]] == list(range(8))


def test_clean_audit_report(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """A clean export audits OK (also in canonical mode) with every checkpoint verified."""
    _log(sessions, (1, 2, 5, 16, 21))
    path = tmp_path / "log.jsonl"
    with sessions() as s:
        export_log(s, path, KEY.public_key())
        root = tree_head(s).root

    report = audit_export(path, vkey=VKEY)
    strict = audit_export(path, vkey=VKEY, canonical=True)

    assert report.ok and strict.ok
    assert (report.size, report.root, report.checkpoints_verified) == (21, root, 5)
    assert report.checkpoint_sizes == (1, 2, 5, 16, 21)
    assert report.first_bad_index is None


def test_empty_log_exports_and_audits(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """An empty log with an empty-tree checkpoint exports and audits clean."""
    with sessions() as s, s.begin():
        sign_checkpoint(s, KEY, ORIGIN)
    path = tmp_path / "empty.jsonl"
    with sessions() as s:
        export_log(s, path, KEY, origin=ORIGIN)

    report = audit_export(path, vkey=VKEY)

    assert report.ok
    assert (report.size, report.checkpoints_verified) == (0, 1)


def test_pinned_key_must_match(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """Auditing against another key than the file's reports KEY_MISMATCH."""
    _log(sessions, (2,))
    path = tmp_path / "log.jsonl"
    with sessions() as s:
        export_log(s, path, KEY, origin=ORIGIN)
    other = make_vkey(ORIGIN, Ed25519PrivateKey.from_private_bytes(b"\x0c" * 32).public_key())

    report = audit_export(path, vkey=other)

    assert report.failure is not None
    assert report.failure.code == "KEY_MISMATCH"


def test_export_needs_an_origin(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """Without an origin and without checkpoints the export refuses, writing nothing."""
    with sessions() as s, s.begin():
        append_entries(s, [("test.audit", {"i": 0})])
    path = tmp_path / "log.jsonl"

    with sessions() as s, pytest.raises(ExportFormatError) as info:
        export_log(s, path, KEY)

    assert info.value.code == "NO_ORIGIN"
    assert not path.exists()


@pytest.mark.parametrize(
    "first_line",
    ["not json", '{"format": "other"}', '{"format": "fedgate.ledger.export", "version": 2}'],
)
def test_not_an_export(tmp_path: Path, first_line: str) -> None:
    """Files that are not version-1 exports raise ExportFormatError (BAD_EXPORT)."""
    path = tmp_path / "bad.jsonl"
    path.write_text(first_line + "\n")

    with pytest.raises(ExportFormatError) as info:
        audit_export(path)

    assert info.value.code == "BAD_EXPORT"


def test_malformed_entry_line(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """A garbled entry line is reported as MALFORMED_LINE at its position."""
    _log(sessions, (4,))
    path = tmp_path / "log.jsonl"
    with sessions() as s:
        export_log(s, path, KEY, origin=ORIGIN)
    lines = path.read_text().splitlines(keepends=True)
    lines[2 + 2] = '{"seq": 2, "leaf": "!!", "hash": ""}\n'
    path.write_text("".join(lines))

    report = audit_export(path, vkey=VKEY)

    assert report.failure is not None
    assert (report.failure.code, report.failure.index) == ("MALFORMED_LINE", 2)


def test_verify_log_reads_only(sessions: sessionmaker[Session]) -> None:
    """verify_log on a clean database passes and changes nothing."""
    _log(sessions, (6, 9))

    with sessions() as s:
        report = verify_log(s, VKEY)
        count = s.execute(select(func.count()).select_from(LogEntryRow)).scalar_one()

    assert report.ok
    assert (report.size, report.checkpoints_verified, count) == (9, 2, 9)
