"""Signed checkpoints: C2SP body, storage, listing, and refusal to contradict the last one."""

from __future__ import annotations

import base64
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from ledger import (
    EMPTY_ROOT,
    Checkpoint,
    CheckpointRefused,
    NoteError,
    append_entries,
    list_checkpoints,
    make_vkey,
    open_checkpoint,
    sign_checkpoint,
    tree_head,
    verify_log,
)
from ledger._checkpoint import parse_checkpoint_body
from ledger._models import CheckpointRow, LogEntryRow, LogHeadRow, TreeNodeRow

ORIGIN = "fedgate.test/ledger"
KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
VKEY = make_vkey(ORIGIN, KEY.public_key())


def _append(sessions: sessionmaker[Session], count: int, start: int = 0) -> None:
    with sessions() as s, s.begin():
        append_entries(s, [("test.cp", {"i": start + i}) for i in range(count)])


def _checkpoint_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return s.execute(select(func.count()).select_from(CheckpointRow)).scalar_one()


def test_sign_stores_a_verifiable_c2sp_checkpoint(sessions: sessionmaker[Session]) -> None:
    """The checkpoint body is origin, size, base64 root; the note verifies with the vkey."""
    _append(sessions, 5)

    with sessions() as s, s.begin():
        cp = sign_checkpoint(s, KEY, ORIGIN)
    with sessions() as s:
        root = tree_head(s, 5).root

    assert isinstance(cp, Checkpoint)
    assert (cp.origin, cp.size, cp.root) == (ORIGIN, 5, root)
    assert cp.note.startswith(f"{ORIGIN}\n5\n{base64.b64encode(root).decode()}\n\n\u2014 {ORIGIN} ")
    assert open_checkpoint(cp.note, VKEY) == cp


def test_list_checkpoints_oldest_first(sessions: sessionmaker[Session]) -> None:
    """Checkpoints are listed in size order; re-signing an unchanged log returns the same one."""
    with sessions() as s, s.begin():
        empty = sign_checkpoint(s, KEY, ORIGIN)
    _append(sessions, 3)
    with sessions() as s, s.begin():
        first = sign_checkpoint(s, KEY, ORIGIN)
    with sessions() as s, s.begin():
        again = sign_checkpoint(s, KEY, ORIGIN)
    _append(sessions, 4, start=3)
    with sessions() as s, s.begin():
        second = sign_checkpoint(s, KEY, ORIGIN)

    with sessions() as s:
        listed = list_checkpoints(s)

    assert empty.root == EMPTY_ROOT
    assert again == first
    assert listed == [empty, first, second]
    assert [c.size for c in listed] == [0, 3, 7]


def test_refuses_when_history_was_rewritten(sessions: sessionmaker[Session]) -> None:
    """If the tree no longer extends the last checkpoint, signing is refused and nothing stored."""
    _append(sessions, 4)
    with sessions() as s, s.begin():
        sign_checkpoint(s, KEY, ORIGIN)
    _append(sessions, 2, start=4)
    # Rewrite history consistently in entries, nodes and head: a forked log.
    with sessions() as s, s.begin():
        s.execute(
            update(TreeNodeRow)
            .where(TreeNodeRow.level == 0, TreeNodeRow.index == 1)
            .values(hash=b"\x11" * 32)
        )
        s.execute(
            update(TreeNodeRow)
            .where(TreeNodeRow.level == 1, TreeNodeRow.index == 0)
            .values(hash=b"\x22" * 32)
        )
        s.execute(
            update(TreeNodeRow)
            .where(TreeNodeRow.level == 2, TreeNodeRow.index == 0)
            .values(hash=b"\x33" * 32)
        )
    with sessions() as s, s.begin():
        s.execute(update(LogHeadRow).values(root=tree_head(s, 6).root))

    with sessions() as s, s.begin(), pytest.raises(CheckpointRefused) as info:
        sign_checkpoint(s, KEY, ORIGIN)

    assert info.value.code == "CHECKPOINT_INCONSISTENT"
    assert _checkpoint_count(sessions) == 1


