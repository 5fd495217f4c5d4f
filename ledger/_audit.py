"""Verifying a whole log: offline from an export file (here), or in place in the database
(:mod:`ledger._verify_log`, which shares this module's replay).

Both replay every entry in order through a compact range (the right frontier
of perfect subtrees), so memory stays O(log n) and 10⁶ entries take seconds.
At each checkpoint's size the recomputed root must equal the signed one, and
each checkpoint must be provably consistent with the one before it (the
consistency proof is built from subtree hashes captured during the replay and
checked with :func:`ledger.verify_consistency`).

The result is data, not an exception: an :class:`AuditReport` whose
``failure`` names the first bad index and a reason code:

=========================  ====================================================
code                       meaning (``index`` is the entry where it shows)
=========================  ====================================================
``MALFORMED_LINE``         an entry line is not ``{"seq", "leaf", "hash"}`` (or not UTF-8)
``SEQ_GAP``                the entry at this position has another ``seq``
                           (an entry was deleted, inserted or moved)
``LEAF_SEQ_MISMATCH``      the leaf data's own ``seq`` is not its position
                           (entries swapped or relabelled)
``LEAF_HASH_MISMATCH``     SHA-256(0x00 ‖ leaf) is not the recorded leaf hash
``NOT_CANONICAL``          (``canonical=True``) leaf is not RFC 8785 JSON
``CHECKPOINT_SIGNATURE``   a checkpoint note does not parse or verify
``CHECKPOINT_ORIGIN``      a checkpoint names another origin than the log
``CHECKPOINT_ORDER``       checkpoint sizes are not strictly increasing
``CHECKPOINT_ROOT_MISMATCH``  the recomputed root at the checkpoint's size differs
``CHECKPOINT_INCONSISTENT``   no valid consistency proof to the previous checkpoint
``TRUNCATED``              fewer entries than the header or a checkpoint claims
``EXTRA_ENTRIES``          more entries than the header claims
``HEAD_ROOT_MISMATCH``     the recomputed root differs from the stated head root
``NO_CHECKPOINT``          (export only) entries but no signed checkpoint over them
``UNSIGNED_TAIL``          (export only) entries beyond the newest signed checkpoint
                           (``index`` is the first unsigned entry)
``NODE_MISMATCH``          (database only) a stored subtree hash is wrong; for a
                           leaf node it is checked during the replay, so
                           ``index`` is the smallest entry whose stored hashes
                           disagree
``KEY_MISMATCH``           (export only) the file's vkey is not the pinned one
``NO_QUORUM``              (export, with witnesses) the newest checkpoint carries
                           fewer valid cosignatures by the given witnesses than
                           the quorum
``ROLLBACK``               (export, with ``since``) the export ends before the
                           pinned checkpoint (``index`` = the export's size)
``FORK``                   (export, with ``since``) the export's root at the
                           pinned size differs from the pinned root: two
                           checkpoints of one size, a split view
``BOOK_*``, ``NEGATIVE_BALANCE``, …  the book does not follow from the log; see
                           :mod:`ledger._reconcile` (``index`` is a log seq)
=========================  ====================================================

An export must hold at least one checkpoint, whatever its size (a header-only
file proves nothing), and must be signed to its last entry: the header's root is unsigned, so
without a checkpoint covering every entry anyone could rewrite the file and
its header together. The live log in the database is allowed an unsigned
tail (entries appended since the last checkpoint), so :func:`verify_log`
does not report the last two codes.

For checkpoint failures ``index`` is ``size - 1``, the last entry the
checkpoint commits to; ``checkpoint_size`` names the checkpoint.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._audit_report import AuditFailure, AuditReport
from ._canonical import parse_canonical
from ._checkpoint import Checkpoint, parse_checkpoint_body
from ._cosignature import Cosigner, split_note, verify_cosignatures
from ._errors import ExportFormatError, NoteError, VerificationError
from ._export_lines import (
    MAX_ENTRY_LINE_BYTES,
    MAX_HEADER_BYTES,
    Malformed,
    bounded_line,
    bounded_lines,
    entry_lines,
    read_header,
    read_notes,
    read_statement,
)
from ._hasher import EMPTY_ROOT, hash_children
from ._note import NoteVerifier, parse_vkey, verify_note
from ._proof import consistency_ranges
from ._reconcile import BookFailure, BookReplay
from ._verify import verify_consistency

__all__ = ["audit_export"]

_BATCH = 10_000


@dataclass(slots=True)
class _Claim:
    """One checkpoint as the replay sees it; ``failure`` set when it is already known bad."""

    size: int
    root: bytes
    failure: AuditFailure | None = None
    note: str = ""


def _fold(stack: Sequence[bytes]) -> bytes:
    if not stack:
        return EMPTY_ROOT
    root = stack[-1]
    for node in reversed(stack[:-1]):
        root = hash_children(node, root)
    return root


def _check_claims(
    notes: Sequence[str], origin: str | None, verifier: NoteVerifier | None
) -> list[_Claim]:
    """Parse (and, given a verifier, verify) checkpoint notes into claims, in order."""
    claims: list[_Claim] = []
    last = -1
    for note in notes:
        try:
            text = verify_note(note, verifier) if verifier else note[: note.rfind("\n\n") + 1]
            cp_origin, size, root = parse_checkpoint_body(text)
        except NoteError as exc:
            # The size is still useful for locating the failure, if the body parses at all.
            try:
                _, size, root = parse_checkpoint_body(note[: note.rfind("\n\n") + 1])
            except NoteError:
                size, root = max(last, 0), b""
            claims.append(
                _Claim(
                    size,
                    root,
                    AuditFailure(
                        "CHECKPOINT_SIGNATURE", max(size - 1, 0), f"{exc.code}: {exc}", size
                    ),
                )
            )
            last = size
            continue
        claim = _Claim(size, root, note=note)
        if origin is not None and cp_origin != origin:
            claim.failure = AuditFailure(
                "CHECKPOINT_ORIGIN",
                max(size - 1, 0),
                f"origin {cp_origin!r} is not {origin!r}",
                size,
            )
        elif size <= last:
            claim.failure = AuditFailure(
                "CHECKPOINT_ORDER", max(size - 1, 0), f"checkpoint {size} follows {last}", size
            )
        elif size == 0 and root != EMPTY_ROOT:
            claim.failure = AuditFailure(
                "CHECKPOINT_ROOT_MISMATCH", 0, "empty-tree checkpoint with a non-empty root", 0
            )
        claims.append(claim)
        last = max(last, size)
    return claims


def _replay(
    items: Iterable[tuple[int, bytes, bytes, bytes]],
    claims: Sequence[_Claim],
    *,
    head_size: int,
    head_root: bytes | None,
    require_signed: bool = False,
    canonical: bool = False,
    leaf_hashes: list[bytes] | None = None,
    book: BookReplay | None = None,
    pin: tuple[int, bytes] | None = None,
) -> AuditReport:
    """Replay ``(seq, leaf data, recorded leaf hash, stored leaf node)`` items against claims.

    The stored leaf node is the tree's node (0, seq) in the database; an export
    has no tree, so it passes the recorded hash again. With ``require_signed``
    every entry must lie under a verified checkpoint. ``book`` folds the book
    entries as they pass; ``pin`` is ``(size, root)`` of a checkpoint the auditor
    saw earlier, which the replayed log must extend.
    """
    sha256 = hashlib.sha256
    by_size = {c.size: c for c in claims if c.size > 0}
    # Which perfect subtrees to keep, by the position where they complete: the
    # nodes of each consistency proof between successive non-empty checkpoints.
    capture: dict[int, set[int]] = {}
    sizes = sorted(by_size)
    for size1, size2 in zip(sizes, sizes[1:], strict=False):
        for part in consistency_ranges(size1, size2):
            for level, index in part:
                capture.setdefault((index + 1) << level, set()).add(level)
    pinned = {pin[0]} if pin is not None and pin[0] > 0 else set()
    stops = sorted(set(capture) | set(by_size) | pinned)
    stop_at = iter(stops)
    next_stop = next(stop_at, -1)
    captured: dict[tuple[int, int], bytes] = {}
    stack: list[bytes] = []
    previous: _Claim | None = None
    verified = sum(1 for c in claims if c.size == 0 and c.failure is None)
    count = 0
    for c in claims:
        if c.size == 0 and c.failure is not None:
            return AuditReport(0, EMPTY_ROOT, 0, c.failure)

    def report(failure: AuditFailure | None) -> AuditReport:
        return AuditReport(count, _fold(stack), verified, failure, checkpoint_sizes=tuple(sizes))

    try:
        for seq, leaf, recorded, stored in items:
            i = count
            if seq != i:
                kind = "missing" if seq > i else "out of order"
                return report(AuditFailure("SEQ_GAP", i, f"entry {i} {kind}: found seq {seq}"))
            if not leaf.endswith(b',"seq":%d}' % i) or not leaf.startswith(b'{"at":"'):
                return report(
                    AuditFailure("LEAF_SEQ_MISMATCH", i, f"leaf data at {i} does not carry seq {i}")
                )
            node = sha256(b"\x00" + leaf).digest()
            if node != recorded:
                return report(
                    AuditFailure("LEAF_HASH_MISMATCH", i, f"leaf {i} hashes to {node.hex()}")
                )
            if stored != node:
                # Entry and hash rewritten together: the tree still holds the old leaf.
                what = "is missing" if not stored else "differs from the entry's hash"
                return report(
                    AuditFailure("NODE_MISMATCH", i, f"stored node (level 0, index {i}) {what}")
                )
            if canonical:
                try:
                    value = parse_canonical(leaf)
                    if set(value) != {"at", "body", "kind", "seq"}:
                        raise ValueError("leaf keys are not at, body, kind, seq")
                except ValueError as exc:
                    return report(AuditFailure("NOT_CANONICAL", i, str(exc)))
            if leaf_hashes is not None:
                leaf_hashes.append(node)
            if book is not None:
                book.feed_leaf(i, leaf)
                if book.failure is not None:
                    return report(_book_failure(book.failure))
            count = i + 1
            if count != next_stop:
                while i & 1:
                    node = sha256(b"\x01" + stack.pop() + node).digest()
                    i >>= 1
                stack.append(node)
                continue
            # Slow path, O(log n) times per checkpoint: keep proof nodes, check claims.
            levels = capture.get(count, set())
            level = 0
            if 0 in levels:
                captured[(0, i)] = node
            while i & 1:
                node = hash_children(stack.pop(), node)
                i >>= 1
                level += 1
                if level in levels:
                    captured[(level, i)] = node
            stack.append(node)
            next_stop = next(stop_at, -1)
            claim = by_size.get(count)
            if claim is not None:
                if claim.failure is not None:
                    return report(claim.failure)
                root = _fold(stack)
                if root != claim.root:
                    return report(
                        AuditFailure(
                            "CHECKPOINT_ROOT_MISMATCH",
                            count - 1,
                            f"root at {count} is {root.hex()}, checkpoint signed "
                            f"{claim.root.hex()}",
                            count,
                        )
                    )
                if previous is not None:
                    proof = [
                        _fold_keys(part, captured)
                        for part in consistency_ranges(previous.size, count)
                    ]
                    try:
                        verify_consistency(previous.size, count, proof, previous.root, claim.root)
                    except VerificationError as exc:
                        return report(
                            AuditFailure("CHECKPOINT_INCONSISTENT", count - 1, str(exc), count)
                        )
                verified += 1
                previous = claim
            if pin is not None and count == pin[0] and _fold(stack) != pin[1]:
                return report(
                    AuditFailure(
                        "FORK",
                        count - 1,
                        f"the log's root at {count} is {_fold(stack).hex()}, but the pinned "
                        f"checkpoint of the same size has {pin[1].hex()}: two different "
                        f"trees of size {count} were signed",
                        count,
                    )
                )
    except Malformed as exc:
        return report(AuditFailure("MALFORMED_LINE", exc.index, str(exc)))

    beyond = [c for c in claims if c.size > count]
    if beyond:
        c = beyond[0]
        return report(
            c.failure
            or AuditFailure(
                "TRUNCATED", count, f"checkpoint at {c.size} but only {count} entries", c.size
            )
        )
    if count < head_size:
        return report(AuditFailure("TRUNCATED", count, f"header says {head_size}, found {count}"))
    if count > head_size:
        return report(
            AuditFailure("EXTRA_ENTRIES", head_size, f"header says {head_size}, found {count}")
        )
    if head_root is not None and _fold(stack) != head_root:
        return report(
            AuditFailure(
                "HEAD_ROOT_MISMATCH", max(count - 1, 0), "recomputed root is not the head root"
            )
        )
    if pin is not None and pin[0] > count:
        return report(
            AuditFailure(
                "ROLLBACK",
                count,
                f"the export has {count} entries, fewer than the pinned checkpoint's {pin[0]}",
                pin[0],
            )
        )
    if pin is not None and pin[0] == 0 and count == 0 and head_root not in (None, EMPTY_ROOT):
        return report(AuditFailure("FORK", 0, "empty log with a non-empty root", 0))
    if require_signed and not any(c.failure is None for c in claims):
        return report(
            AuditFailure("NO_CHECKPOINT", 0, f"no signed checkpoint in a log of {count} entries")
        )
    if require_signed and count > 0:
        if previous is None:
            return report(
                AuditFailure(
                    "NO_CHECKPOINT", 0, f"no signed checkpoint covers any of the {count} entries"
                )
            )
        if previous.size < count:
            return report(
                AuditFailure(
                    "UNSIGNED_TAIL",
                    previous.size,
                    f"entries {previous.size}..{count - 1} lie beyond the newest signed "
                    f"checkpoint ({previous.size})",
                    previous.size,
                )
            )
    return report(None)


def _book_failure(failure: BookFailure) -> AuditFailure:
    tid = f" (transfer {failure.transfer_id})" if failure.transfer_id else ""
    return AuditFailure(failure.code, failure.index, failure.message + tid)


def _fold_keys(part: Sequence[tuple[int, int]], nodes: dict[tuple[int, int], bytes]) -> bytes:
    acc = nodes[part[-1]]
    for key in reversed(part[:-1]):
        acc = hash_children(nodes[key], acc)
    return acc


def _quorum(
    claims: Sequence[_Claim], size: int, witnesses: Sequence[Cosigner], quorum: int
) -> tuple[tuple[str, ...], AuditFailure | None]:
    """Which witnesses cosigned the checkpoint at ``size``; a failure when under ``quorum``."""
    claim = next((c for c in claims if c.size == size and c.failure is None), None)
    found: tuple[str, ...] = ()
    if claim is not None:
        body, lines = split_note(claim.note)
        found = tuple(sorted(verify_cosignatures(body, lines, witnesses)))
    if len(found) >= quorum:
        return found, None
    return found, AuditFailure(
        "NO_QUORUM",
        max(size - 1, 0),
        f"the newest checkpoint ({size}) carries {len(found)} valid cosignature(s) by the "
        f"given witnesses; {quorum} required",
        size,
    )


def audit_export(
    path: Path | str,
    *,
    vkey: str | NoteVerifier | None = None,
    canonical: bool = False,
    witnesses: Sequence[Cosigner] = (),
    quorum: int = 0,
    since: Checkpoint | None = None,
    book: bool = True,
) -> AuditReport:
    """Verify an export file offline: every leaf, the root, every checkpoint, the book.

    Parameters
    ----------
    path : Path | str
        A file written by :func:`ledger.export_log`.
    vkey : str | NoteVerifier | None, default the key named in the file
        The log's verifier key as the auditor knows it. Pass it: the file's own
        key only proves the file is self-consistent.
    canonical : bool, default False
        Also check every leaf is RFC 8785 canonical JSON with the four leaf keys
        (about 50 µs per entry more).
    witnesses : Sequence[Cosigner], default ()
        Witness keys the auditor trusts (C2SP cosignature/v1).
    quorum : int, default 0
        How many of ``witnesses`` must have cosigned the newest checkpoint
        (``NO_QUORUM`` otherwise). Must be ``<= len(witnesses)``.
    since : Checkpoint | None, default None
        A checkpoint the auditor saw earlier (already verified under the log's
        key): the export must extend it (``ROLLBACK`` when it ends before it,
        ``FORK`` when its root at that size differs).
    book : bool, default True
        Recompute every balance from the ``transfer.posted`` entries, check the
        book's rules entry by entry, and hold the file's book statement
        against the result.

    Returns
    -------
    AuditReport
        ``ok`` when everything holds; otherwise ``failure`` names the first bad index.

    Raises
    ------
    ExportFormatError
        If the file is not an export at all (bad header or version, bad vkey, a
        header, checkpoint or book line that is not UTF-8 JSON or over its cap).
    ValueError
        If ``quorum`` is negative or larger than the number of witnesses.
    OSError
        If the file cannot be opened or read.
    """
    if not 0 <= quorum <= len(witnesses):
        raise ValueError(f"quorum must be within 0..{len(witnesses)} (the witnesses given)")
    with Path(path).open("rb") as fh:
        header = read_header(bounded_line(fh, MAX_HEADER_BYTES, "export header"))
        try:
            trusted = parse_vkey(header["vkey"])
        except NoteError as exc:
            raise ExportFormatError(f"header vkey: {exc}") from exc
        origin = header["origin"]
        if vkey is not None:
            pinned = parse_vkey(vkey) if isinstance(vkey, str) else vkey
            if pinned.vkey != trusted.vkey:
                return AuditReport(
                    0,
                    EMPTY_ROOT,
                    0,
                    AuditFailure("KEY_MISMATCH", None, "file's vkey is not the pinned key"),
                    origin=origin,
                )
        if since is not None and since.origin != origin:
            return AuditReport(
                0,
                EMPTY_ROOT,
                0,
                AuditFailure(
                    "CHECKPOINT_ORIGIN", None, f"pinned checkpoint is for {since.origin!r}"
                ),
                origin=origin,
            )
        notes = read_notes(fh, header["checkpoints"])
        statement = read_statement(fh, header["book"])
        claims = _check_claims(notes, origin, trusted)
        try:
            head_root = binascii.a2b_base64(header["root"], strict_mode=True)
        except ValueError as exc:
            raise ExportFormatError(f"header root: {exc}") from exc
        replay = BookReplay() if book else None
        report = _replay(
            entry_lines(bounded_lines(fh, MAX_ENTRY_LINE_BYTES), 0),
            claims,
            head_size=header["size"],
            head_root=head_root,
            require_signed=True,
            canonical=canonical,
            book=replay,
            pin=None if since is None else (since.size, since.root),
        )
    failure = report.failure
    cosigners: tuple[str, ...] = ()
    if failure is None and witnesses:
        cosigners, failure = _quorum(claims, report.size, witnesses, quorum)
    if failure is None and replay is not None and statement:
        found = replay.check_statement(statement)
        failure = None if found is None else _book_failure(found)
    return AuditReport(
        report.size,
        report.root,
        report.checkpoints_verified,
        failure,
        origin=origin,
        checkpoint_sizes=report.checkpoint_sizes,
        cosigners=cosigners,
        book_accounts=None if replay is None else len(replay.accounts),
        book_transfers=None if replay is None else replay.count,
    )
