"""Export files and the offline audit: format, key pinning, and what a clean audit reports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, update
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
from ledger._models import LogEntryRow, LogHeadRow

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


def _export(sessions: sessionmaker[Session], path: Path) -> None:
    with sessions() as s:
        export_log(s, path, KEY, origin=ORIGIN)


def test_export_keeps_checkpoints_beyond_the_head(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A checkpoint larger than the head is exported, so the audit reports TRUNCATED."""
    _log(sessions, (3, 6))
    with sessions() as s, s.begin():
        s.execute(update(LogHeadRow).values(size=3, root=tree_head(s, 3).root))
    path = tmp_path / "log.jsonl"

    _export(sessions, path)
    report = audit_export(path, vkey=VKEY)

    assert report.failure is not None
    assert (report.failure.code, report.failure.index, report.failure.checkpoint_size) == (
        "TRUNCATED",
        3,
        6,
    )


def test_unsigned_log_fails_the_audit(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """Entries but no checkpoint: NO_CHECKPOINT; entries after the last one: UNSIGNED_TAIL."""
    with sessions() as s, s.begin():
        append_entries(s, [("test.audit", {"i": i}) for i in range(3)])
    bare, tail = tmp_path / "bare.jsonl", tmp_path / "tail.jsonl"
    _export(sessions, bare)
    with sessions() as s, s.begin():
        sign_checkpoint(s, KEY, ORIGIN)
        append_entries(s, [("test.audit", {"i": 3})])
    _export(sessions, tail)

    unsigned = audit_export(bare, vkey=VKEY)
    partly = audit_export(tail, vkey=VKEY)

    assert unsigned.failure is not None
    assert (unsigned.failure.code, unsigned.failure.index) == ("NO_CHECKPOINT", 0)
    assert partly.failure is not None
    assert (partly.failure.code, partly.failure.index) == ("UNSIGNED_TAIL", 3)
    assert partly.checkpoints_verified == 1


def test_export_can_require_a_signed_head(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """With require_signed, an unsigned tail is refused before anything is written."""
    _log(sessions, (2,))
    with sessions() as s, s.begin():
        append_entries(s, [("test.audit", {"i": 2})])
    out = tmp_path / "out"
    out.mkdir()

    with sessions() as s, pytest.raises(ExportFormatError) as info:
        export_log(s, out / "log.jsonl", KEY, origin=ORIGIN, require_signed=True)

    assert info.value.code == "UNSIGNED_TAIL"
    assert list(out.iterdir()) == []


def test_failed_export_keeps_the_previous_file(
    sessions: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails part-way (here at fsync) leaves the earlier export untouched."""
    _log(sessions, (2,))
    out = tmp_path / "out"
    out.mkdir()
    path = out / "log.jsonl"
    _export(sessions, path)
    before = path.read_bytes()
    _log(sessions, (5,))

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        _export(sessions, path)

    assert path.read_bytes() == before
    assert [p.name for p in out.iterdir()] == ["log.jsonl"]


def test_non_utf8_header_is_a_bad_export(tmp_path: Path) -> None:
    """A first line that is not UTF-8 raises ExportFormatError, not UnicodeDecodeError."""
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"format": "fedgate.ledger.export\xff"}\n')

    with pytest.raises(ExportFormatError) as info:
        audit_export(path)

    assert info.value.code == "BAD_EXPORT"


def test_non_utf8_entry_line_is_malformed_at_its_index(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """An entry line with a byte that is not UTF-8 is MALFORMED_LINE at that entry."""
    _log(sessions, (4,))
    path = tmp_path / "log.jsonl"
    _export(sessions, path)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2 + 2] = lines[2 + 2].replace(b'"seq":2', b'"seq":2,"x":"\xff"')
    path.write_bytes(b"".join(lines))

    report = audit_export(path, vkey=VKEY)

    assert report.failure is not None
    assert (report.failure.code, report.failure.index) == ("MALFORMED_LINE", 2)


@pytest.mark.parametrize(("field", "value"), [("size", -1), ("checkpoints", True)])
def test_header_counts_must_be_non_negative_integers(
    tmp_path: Path, field: str, value: object
) -> None:
    """A negative size or a boolean count in the header is BAD_EXPORT."""
    header = {
        "format": "fedgate.ledger.export",
        "version": 1,
        "origin": ORIGIN,
        "vkey": VKEY,
        "size": 0,
        "root": "",
        "checkpoints": 0,
    }
    header[field] = value
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(header) + "\n")

    with pytest.raises(ExportFormatError) as info:
        audit_export(path)

    assert info.value.code == "BAD_EXPORT"