def test_refuses_when_log_shrank(sessions: sessionmaker[Session]) -> None:
    """A head smaller than the last checkpoint is refused with LOG_SHRANK."""
    _append(sessions, 4)
    with sessions() as s, s.begin():
        sign_checkpoint(s, KEY, ORIGIN)
    with sessions() as s, s.begin():
        s.execute(update(LogHeadRow).values(size=2, root=tree_head(s, 2).root))

    with sessions() as s, s.begin(), pytest.raises(CheckpointRefused) as info:
        sign_checkpoint(s, KEY, ORIGIN)

    assert info.value.code == "LOG_SHRANK"
    assert _checkpoint_count(sessions) == 1


def test_refuses_head_that_disagrees_with_tree(sessions: sessionmaker[Session]) -> None:
    """A head root that the stored tree does not reproduce is refused with HEAD_MISMATCH."""
    _append(sessions, 3)
    with sessions() as s, s.begin():
        s.execute(update(LogHeadRow).values(root=b"\x00" * 32))

    with sessions() as s, s.begin(), pytest.raises(CheckpointRefused) as info:
        sign_checkpoint(s, KEY, ORIGIN)

    assert info.value.code == "HEAD_MISMATCH"
    assert _checkpoint_count(sessions) == 0


def test_refuses_other_origin(sessions: sessionmaker[Session]) -> None:
    """Signing under another origin than the last checkpoint's is refused."""
    _append(sessions, 1)
    with sessions() as s, s.begin():
        sign_checkpoint(s, KEY, ORIGIN)
    _append(sessions, 1, start=1)

    with sessions() as s, s.begin(), pytest.raises(CheckpointRefused) as info:
        sign_checkpoint(s, KEY, "other.example/log")

    assert info.value.code == "ORIGIN_MISMATCH"
    assert _checkpoint_count(sessions) == 1


def test_refusal_keeps_entries_in_other_transactions(sessions: sessionmaker[Session]) -> None:
    """A refused checkpoint loses nothing already stored."""
    _append(sessions, 3)
    with sessions() as s, s.begin():
        s.execute(update(LogHeadRow).values(root=b"\x00" * 32))

    with sessions() as s, s.begin(), pytest.raises(CheckpointRefused):
        sign_checkpoint(s, KEY, ORIGIN)

    with sessions() as s:
        assert s.execute(select(func.count()).select_from(LogEntryRow)).scalar_one() == 3


@pytest.mark.parametrize(
    "body",
    [
        "origin\n5\n",
        "origin\n05\n" + base64.b64encode(b"\0" * 32).decode() + "\n",
        "origin\n-5\n" + base64.b64encode(b"\0" * 32).decode() + "\n",
        "origin\n5\n" + base64.b64encode(b"\0" * 31).decode() + "\n",
        "origin\n5\nnot-base64!\n",
        "origin\n5\n" + base64.b64encode(b"\0" * 32).decode(),
        "\n5\n" + base64.b64encode(b"\0" * 32).decode() + "\n",
    ],
)
def test_malformed_checkpoint_bodies(body: str) -> None:
    """Missing lines, leading zeros, signs, short roots, bad base64, no final newline: rejected."""
    with pytest.raises(NoteError) as info:
        parse_checkpoint_body(body)

    assert info.value.code == "MALFORMED_CHECKPOINT"


def test_concurrent_appends_and_checkpoints(sessions: sessionmaker[Session]) -> None:
    """Checkpoints signed while others append are all consistent and the log verifies."""
    errors: list[BaseException] = []

    def appender(t: int) -> None:
        try:
            for i in range(8):
                with sessions() as s, s.begin():
                    append_entries(s, [("test.cp", {"t": t, "i": i})])
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    def signer() -> None:
        try:
            for _ in range(8):
                with sessions() as s, s.begin():
                    sign_checkpoint(s, KEY, ORIGIN)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=appender, args=(t,)) for t in range(3)]
    threads.append(threading.Thread(target=signer))
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    with sessions() as s:
        report = verify_log(s, VKEY)

    assert errors == []
    assert report.ok, report.failure
    assert report.size == 24
