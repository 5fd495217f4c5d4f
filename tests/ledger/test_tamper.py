"""Tampering with the stored log is caught by export + offline audit and by verify_log.

The log holds 10 entries with signed checkpoints at sizes 4, 7 and 10; each
case alters the database the way an insider with SQL access could, exports,
and checks that the audit names the right index and reason. The export has
no tree nodes, so where the database variant can see a stored node disagree
it names an earlier index than the file's audit.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from ledger import (
    AuditReport,
    append_entries,
    audit_export,
    export_log,
    hash_leaf,
    make_vkey,
    sign_checkpoint,
    tree_head,
    verify_log,
)
from ledger._models import CheckpointRow, LogEntryRow, LogHeadRow, TreeNodeRow

ORIGIN = "fedgate.test/ledger"
KEY = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
VKEY = make_vkey(ORIGIN, KEY.public_key())


def _build(sessions: sessionmaker[Session]) -> None:
    for start, stop in ((0, 4), (4, 7), (7, 10)):
        with sessions() as s, s.begin():
            append_entries(
                s, [("test.tamper", {"i": i, "note": "abc"}) for i in range(start, stop)]
            )
            sign_checkpoint(s, KEY, ORIGIN)


def _flip_body_byte(s: Session) -> None:
    row = s.get(LogEntryRow, 5)
    assert row is not None
    row.leaf_data = row.leaf_data.replace(b'"abc"', b'"abd"')


def _rewrite_entry_and_hash(s: Session) -> None:
    row = s.get(LogEntryRow, 5)
    assert row is not None
    row.leaf_data = row.leaf_data.replace(b'"abc"', b'"abd"')
    row.leaf_hash = hash_leaf(row.leaf_data)


def _delete_entry(s: Session) -> None:
    s.execute(delete(LogEntryRow).where(LogEntryRow.seq == 5))


def _swap_entries(s: Session) -> None:
    a, b = s.get(LogEntryRow, 2), s.get(LogEntryRow, 6)
    assert a is not None and b is not None
    a.leaf_data, b.leaf_data = b.leaf_data, a.leaf_data
    a.leaf_hash, b.leaf_hash = b.leaf_hash, a.leaf_hash


def _truncate_tail(s: Session) -> None:
    s.execute(delete(LogEntryRow).where(LogEntryRow.seq >= 8))


def _truncate_and_rewind_head(s: Session) -> None:
    # A careful insider also rewinds the head and drops the tree above entry 8,
    # so head, entries and nodes agree with each other; only checkpoint 10 remains.
    root = tree_head(s, 8).root
    s.execute(delete(LogEntryRow).where(LogEntryRow.seq >= 8))
    for level in range(4):
        s.execute(
            delete(TreeNodeRow).where(TreeNodeRow.level == level, TreeNodeRow.index >= (8 >> level))
        )
    s.execute(update(LogHeadRow).where(LogHeadRow.id == 1).values(size=8, root=root))


def _replace_signature(s: Session) -> None:
    row = s.execute(select(CheckpointRow).where(CheckpointRow.size == 7)).scalar_one()
    text = row.signed_note[: row.signed_note.rfind("\n\n") + 1]
    key_id = base64.b64decode(row.signed_note.rstrip("\n").rsplit(" ", 1)[1])[:4]
    # Keep the log's key name and id, put another key's signature over the same text.
    forged = Ed25519PrivateKey.from_private_bytes(b"\x0a" * 32).sign(text.encode())
    signature = base64.b64encode(key_id + forged).decode()
    row.signed_note = f"{text}\n\u2014 {ORIGIN} {signature}\n"


# (name, tamper, (code, index) from the export's audit, (code, index) from verify_log)
CASES: list[tuple[str, Callable[[Session], None], tuple[str, int], tuple[str, int]]] = [
    ("flip-body-byte", _flip_body_byte, ("LEAF_HASH_MISMATCH", 5), ("LEAF_HASH_MISMATCH", 5)),
    (
        "rewrite-entry-and-hash",
        _rewrite_entry_and_hash,
        ("CHECKPOINT_ROOT_MISMATCH", 6),
        ("NODE_MISMATCH", 5),
    ),
    ("delete-entry", _delete_entry, ("SEQ_GAP", 5), ("SEQ_GAP", 5)),
    ("swap-entries", _swap_entries, ("LEAF_SEQ_MISMATCH", 2), ("LEAF_SEQ_MISMATCH", 2)),
    ("truncate-tail", _truncate_tail, ("TRUNCATED", 8), ("TRUNCATED", 8)),
    (
        "truncate-and-rewind-head",
        _truncate_and_rewind_head,
        ("TRUNCATED", 8),
        ("TRUNCATED", 8),
    ),
    (
        "replace-checkpoint-signature",
        _replace_signature,
        ("CHECKPOINT_SIGNATURE", 6),
        ("CHECKPOINT_SIGNATURE", 6),
    ),
]


def _export_and_audit(sessions: sessionmaker[Session], path: Path) -> AuditReport:
    with sessions() as s:
        export_log(s, path, KEY.public_key(), origin=ORIGIN)
    return audit_export(path, vkey=VKEY)


def test_untouched_log_audits_clean(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """Without tampering, export + audit and verify_log both pass with every checkpoint checked."""
    _build(sessions)

    report = _export_and_audit(sessions, tmp_path / "log.jsonl")
    with sessions() as s:
        live = verify_log(s, VKEY)

    assert report.ok, report.failure
    assert (report.size, report.checkpoints_verified) == (10, 3)
    assert live.ok, live.failure
    assert live.root == report.root


@pytest.mark.parametrize(("name", "tamper", "in_export", "in_db"), CASES, ids=[c[0] for c in CASES])
def test_db_tampering_is_caught(
    sessions: sessionmaker[Session],
    tmp_path: Path,
    name: str,
    tamper: Callable[[Session], None],
    in_export: tuple[str, int],
    in_db: tuple[str, int],
) -> None:
    """Each kind of database tampering yields the expected reason at the expected index."""
    _build(sessions)
    with sessions() as s, s.begin():
        tamper(s)

    report = _export_and_audit(sessions, tmp_path / f"{name}.jsonl")
    with sessions() as s:
        live = verify_log(s, VKEY)

    assert report.failure is not None
    assert (report.failure.code, report.first_bad_index) == in_export
    assert live.failure is not None
    assert (live.failure.code, live.first_bad_index) == in_db


def test_rewound_head_export_keeps_the_larger_checkpoint(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """The export of a rewound log still carries checkpoint 10, beyond its 8 entries."""
    _build(sessions)
    with sessions() as s, s.begin():
        _truncate_and_rewind_head(s)
    path = tmp_path / "rewound.jsonl"

    with sessions() as s:
        summary = export_log(s, path, KEY.public_key(), origin=ORIGIN)
    header = json.loads(path.read_text().splitlines()[0])

    assert (summary.size, summary.checkpoints) == (8, 3)
    assert (header["size"], header["checkpoints"]) == (8, 3)


def test_corrupted_tree_node_is_caught_by_verify_log(sessions: sessionmaker[Session]) -> None:
    """An altered interior node (which proofs are built from) is reported as NODE_MISMATCH."""
    _build(sessions)
    with sessions() as s, s.begin():
        s.execute(
            update(TreeNodeRow)
            .where(TreeNodeRow.level == 1, TreeNodeRow.index == 3)
            .values(hash=b"\x55" * 32)
        )

    with sessions() as s:
        live = verify_log(s, VKEY)

    assert live.failure is not None
    assert (live.failure.code, live.first_bad_index) == ("NODE_MISMATCH", 6)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _file_flip_byte(lines: list[str]) -> list[str]:
    # Line layout: header, 3 checkpoints, then entry i on line 4 + i.
    entry = json.loads(lines[4 + 3])
    leaf = bytearray(base64.b64decode(entry["leaf"]))
    leaf[10] ^= 0x01
    entry["leaf"] = base64.b64encode(bytes(leaf)).decode()
    return lines[: 4 + 3] + [json.dumps(entry) + "\n"] + lines[4 + 4 :]


def _file_delete(lines: list[str]) -> list[str]:
    return lines[: 4 + 5] + lines[4 + 6 :]


def _file_swap(lines: list[str]) -> list[str]:
    out = list(lines)
    out[4 + 1], out[4 + 8] = out[4 + 8], out[4 + 1]
    return out


def _file_truncate(lines: list[str]) -> list[str]:
    return lines[: 4 + 9]


def _file_strip_checkpoints(lines: list[str]) -> list[str]:
    # Drop every checkpoint and fix the header's count, so the file still parses.
    header = json.loads(lines[0])
    header["checkpoints"] = 0
    return [json.dumps(header) + "\n"] + lines[4:]


def _file_unsigned_tail(lines: list[str]) -> list[str]:
    # Drop the checkpoint at 10: entries 7..9 are then under no signature.
    header = json.loads(lines[0])
    header["checkpoints"] = 2
    return [json.dumps(header) + "\n"] + lines[1:3] + lines[4:]


def _file_bad_signature(lines: list[str]) -> list[str]:
    note = json.loads(lines[1])["checkpoint"]
    head, sig = note.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(sig))
    raw[-1] ^= 0x80
    forged = f"{head} {base64.b64encode(bytes(raw)).decode()}\n"
    return [lines[0], json.dumps({"checkpoint": forged}) + "\n"] + lines[2:]


FILE_CASES: list[tuple[str, Callable[[list[str]], list[str]], str, int]] = [
    ("flip-byte", _file_flip_byte, "LEAF_HASH_MISMATCH", 3),
    ("delete-line", _file_delete, "SEQ_GAP", 5),
    ("swap-lines", _file_swap, "SEQ_GAP", 1),
    ("truncate-tail", _file_truncate, "TRUNCATED", 9),
    ("strip-checkpoints", _file_strip_checkpoints, "NO_CHECKPOINT", 0),
    ("unsigned-tail", _file_unsigned_tail, "UNSIGNED_TAIL", 7),
    ("bad-signature", _file_bad_signature, "CHECKPOINT_SIGNATURE", 3),
]


@pytest.mark.parametrize(
    ("name", "edit", "code", "index"), FILE_CASES, ids=[c[0] for c in FILE_CASES]
)
def test_export_file_tampering_is_caught(
    sessions: sessionmaker[Session],
    tmp_path: Path,
    name: str,
    edit: Callable[[list[str]], list[str]],
    code: str,
    index: int,
) -> None:
    """Editing the export file itself is caught with the right reason and index."""
    _build(sessions)
    path = tmp_path / "log.jsonl"
    with sessions() as s:
        export_log(s, path, KEY.public_key(), origin=ORIGIN)
    path.write_text("".join(edit(_lines(path))))

    report = audit_export(path, vkey=VKEY)

    assert report.failure is not None
    assert (report.failure.code, report.first_bad_index) == (code, index)
