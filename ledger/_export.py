"""Writing the log to one self-contained file an auditor can verify offline.

Format ``fedgate.ledger.export`` version 1: UTF-8 JSON Lines, in this order.

1. One header object::

       {"format": "fedgate.ledger.export", "version": 1, "origin": "<origin>",
        "vkey": "<C2SP verifier key of the log>", "size": <entries>,
        "root": "<base64 root at size>", "checkpoints": <count>,
        "exported_at": "<RFC 3339 UTC>"}

2. ``checkpoints`` lines ``{"checkpoint": "<C2SP signed note>"}``, smallest size
   first (they come before the entries so a verifier can check each one while
   it streams past its size). Every stored checkpoint is written, even one
   larger than the head: a log cut back below a signed size must show as
   truncated in the audit, not vanish from the file.
3. ``size`` lines ``{"seq": <n>, "leaf": "<base64 leaf data>", "hash": "<base64 leaf hash>"}``
   for ``seq = 0 … size-1``. ``leaf`` is exactly the hashed bytes: the RFC 8785
   canonical JSON of ``{"at", "body", "kind", "seq"}``; ``hash`` is the leaf
   hash the log recorded when the entry was appended.

The header's ``vkey`` is a convenience: an auditor should pin the log's key
they obtained elsewhere (``fedgate audit verify --vkey``).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Text, cast, literal, null, select, union_all
from sqlalchemy.orm import Session

from ._checkpoint import parse_checkpoint_body
from ._errors import ExportFormatError, NoteError
from ._hasher import EMPTY_ROOT
from ._models import CheckpointRow, CosignatureRow, LogEntryRow, LogHeadRow
from ._note import make_vkey
from ._proof import TreeHead
from ._reconcile import book_statement

__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "ExportSummary", "export_log"]

EXPORT_FORMAT = "fedgate.ledger.export"
EXPORT_VERSION = 1
_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What :func:`export_log` wrote."""

    path: Path
    size: int
    root: bytes
    checkpoints: int
    vkey: str


def _head_and_notes(session: Session) -> tuple[TreeHead, list[str]]:
    """The head and every checkpoint note, smallest size first, read as one snapshot.

    One ``UNION ALL`` statement sees one snapshot on every backend and at every
    isolation level, so no append or checkpoint can land between the two reads.
    """
    head = select(
        literal(0).label("part"),
        LogHeadRow.size.label("size"),
        LogHeadRow.root.label("root"),
        cast(null(), Text).label("note"),
    ).where(LogHeadRow.id == 1)
    notes = select(
        literal(1).label("part"),
        CheckpointRow.size.label("size"),
        CheckpointRow.root.label("root"),
        CheckpointRow.signed_note.label("note"),
    )
    both = union_all(head, notes).subquery()
    rows = session.execute(select(both).order_by(both.c.part, both.c.size)).all()
    cosigned: dict[int, list[str]] = {}
    for size, line in session.execute(
        select(CosignatureRow.size, CosignatureRow.line).order_by(
            CosignatureRow.size, CosignatureRow.vkey
        )
    ):
        cosigned.setdefault(int(size), []).append(line)
    current = TreeHead(0, EMPTY_ROOT)
    found: list[str] = []
    for part, size, root, note in rows:
        if part == 0:
            current = TreeHead(int(size), bytes(root))
        else:
            lines = cosigned.get(int(size), [])
            found.append(str(note) + "".join(f"{line}\n" for line in lines))
    return current, found


def _body(note: str) -> tuple[str, int] | None:
    """``(origin, size)`` from a note's checkpoint body; None if it does not parse.

    The export copies notes as stored and leaves judging them to the audit, so
    a damaged note must not stop it.
    """
    try:
        origin, size, _ = parse_checkpoint_body(note[: note.rfind("\n\n") + 1])
    except NoteError:
        return None
    return origin, size


def export_log(
    session: Session,
    path: Path | str,
    public_key: Ed25519PublicKey | Ed25519PrivateKey,
    *,
    origin: str | None = None,
    require_signed: bool = False,
) -> ExportSummary:
    """Write the whole log (entries, every checkpoint, verifier key) to ``path``.

    The head and the checkpoints are read in one statement, so they are one
    snapshot; entries appended while the export runs are left out (the file
    stops at that head), so it is always a consistent prefix. Use a read-only
    session (``gateway.db.make_read_sessionmaker``) to keep writers unblocked.
    The file is written next to ``path`` under a temporary name, synced and
    then renamed over ``path``: a reader never sees half a file, and a failed
    export leaves any earlier file in place. Like every temporary file it is
    created readable by its owner only.

    Parameters
    ----------
    session : Session
        A session on the ledger's database (read only).
    path : Path | str
        The file to write (replaced if it exists); its folder must exist.
    public_key : Ed25519PublicKey | Ed25519PrivateKey
        The log's checkpoint key; only its public half is written.
    origin : str | None, default the newest stored checkpoint's origin
        The log's origin, also the key name in the vkey.
    require_signed : bool, default False
        Refuse to export a log whose newest checkpoint is smaller than its head:
        such an export fails the audit with ``UNSIGNED_TAIL`` (or
        ``NO_CHECKPOINT``), so sign a checkpoint first.

    Returns
    -------
    ExportSummary
        The path, size, root, number of checkpoints and vkey written.

    Raises
    ------
    ExportFormatError
        ``code="NO_ORIGIN"`` if no origin is given and no checkpoint names one;
        ``code="UNSIGNED_TAIL"`` when ``require_signed`` and entries lie beyond
        the newest checkpoint. Nothing is written in either case.
    OSError
        If the file cannot be written (missing folder, no permission, full disk).
    """
    pub = public_key.public_key() if isinstance(public_key, Ed25519PrivateKey) else public_key
    head, notes = _head_and_notes(session)
    bodies = [b for b in (_body(n) for n in notes) if b is not None]
    if origin is None:
        if not bodies:
            raise ExportFormatError(
                "no origin given and no checkpoint to take it from", code="NO_ORIGIN"
            )
        origin = bodies[-1][0]
    signed = max((size for _, size in bodies), default=-1)
    if require_signed and head.size > 0 and signed < head.size:
        raise ExportFormatError(
            f"the log has {head.size} entries but the newest checkpoint covers "
            f"{max(signed, 0)}: sign a checkpoint of the head first",
            code="UNSIGNED_TAIL",
        )
    vkey = make_vkey(origin, pub)
    statement = book_statement(session)
    header = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "origin": origin,
        "vkey": vkey,
        "size": head.size,
        "root": base64.b64encode(head.root).decode(),
        "checkpoints": len(notes),
        "book": len(statement),
        "exported_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    b64 = base64.b64encode
    target = Path(path)
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write(json.dumps(header, separators=(",", ":")) + "\n")
            for note in notes:
                out.write(json.dumps({"checkpoint": note}, ensure_ascii=False) + "\n")
            for line in statement:
                out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
            stmt = (
                select(LogEntryRow.seq, LogEntryRow.leaf_data, LogEntryRow.leaf_hash)
                .where(LogEntryRow.seq < head.size)
                .order_by(LogEntryRow.seq)
                .execution_options(yield_per=_BATCH)
            )
            for part in session.execute(stmt).partitions():
                # base64 never needs JSON escaping, so plain formatting is exact and fast.
                out.write(
                    "".join(
                        f'{{"seq":{seq},"leaf":"{b64(leaf).decode()}","hash":"{b64(h).decode()}"}}\n'
                        for seq, leaf, h in part
                    )
                )
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return ExportSummary(target, head.size, head.root, len(notes), vkey)
