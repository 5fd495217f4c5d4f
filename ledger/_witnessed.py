"""The log's side of witnessing: requests to witnesses, and their cosignatures stored.

:func:`witness_request` builds the C2SP add-checkpoint body for a stored
checkpoint, from whatever size the witness last cosigned (the consistency
proof is assembled from the stored tree). :func:`store_cosignature` checks a
witness's reply against the witness key the caller configured and keeps the
line in ``ledger_cosignatures``; :func:`cosigned_note` is the checkpoint with
every stored cosignature appended, as exports carry it. The transport (HTTP)
is the caller's: ``gateway.witness`` speaks it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ._checkpoint import Checkpoint
from ._cosignature import Cosigner, split_note, verify_cosignatures
from ._errors import NoteError, OutOfRange
from ._models import CheckpointRow, CosignatureRow
from ._proof import consistency_proof
from ._witness import add_checkpoint_body

__all__ = [
    "Cosigned",
    "cosignatures_of",
    "cosigned_note",
    "last_cosigned_size",
    "store_cosignature",
    "witness_request",
]


@dataclass(frozen=True, slots=True)
class Cosigned:
    """One witness's verified cosignature on a checkpoint."""

    vkey: str
    line: str
    timestamp: int


def witness_request(session: Session, checkpoint: Checkpoint, old_size: int) -> bytes:
    """The add-checkpoint body proving ``checkpoint`` extends the tree at ``old_size``.

    Raises
    ------
    OutOfRange
        If ``old_size`` is negative or beyond the checkpoint.
    """
    if not 0 <= old_size <= checkpoint.size:
        raise OutOfRange(f"old size {old_size} is not within 0..{checkpoint.size}")
    proof: list[bytes] = []
    if 0 < old_size < checkpoint.size:
        proof = list(consistency_proof(session, old_size, checkpoint.size).hashes)
    return add_checkpoint_body(old_size, proof, checkpoint.note)


def store_cosignature(
    session: Session, checkpoint: Checkpoint, cosigner: Cosigner, reply: str
) -> Cosigned:
    """Verify a witness reply (signature lines) and store its cosignature by ``cosigner``.

    Lines by other keys are ignored, as the spec requires. Storing the same
    witness twice for one size keeps the first line.

    Raises
    ------
    NoteError
        ``code="BAD_COSIGNATURE"`` when no line is a valid cosignature/v1 by
        ``cosigner`` on this checkpoint.
    """
    body, _ = split_note(checkpoint.note)
    lines = [line for line in reply.split("\n") if line]
    valid = verify_cosignatures(body, lines, [cosigner])
    if cosigner.vkey not in valid:
        raise NoteError(
            f"the reply holds no valid cosignature by {cosigner.name}", code="BAD_COSIGNATURE"
        )
    timestamp = valid[cosigner.vkey]
    line = next(line for line in lines if verify_cosignatures(body, [line], [cosigner]))
    if session.get(CheckpointRow, checkpoint.size) is None:
        raise OutOfRange(f"no stored checkpoint at size {checkpoint.size}")
    existing = session.get(CosignatureRow, (checkpoint.size, cosigner.vkey))
    if existing is not None:
        return Cosigned(existing.vkey, existing.line, int(existing.cosigned_at))
    session.add(
        CosignatureRow(size=checkpoint.size, vkey=cosigner.vkey, line=line, cosigned_at=timestamp)
    )
    session.flush()
    return Cosigned(cosigner.vkey, line, timestamp)


def cosignatures_of(session: Session, size: int) -> list[Cosigned]:
    """Stored cosignatures on the checkpoint at ``size`` (unverified), by vkey."""
    rows = session.execute(
        select(CosignatureRow).where(CosignatureRow.size == size).order_by(CosignatureRow.vkey)
    ).scalars()
    return [Cosigned(r.vkey, r.line, int(r.cosigned_at)) for r in rows]


def cosigned_note(session: Session, checkpoint: Checkpoint) -> str:
    """The checkpoint note with every stored cosignature line appended."""
    lines = cosignatures_of(session, checkpoint.size)
    return checkpoint.note + "".join(f"{c.line}\n" for c in lines)


def last_cosigned_size(session: Session, vkey: str) -> int:
    """The largest checkpoint size this log holds a cosignature for by ``vkey`` (0 if none)."""
    found = session.execute(
        select(func.max(CosignatureRow.size)).where(CosignatureRow.vkey == vkey)
    ).scalar_one()
    return int(found or 0)
