"""Writing the log to one self-contained file an auditor can verify offline.

Format ``fedgate.ledger.export`` version 1: UTF-8 JSON Lines, in this order.

1. One header object::

       {"format": "fedgate.ledger.export", "version": 1, "origin": "<origin>",
        "vkey": "<C2SP verifier key of the log>", "size": <entries>,
        "root": "<base64 root at size>", "checkpoints": <count>,
        "exported_at": "<RFC 3339 UTC>"}

2. ``checkpoints`` lines ``{"checkpoint": "<C2SP signed note>"}``, smallest size
   first (they come before the entries so a verifier can check each one while
   it streams past its size).
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from ._checkpoint import list_checkpoints
from ._errors import ExportFormatError
from ._models import LogEntryRow
from ._note import make_vkey
from ._proof import current_head

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


def export_log(
    session: Session,
    path: Path | str,
    public_key: Ed25519PublicKey | Ed25519PrivateKey,
    *,
    origin: str | None = None,
) -> ExportSummary:
    """Write the whole log (entries, checkpoints, verifier key) to ``path``.

    Entries appended while the export runs are left out: the file stops at the
    head read first, so it is always a consistent prefix.

    Parameters
    ----------
    session : Session
        A session on the ledger's database (read only).
    path : Path | str
        The file to write (replaced if it exists).
    public_key : Ed25519PublicKey | Ed25519PrivateKey
        The log's checkpoint key; only its public half is written.
    origin : str | None, default the stored checkpoints' origin
        The log's origin, also the key name in the vkey.

    Raises
    ------
    ExportFormatError
        ``code="NO_ORIGIN"`` if no origin is given and no checkpoint names one.
    """
    pub = public_key.public_key() if isinstance(public_key, Ed25519PrivateKey) else public_key
    head = current_head(session)
    checkpoints = [c for c in list_checkpoints(session) if c.size <= head.size]
    if origin is None:
        if not checkpoints:
            raise ExportFormatError(
                "no origin given and no checkpoint to take it from", code="NO_ORIGIN"
            )
        origin = checkpoints[-1].origin
    vkey = make_vkey(origin, pub)
    header = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "origin": origin,
        "vkey": vkey,
        "size": head.size,
        "root": base64.b64encode(head.root).decode(),
        "checkpoints": len(checkpoints),
        "exported_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    b64 = base64.b64encode
    target = Path(path)
    with target.open("w", encoding="utf-8", newline="\n") as out:
        out.write(json.dumps(header, separators=(",", ":")) + "\n")
        for cp in checkpoints:
            out.write(json.dumps({"checkpoint": cp.note}, ensure_ascii=False) + "\n")
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
    return ExportSummary(target, head.size, head.root, len(checkpoints), vkey)
