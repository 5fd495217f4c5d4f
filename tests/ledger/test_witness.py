"""The C2SP tlog witness core: every reply of add-checkpoint, its state and fork evidence."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

import ledger
from gateway.db import create_schema, make_engine, make_sessionmaker
from ledger._models import CheckpointRow, LogEntryRow, LogHeadRow, TreeNodeRow

ORIGIN = "test.example/log"
AT = datetime(2026, 1, 1, tzinfo=UTC)
LOG_KEY = Ed25519PrivateKey.generate()
WITNESS_KEY = Ed25519PrivateKey.generate()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """An empty log in a SQLite file (the witness itself has no database)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    create_schema(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def _witness(folder: Path, clock: int = 1_700_000_000) -> ledger.Witness:
    verifier = ledger.parse_vkey(ledger.make_vkey(ORIGIN, LOG_KEY.public_key()))
    return ledger.Witness(
        folder, "w.example/1", WITNESS_KEY, {ORIGIN: verifier}, clock=lambda: clock
    )


def _grow(log: sessionmaker[Session], n: int, tag: str = "a") -> ledger.Checkpoint:
    with log() as s, s.begin():
        ledger.append_entries(s, [("demo.x", {"i": i, "tag": tag}) for i in range(n)], at=AT)
        return ledger.sign_checkpoint(s, LOG_KEY, ORIGIN)


def _request(log: sessionmaker[Session], cp: ledger.Checkpoint, old: int) -> bytes:
    with log() as s:
        return ledger.witness_request(s, cp, old)


def _fork(log: sessionmaker[Session], tag: str) -> ledger.Checkpoint:
    """The operator rewrites its whole log from scratch and signs the same size again."""
    with log() as s, s.begin():
        size = s.get(LogHeadRow, 1).size
        for table in (CheckpointRow, TreeNodeRow, LogEntryRow, LogHeadRow):
            s.execute(delete(table))
    return _grow(log, size, tag)


def test_first_checkpoint_then_consistent_extension(
    log: sessionmaker[Session], tmp_path: Path
) -> None:
    """A witness cosigns the first checkpoint from 0 and then only a proven extension."""
    witness = _witness(tmp_path / "w")
    first = _grow(log, 5)
    one = witness.add_checkpoint(_request(log, first, 0))
    second = _grow(log, 6)
    two = witness.add_checkpoint(_request(log, second, 5))

    assert (one.status, one.code, two.status, two.code) == (200, "OK", 200, "OK")
    body, _ = ledger._cosignature.split_note(second.note)
    found = ledger.verify_cosignatures(body, [two.body.decode().rstrip("\n")], [witness.cosigner])
    assert found == {witness.cosigner.vkey: 1_700_000_000}
    view = witness.latest(ORIGIN)
    assert view is not None and (view.size, view.root) == (11, second.root)
    reopened = _witness(tmp_path / "w").latest(ORIGIN)
    assert reopened == view


def test_old_size_mismatch_is_409_with_the_witness_size(
    log: sessionmaker[Session], tmp_path: Path
) -> None:
    """A request from the wrong old size gets 409, text/x.tlog.size, the size the witness holds."""
    witness = _witness(tmp_path / "w")
    first = _grow(log, 4)
    witness.add_checkpoint(_request(log, first, 0))
    second = _grow(log, 3)

    reply = witness.add_checkpoint(_request(log, second, 0))

    assert (reply.status, reply.code, reply.body) == (409, "OLD_SIZE_MISMATCH", b"4\n")
    assert reply.content_type == "text/x.tlog.size"


def test_fork_is_refused_and_recorded_with_both_notes(
    log: sessionmaker[Session], tmp_path: Path
) -> None:
    """Same size, another root: 409 FORK; the evidence holds two log-signed notes of one size."""
    witness = _witness(tmp_path / "w")
    honest = _grow(log, 6)
    witness.add_checkpoint(_request(log, honest, 0))
    forked = _fork(log, "rewritten")

    reply = witness.add_checkpoint(_request(log, forked, 6))

    assert (reply.status, reply.code, reply.body) == (409, "FORK", b"6\n")
    [evidence] = witness.evidence()
    assert evidence["kind"] == "FORK"
    known = ledger.open_checkpoint(
        evidence["known"], ledger.make_vkey(ORIGIN, LOG_KEY.public_key())
    )
    offered = ledger.open_checkpoint(
        evidence["offered"], ledger.make_vkey(ORIGIN, LOG_KEY.public_key())
    )
    assert known.size == offered.size == 6 and known.root != offered.root
    assert witness.latest(ORIGIN).root == honest.root  # type: ignore[union-attr]


def test_inconsistent_extension_is_422(log: sessionmaker[Session], tmp_path: Path) -> None:
    """A larger tree that does not extend the cosigned one fails its proof: 422, recorded."""
    witness = _witness(tmp_path / "w")
    honest = _grow(log, 6)
    witness.add_checkpoint(_request(log, honest, 0))
    _fork(log, "rewritten")
    bigger = _grow(log, 3, "more")

    reply = witness.add_checkpoint(_request(log, bigger, 6))

    assert (reply.status, reply.code) == (422, "INCONSISTENT")
    assert [e["kind"] for e in witness.evidence()] == ["INCONSISTENT"]
    assert witness.latest(ORIGIN).size == 6  # type: ignore[union-attr]


def test_unknown_origin_bad_signature_and_bad_requests(
    log: sessionmaker[Session], tmp_path: Path
) -> None:
    """404 for a log it does not follow, 403 for another key's note, 400 for malformed bodies."""
    witness = _witness(tmp_path / "w")
    cp = _grow(log, 2)
    other_key = Ed25519PrivateKey.generate()
    forged_note = ledger.sign_note(cp.note[: cp.note.index("\n\n") + 1], ORIGIN, other_key)
    foreign = ledger.sign_note(
        f"other.example/log\n2\n{cp.root_b64}\n", "other.example/log", other_key
    )
    bad_bodies = [
        b"",
        b"old 01\n\n" + cp.note.encode(),
        b"old 0\n" + b"AAAA\n" + b"\n" + cp.note.encode(),
        b"old 0\n\n" + b"\xff" * 10,
        b"old 0\n" + b"A" * 70_000,
        ("old 1\n" + (base64.b64encode(b"x" * 32).decode() + "\n") * 64 + "\n" + cp.note).encode(),
        b"old 5\n\n" + cp.note.encode(),
    ]

    unknown = witness.add_checkpoint(ledger.add_checkpoint_body(0, [], foreign))
    forged = witness.add_checkpoint(ledger.add_checkpoint_body(0, [], forged_note))
    bad = [witness.add_checkpoint(b) for b in bad_bodies]

    assert (unknown.status, unknown.code) == (404, "UNKNOWN_ORIGIN")
    assert (forged.status, forged.code) == (403, "BAD_SIGNATURE")
    assert [(r.status, r.code) for r in bad] == [(400, "BAD_REQUEST")] * len(bad_bodies)
    assert witness.latest(ORIGIN) is None


def test_concurrent_requests_never_roll_the_state_back(
    log: sessionmaker[Session], tmp_path: Path
) -> None:
    """Eight requests from size 0 at once: exactly one is cosigned and the state is that one."""
    from concurrent.futures import ThreadPoolExecutor

    checkpoints = [_grow(log, 1) for _ in range(8)]
    bodies = [_request(log, cp, 0) for cp in checkpoints]
    witnesses = [_witness(tmp_path / "w") for _ in bodies]  # one object per thread, one folder

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda w, b: w.add_checkpoint(b), witnesses, bodies))

    won = [cp for cp, r in zip(checkpoints, replies, strict=True) if r.ok]
    assert len(won) == 1
    assert sorted(r.code for r in replies if not r.ok) == ["OLD_SIZE_MISMATCH"] * 7
    assert _witness(tmp_path / "w").latest(ORIGIN).size == won[0].size  # type: ignore[union-attr]
