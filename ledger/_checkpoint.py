"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes.

A checkpoint body (https://c2sp.org/tlog-checkpoint) is three lines::

    <origin>
    <tree size, decimal>
    <root hash, standard base64>

signed as a note by the log's Ed25519 key, named by the origin. The log never
signs a checkpoint that contradicts the previous one: before signing it checks,
with a consistency proof from the stored tree, that the new tree extends the
last signed one.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from ._errors import CheckpointRefused, NoteError, VerificationError
from ._hasher import EMPTY_ROOT, HASH_SIZE
from ._log import _lock_head
from ._models import CheckpointRow
from ._note import NoteVerifier, sign_note, verify_note
from ._proof import consistency_proof, tree_head
from ._verify import verify_consistency

__all__ = [
    "Checkpoint",
    "checkpoint_body",
    "parse_checkpoint_body",
    "open_checkpoint",
    "sign_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement that the log ``origin`` had ``size`` entries with ``root``."""

    origin: str
    size: int
    root: bytes
    note: str

    @property
    def root_b64(self) -> str:
        """The root as the checkpoint writes it (standard base64)."""
        return base64.b64encode(self.root).decode()


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    """The C2SP tlog-checkpoint text for ``origin`` at ``size`` with ``root``."""
    if not origin or "\n" in origin:
        raise NoteError("checkpoint origin must be one non-empty line", code="MALFORMED_CHECKPOINT")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def parse_checkpoint_body(text: str) -> tuple[str, int, bytes]:
    """Parse a checkpoint body strictly into ``(origin, size, root)``; extension lines are allowed.

    Raises
    ------
    NoteError
        ``code="MALFORMED_CHECKPOINT"`` if the lines are missing or malformed.
    """
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "" or any(line == "" for line in lines[:-1]):
        raise NoteError("checkpoint needs origin, size and root lines", code="MALFORMED_CHECKPOINT")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    # No sign, no leading zeros: one decimal spelling per size.
    if (
        not size_text.isascii()
        or not size_text.isdigit()
        or (size_text != "0" and size_text[0] == "0")
    ):
        raise NoteError(f"bad checkpoint size {size_text!r}", code="MALFORMED_CHECKPOINT")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error as exc:
        raise NoteError(f"bad checkpoint root {root_text!r}", code="MALFORMED_CHECKPOINT") from exc
    if len(root) != HASH_SIZE:
        raise NoteError(f"checkpoint root is {len(root)} bytes", code="MALFORMED_CHECKPOINT")
    return origin, int(size_text), root


def open_checkpoint(note: str, verifier: NoteVerifier | str) -> Checkpoint:
    """Verify ``note``'s signature by ``verifier`` and parse its checkpoint body.

    Raises
    ------
    NoteError
        If the note is not validly signed by ``verifier`` or its body is malformed.
    """
    origin, size, root = parse_checkpoint_body(verify_note(note, verifier))
    return Checkpoint(origin, size, root, note)


def _unverified(row: CheckpointRow) -> Checkpoint:
    """A stored checkpoint, its body parsed from the note (not the convenience columns)."""
    text = row.signed_note[: row.signed_note.rfind("\n\n") + 1]
    origin, size, root = parse_checkpoint_body(text)
    return Checkpoint(origin, size, root, row.signed_note)


def latest_checkpoint(session: Session) -> Checkpoint | None:
    """The stored checkpoint with the largest size, or None."""
    row = session.execute(
        select(CheckpointRow).order_by(CheckpointRow.size.desc()).limit(1)
    ).scalar_one_or_none()
    return None if row is None else _unverified(row)


def list_checkpoints(session: Session) -> list[Checkpoint]:
    """Every stored checkpoint, oldest (smallest size) first. Signatures are not checked here."""
    rows = session.execute(select(CheckpointRow).order_by(CheckpointRow.size)).scalars()
    return [_unverified(row) for row in rows]


def sign_checkpoint(
    session: Session, key: Ed25519PrivateKey, origin: str, *, at: datetime | None = None
) -> Checkpoint:
    """Sign and store a checkpoint of the log's current head, in the caller's transaction.

    The head row is locked, so no append can slip in between the checks and the
    signature. Signing again at an unchanged size returns the stored checkpoint.

    Parameters
    ----------
    session : Session
        An open session inside a transaction.
    key : Ed25519PrivateKey
        The log's signing key.
    origin : str
        The log's origin line, also the note key name.
    at : datetime | None, default now (UTC)
        Stored creation time.

    Raises
    ------
    CheckpointRefused
        ``ORIGIN_MISMATCH`` if the last checkpoint names another origin,
        ``LOG_SHRANK`` if the log is now smaller than the last checkpoint,
        ``HEAD_MISMATCH`` if the stored head disagrees with the stored tree, and
        ``CHECKPOINT_INCONSISTENT`` if the tree does not extend the last signed one.
    """
    head = _lock_head(session)
    size, root = head.size, head.root
    from_nodes = tree_head(session, size).root
    if from_nodes != root:
        raise CheckpointRefused(
            f"head root {root.hex()} differs from the tree's root {from_nodes.hex()} at {size}",
            code="HEAD_MISMATCH",
        )
    previous = latest_checkpoint(session)
    if previous is not None:
        if previous.origin != origin:
            raise CheckpointRefused(
                f"last checkpoint is for origin {previous.origin!r}, not {origin!r}",
                code="ORIGIN_MISMATCH",
            )
        if previous.size > size:
            raise CheckpointRefused(
                f"log has {size} entries, fewer than the last checkpoint's {previous.size}",
                code="LOG_SHRANK",
            )
        try:
            if previous.size == 0:
                # Every tree extends the empty tree, provided that one really was empty.
                if previous.root != EMPTY_ROOT:
                    raise CheckpointRefused("empty checkpoint with a non-empty root")
            else:
                proof = consistency_proof(session, previous.size, size)
                verify_consistency(previous.size, size, proof.hashes, previous.root, root)
        except VerificationError as exc:
            raise CheckpointRefused(
                f"tree at {size} is not consistent with the checkpoint at {previous.size}: {exc}"
            ) from exc
        if previous.size == size:
            return previous
    note = sign_note(checkpoint_body(origin, size, root), origin, key)
    session.add(
        CheckpointRow(
            size=size,
            root=root,
            origin=origin,
            signed_note=note,
            created_at=at or datetime.now(UTC),
        )
    )
    session.flush()
    return Checkpoint(origin, size, root, note)
