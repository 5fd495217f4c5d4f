"""Verifying the live log in place, in the database, as :func:`ledger.audit_export` does a file."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from ._audit import _BATCH, _check_claims, _replay
from ._audit_report import AuditFailure, AuditReport
from ._hasher import EMPTY_ROOT, hash_children
from ._models import CheckpointRow, LogEntryRow, LogHeadRow, TreeNodeRow
from ._note import NoteVerifier, parse_vkey

__all__ = ["verify_log"]


def _db_entries(session: Session) -> Iterator[tuple[int, bytes, bytes, bytes]]:
    """Entries in order, each with the stored leaf node (0, seq), ``b""`` when there is none."""
    stmt = (
        select(LogEntryRow.seq, LogEntryRow.leaf_data, LogEntryRow.leaf_hash, TreeNodeRow.hash)
        .outerjoin(TreeNodeRow, and_(TreeNodeRow.level == 0, TreeNodeRow.index == LogEntryRow.seq))
        .order_by(LogEntryRow.seq)
        .execution_options(yield_per=_BATCH)
    )
    for part in session.execute(stmt).partitions():
        for row in part:
            yield row[0], row[1], row[2], row[3] or b""


def _check_nodes(session: Session, leaves: list[bytes]) -> AuditFailure | None:
    """Compare every stored perfect-subtree hash with the one recomputed from the leaves."""
    level, current = 0, leaves
    while current:
        rows = session.execute(
            select(TreeNodeRow.index, TreeNodeRow.hash)
            .where(TreeNodeRow.level == level)
            .order_by(TreeNodeRow.index)
        ).all()
        for k, (index, stored) in enumerate(rows):
            if index != k or k >= len(current) or stored != current[k]:
                where = min(index, k) << level
                return AuditFailure(
                    "NODE_MISMATCH", where, f"stored node (level {level}, index {index}) is wrong"
                )
        if len(rows) != len(current):
            return AuditFailure(
                "NODE_MISMATCH", len(rows) << level, f"level {level} lacks node {len(rows)}"
            )
        current = [hash_children(current[k], current[k + 1]) for k in range(0, len(current) - 1, 2)]
        level += 1
    return None


def verify_log(session: Session, verifier: NoteVerifier | str | None = None) -> AuditReport:
    """Verify the live log in the database the way :func:`audit_export` verifies a file.

    Also checks the stored head, every stored subtree hash (the nodes proofs are
    built from; leaf nodes during the replay, so the smallest bad index is the
    one reported) and that each checkpoint row's columns match its signed note.
    Entries after the newest checkpoint are normal in a live log and are not
    reported. Use a read-only session so the whole check sees one snapshot.

    Parameters
    ----------
    session : Session
        A session on the ledger's database (read only).
    verifier : NoteVerifier | str | None, default None
        The log's key; without it checkpoint signatures are not checked (roots
        and consistency still are).
    """
    trusted = parse_vkey(verifier) if isinstance(verifier, str) else verifier
    rows = session.execute(select(CheckpointRow).order_by(CheckpointRow.size)).scalars().all()
    claims = _check_claims([r.signed_note for r in rows], rows[0].origin if rows else None, trusted)
    for row, claim in zip(rows, claims, strict=True):
        if claim.failure is None and (row.size != claim.size or row.root != claim.root):
            claim.failure = AuditFailure(
                "CHECKPOINT_SIGNATURE",
                max(row.size - 1, 0),
                "row columns differ from the signed note",
                row.size,
            )
    head = session.get(LogHeadRow, 1)
    size, root = (head.size, head.root) if head is not None else (0, EMPTY_ROOT)
    leaves: list[bytes] = []
    report = _replay(
        _db_entries(session), claims, head_size=size, head_root=root, leaf_hashes=leaves
    )
    if report.ok:
        failure = _check_nodes(session, leaves)
        if failure is not None:
            return AuditReport(report.size, report.root, report.checkpoints_verified, failure)
    return report
