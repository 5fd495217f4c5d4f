"""Streamed cohort manifests: a signed header, then chunks that each verify on their own.

A whole manifest (:mod:`consent._manifest`) is one JWS line and every entry
line after it, so the gateway holds each node's whole list while it signs and
sends it, and the node holds it while it verifies: 10 ISVs × 10⁶ merchants
came to ≈ 15 GiB in one round. The streamed form signs the same Merkle root
and sends the entries in chunks, each of which the node checks against the
signed root the moment it arrives, so neither side ever needs the whole list.

Wire format
-----------
The **header** is a JWS (EdDSA, ``typ`` :data:`consent.MANIFEST_TYPE`) whose
payload is the RFC 8785 JSON of the whole-manifest header with ``v`` = 3 and
one more field, ``chunk_size`` (a power of two, at most
:data:`MAX_CHUNK_SIZE`). ``count`` and ``root`` mean what they mean in version
2: the number of entries, and the RFC 9162 Merkle root over their canonical
lines sorted by merchant id (each line a leaf; :mod:`consent._entries`). A
streamed manifest and a whole one over the same entries have the same root,
so receipts and lineage name the same value either way.

**Chunk** ``i`` (of ``C = ceil(count / chunk_size)``) carries entries
``[i·chunk_size, min((i+1)·chunk_size, count))``::

    {"index":i,"manifest":"<hex SHA-256 of the header's JWS payload>","proof":["<hex>",…]}
    <entry line>
    <entry line>
    …

(first line RFC 8785 JSON, then one entry line per row, ``\\n`` between lines,
none at the end). Because the chunk size is a power of two and chunks start at
multiples of it, every chunk's entries form one node of the RFC 9162 tree (the
last one too: the tree's right border), and the tree above those nodes is the
RFC 9162 tree over the ``C`` chunk hashes. ``proof`` is therefore an ordinary
RFC 9162 inclusion proof of "leaf" ``i`` in a tree of size ``C`` whose leaf
hash is the chunk's subtree hash, checked with
:func:`ledger.root_from_inclusion_proof`.

What the node checks
--------------------
:func:`open_stream` verifies the header exactly as a whole manifest's
(signature, type, form, addressee, validity window with the clock-skew
allowance) and refuses a round already superseded. :meth:`StreamVerifier.accept`
takes chunks strictly in index order and refuses, before any entry is
returned: a chunk that names another manifest (``CHUNK_FOREIGN``), one that is
not the next (``CHUNK_ORDER``: reordered, duplicated or beyond the last), one
whose entry count, subtree hash or proof does not lead to the signed root
(``ROOT_MISMATCH``: a tampered chunk), and entries that are malformed, out of
order across chunks or outside their consent window (``ENTRY_INVALID``). The
first refusal poisons the stream: nothing after it is accepted.
:meth:`StreamVerifier.finish` refuses a stream with chunks missing
(``CHUNK_MISSING``) and only then records the manifest in the replay guard.
A caller must not act on any entry before ``finish`` returns.

The gateway side (:func:`stream_manifest`) reads the cohort once, in order,
encoding and hashing one chunk at a time; it keeps the chunk hashes (32 bytes
per ``chunk_size`` entries) and spools the encoded lines to an unlinked
temporary file, from which :meth:`ManifestStream.chunk` re-reads a chunk when
it is sent.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from itertools import islice
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger import (
    InvalidProof,
    canonical_json,
    hash_children,
    parse_canonical,
    root_from_inclusion_proof,
)

from ._entries import ManifestEntry, encode_entries, leaf_hashes, merkle_root, parse_entries
from ._errors import InvalidConsentRequest, ManifestRejected
from ._manifest import (
    DEFAULT_CLOCK_SKEW,
    STREAM_VERSION,
    CohortManifest,
    build_manifest,
    header_fields,
    manifest_of,
    open_header,
    sign_header,
)
from ._replay import ManifestReplayGuard

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "ManifestStream",
    "StreamVerifier",
    "open_stream",
    "stream_manifest",
    "verify_stream",
]

DEFAULT_CHUNK_SIZE = 4096
"""Entries per chunk: ≈ 0.75 MB of entry lines, 12 proof hashes for 10⁷ entries."""

MAX_CHUNK_SIZE = 1 << 16
"""The largest chunk a node accepts (≈ 12 MB of lines): a node bounds what one message costs."""

_CHUNK_KEYS = frozenset({"index", "manifest", "proof"})


def _chunk_count(count: int, chunk_size: int) -> int:
    return -(-count // chunk_size)


def _is_power_of_two(n: object) -> bool:
    return type(n) is int and n > 0 and n & (n - 1) == 0


class ManifestStream:
    """A signed streamed manifest on the gateway side; build it with :func:`stream_manifest`.

    Holds the header, the chunk hashes and an unlinked spool file of entry
    lines; :meth:`chunk` reads one chunk back and adds its proof. Close it (or
    use it as a context manager) to free the spool.
    """

    def __init__(
        self,
        *,
        manifest: CohortManifest,
        count: int,
        chunk_size: int,
        header: bytes,
        digest: str,
        levels: list[list[bytes]],
        spool: Any,
        spans: list[tuple[int, int]],
    ) -> None:
        self.manifest = manifest  # header fields; ``entries`` is empty
        self.count = count
        self.chunk_size = chunk_size
        self.header = header
        self._levels = levels
        self._spool = spool
        self._spans = spans
        self._digest = digest  # hex SHA-256 of the header's JWS payload; every chunk names it

    @property
    def root(self) -> str:
        """Hex Merkle root over every entry line (the same as the whole manifest's)."""
        return self.manifest.root

    @property
    def chunks(self) -> int:
        """How many chunks the stream has."""
        return len(self._spans)

    def proof(self, index: int) -> list[bytes]:
        """RFC 9162 inclusion proof of chunk ``index`` among the chunk hashes, leaf up."""
        if not 0 <= index < self.chunks:
            raise IndexError(f"chunk {index} of {self.chunks}")
        path: list[bytes] = []
        for level in self._levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):  # a last odd node is carried up without a sibling
                path.append(level[sibling])
            index //= 2
        return path

    def chunk(self, index: int) -> bytes:
        """The wire bytes of chunk ``index`` (see the module docstring)."""
        offset, length = self._spans[index]
        lines = os.pread(self._spool.fileno(), length, offset)
        head = canonical_json(
            {
                "index": index,
                "manifest": self._digest,
                "proof": [h.hex() for h in self.proof(index)],
            }
        )
        return head + b"\n" + lines

    def __iter__(self) -> Iterator[bytes]:
        return (self.chunk(i) for i in range(self.chunks))

    def close(self) -> None:
        """Free the spool file."""
        self._spool.close()

    def __enter__(self) -> ManifestStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _levels(hashes: list[bytes]) -> list[list[bytes]]:
    """Every level of the tree over ``hashes``, bottom first (pairing, odd node carried)."""
    levels = [hashes]
    while len(levels[-1]) > 1:
        level = levels[-1]
        up = list(map(hash_children, level[0:-1:2], level[1::2]))
        if len(level) % 2:
            up.append(level[-1])
        levels.append(up)
    return levels


def stream_manifest(
    *,
    job_id: str,
    round: int,
    data_provider: str,
    data_consumer: str,
    purpose: str,
    categories: Iterable[str],
    entries: Iterable[ManifestEntry],
    issued_at: datetime,
    ttl: timedelta,
    key: Ed25519PrivateKey,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    spool_dir: Path | None = None,
) -> ManifestStream:
    """Build and sign a streamed manifest, reading ``entries`` once, one chunk at a time.

    Parameters are those of :func:`consent.build_manifest`, plus:

    entries : Iterable[ManifestEntry]
        The cohort **in merchant-id order** (a stream cannot sort what it never
        holds); may be a generator.
    key : Ed25519PrivateKey
        The gateway's manifest-signing key.
    chunk_size : int, default ``DEFAULT_CHUNK_SIZE`` (4096)
        Entries per chunk, a power of two ``<= MAX_CHUNK_SIZE``.
    spool_dir : Path | None, default None
        Where the unlinked spool file lives (the system temporary directory).

    Returns
    -------
    ManifestStream

    Raises
    ------
    ValueError
        ``chunk_size`` is not a power of two in ``[1, MAX_CHUNK_SIZE]``.
    InvalidConsentRequest
        As :func:`consent.build_manifest`; ``ENTRY_INVALID`` also for entries out of order.
    """
    if not _is_power_of_two(chunk_size) or chunk_size > MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be a power of two <= {MAX_CHUNK_SIZE}, got {chunk_size}")
    # The header fields, validated exactly as a whole manifest's (no entries yet).
    head = build_manifest(
        job_id=job_id,
        round=round,
        data_provider=data_provider,
        data_consumer=data_consumer,
        purpose=purpose,
        categories=categories,
        entries=(),
        issued_at=issued_at,
        ttl=ttl,
    )
    # Owned by the returned stream (closed by ManifestStream.close), so no ``with`` here.
    spool = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115
    try:
        hashes, spans, count, earliest = _spool_chunks(entries, chunk_size, head.issued_at, spool)
    except BaseException:
        spool.close()
        raise
    levels = _levels(hashes)
    valid_until = head.valid_until if earliest is None else min(head.valid_until, earliest)
    manifest = replace(head, root=merkle_root(hashes).hex(), valid_until=valid_until, entries=())
    header = header_fields(manifest, count=count)
    header.update(v=STREAM_VERSION, chunk_size=chunk_size)
    return ManifestStream(
        manifest=manifest,
        count=count,
        chunk_size=chunk_size,
        header=sign_header(header, key),
        digest=sha256(canonical_json(header)).hexdigest(),  # the JWS payload's bytes
        levels=levels,
        spool=spool,
        spans=spans,
    )


def _spool_chunks(
    entries: Iterable[ManifestEntry], chunk_size: int, issued: datetime, spool: Any
) -> tuple[list[bytes], list[tuple[int, int]], int, datetime | None]:
    """Encode, hash and spool ``entries`` chunk by chunk; returns hashes, spans, count, expiry."""
    hashes: list[bytes] = []
    spans: list[tuple[int, int]] = []
    count, offset, last = 0, 0, ""
    earliest: datetime | None = None
    source = iter(entries)
    while batch := list(islice(source, chunk_size)):
        lines = encode_entries(batch, issued)  # validates, refuses duplicates inside the chunk
        first = batch[0].merchant_id
        if first <= last:
            raise InvalidConsentRequest(
                f"cannot build manifest: entry {count}: merchant {first!r} duplicated or out "
                "of order (a streamed cohort must come sorted by merchant id)",
                code="ENTRY_INVALID",
            )
        last = batch[-1].merchant_id
        expiry = min(e.consent_expiry for e in batch).astimezone(UTC)
        earliest = expiry if earliest is None else min(earliest, expiry)
        hashes.append(merkle_root(leaf_hashes(lines)))
        blob = b"\n".join(lines)
        spool.write(blob)
        spans.append((offset, len(blob)))
        offset += len(blob)
        count += len(batch)
    spool.flush()
    return hashes, spans, count, earliest


def _reject(code: str, message: str) -> ManifestRejected:
    return ManifestRejected(message, code=code)


class StreamVerifier:
    """The node's side of one streamed manifest; open it with :func:`open_stream`."""

    def __init__(
        self,
        *,
        header: dict[str, Any],
        digest: str,
        now: datetime,
        max_skew: timedelta,
        replay_guard: ManifestReplayGuard,
    ) -> None:
        self._header = header
        self.digest = digest  # hex SHA-256 of the signed header payload; names the stream
        self._now = now
        self._skew = max_skew
        self._guard = replay_guard
        self._root = bytes.fromhex(header["root"])
        self.count: int = header["count"]
        self.chunk_size: int = header["chunk_size"]
        self.chunks = _chunk_count(self.count, self.chunk_size)
        self.accepted = 0  # chunks accepted so far; the next one must have this index
        self._last = ""  # the last merchant id accepted
        self._refused: ManifestRejected | None = None
        self._done = False

    @property
    def manifest(self) -> CohortManifest:
        """The verified header fields (``entries`` empty: they come out of :meth:`accept`)."""
        return manifest_of(self._header, ())

    @property
    def last_merchant(self) -> str:
        """The last merchant id accepted (``""`` before the first chunk)."""
        return self._last

    def resume(self, accepted: int, last_merchant: str) -> None:
        """Continue a stream whose first ``accepted`` chunks this node verified earlier.

        For a node that keeps its progress on its own disk between messages (each
        message may run in another process); ``last_merchant`` is what
        :attr:`last_merchant` was then. Only the node's own record may be passed here.
        """
        if self.accepted or self._refused is not None:
            raise ValueError("resume only a freshly opened stream")
        if not 0 <= accepted <= self.chunks:
            raise ValueError(f"accepted must be in [0, {self.chunks}], got {accepted}")
        self.accepted, self._last = accepted, last_merchant

    def _refuse(self, code: str, message: str) -> ManifestRejected:
        self._refused = _reject(code, message)
        return self._refused

    def accept(self, chunk: bytes) -> tuple[ManifestEntry, ...]:
        """Verify the next chunk against the signed root and return its entries.

        Raises
        ------
        ManifestRejected
            ``MALFORMED``, ``CHUNK_FOREIGN``, ``CHUNK_ORDER``, ``ROOT_MISMATCH``,
            ``ENTRY_INVALID``; or the first refusal again once the stream is poisoned.
        """
        if self._refused is not None:
            raise _reject(self._refused.code, f"stream already refused: {self._refused}")
        if self._done:
            raise self._refuse("CHUNK_ORDER", "chunk after the stream was finished")
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise self._refuse("MALFORMED", "a manifest chunk must be bytes")
        head_line, _, blob = bytes(chunk).partition(b"\n")
        index, digest, proof = self._parse_head(head_line)
        if digest != self.digest:
            raise self._refuse(
                "CHUNK_FOREIGN", f"chunk {index} belongs to manifest {digest}, not {self.digest}"
            )
        if index != self.accepted or index >= self.chunks:
            what = "duplicated" if index < self.accepted else "out of order or beyond the last"
            raise self._refuse(
                "CHUNK_ORDER",
                f"chunk {index} {what}: expected chunk {self.accepted} of {self.chunks}",
            )
        want = min(self.chunk_size, self.count - index * self.chunk_size)
        lines = blob.split(b"\n") if blob else []
        if len(lines) != want:
            raise self._refuse(
                "ROOT_MISMATCH", f"chunk {index} carries {len(lines)} entries, the header {want}"
            )
        subtree = merkle_root(leaf_hashes(lines))
        try:
            root = root_from_inclusion_proof(index, self.chunks, subtree, proof)
        except InvalidProof as exc:
            raise self._refuse("ROOT_MISMATCH", f"chunk {index}: {exc}") from exc
        if root != self._root:
            raise self._refuse(
                "ROOT_MISMATCH",
                f"chunk {index} leads to root {root.hex()}, the signed root is {self._root.hex()}",
            )
        try:
            entries = parse_entries(blob, want, self._now, self._skew)
        except ManifestRejected as exc:
            raise self._refuse(exc.code, f"chunk {index}: {exc}") from exc
        if entries[0].merchant_id <= self._last:
            raise self._refuse(
                "ENTRY_INVALID",
                f"chunk {index}: merchant {entries[0].merchant_id!r} duplicated or out of order",
            )
        self._last = entries[-1].merchant_id
        self.accepted += 1
        return entries

    def _parse_head(self, line: bytes) -> tuple[int, str, list[bytes]]:
        try:
            head = parse_canonical(line)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._refuse("MALFORMED", f"chunk head is not canonical JSON: {exc}") from exc
        if not isinstance(head, dict) or set(head) != _CHUNK_KEYS:
            raise self._refuse("MALFORMED", "chunk head has missing or unknown fields")
        index, digest, proof = head["index"], head["manifest"], head["proof"]
        if type(index) is not int or index < 0:
            raise self._refuse("MALFORMED", "chunk index must be a non-negative integer")
        if not isinstance(digest, str) or not isinstance(proof, list):
            raise self._refuse("MALFORMED", "chunk manifest must be a string, proof a list")
        try:
            hashes = [bytes.fromhex(h) for h in proof if isinstance(h, str) and len(h) == 64]
        except ValueError as exc:
            raise self._refuse("MALFORMED", f"chunk proof is not hex: {exc}") from exc
        if len(hashes) != len(proof):
            raise self._refuse("MALFORMED", "chunk proof must be 64-digit hex hashes")
        return index, digest, hashes

    def finish(self) -> CohortManifest:
        """Refuse a stream with chunks missing, else record it in the replay guard.

        Returns
        -------
        CohortManifest
            The header fields (``entries`` empty).

        Raises
        ------
        ManifestRejected
            ``CHUNK_MISSING``, ``STALE_ROUND``, ``REPLAYED``, or the stream's refusal.
        """
        if self._refused is not None:
            raise _reject(self._refused.code, f"stream already refused: {self._refused}")
        if self.accepted != self.chunks:
            raise self._refuse("CHUNK_MISSING", f"{self.accepted} of {self.chunks} chunks arrived")
        self._guard.check_and_record(self._header["job_id"], self._header["round"], self.digest)
        self._done = True
        return self.manifest


def open_stream(
    header: bytes,
    *,
    gateway_key: Ed25519PublicKey,
    data_provider: str,
    now: datetime,
    replay_guard: ManifestReplayGuard,
    max_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> StreamVerifier:
    """Verify a streamed manifest's signed header and start taking its chunks.

    Parameters are those of :func:`consent.verify_manifest`; ``header`` is
    :attr:`ManifestStream.header`.

    Raises
    ------
    ManifestRejected
        ``SIGNATURE_INVALID``, ``MALFORMED`` (also a whole manifest's header, or a
        chunk size that is not a power of two ``<= MAX_CHUNK_SIZE``),
        ``WRONG_PROVIDER``, ``NOT_YET_VALID``, ``EXPIRED``, ``STALE_ROUND``.
    """
    if not isinstance(header, bytes | bytearray | memoryview):
        raise _reject("MALFORMED", "manifest header must be bytes")
    payload, fields = open_header(
        bytes(header),
        gateway_key=gateway_key,
        data_provider=data_provider,
        now=now,
        max_skew=max_skew,
        version=STREAM_VERSION,
    )
    size = fields["chunk_size"]
    if not _is_power_of_two(size) or size > MAX_CHUNK_SIZE:
        raise _reject("MALFORMED", f"chunk_size must be a power of two <= {MAX_CHUNK_SIZE}")
    highest = replay_guard.highest_round(fields["job_id"])
    if highest is not None and fields["round"] < highest:  # refuse before any chunk is read
        raise _reject(
            "STALE_ROUND",
            f"job {fields['job_id']!r} is at round {highest}; refusing round {fields['round']}",
        )
    return StreamVerifier(
        header=fields,
        digest=sha256(payload).hexdigest(),
        now=now,
        max_skew=max_skew,
        replay_guard=replay_guard,
    )


def verify_stream(
    header: bytes,
    chunks: Iterable[bytes],
    *,
    gateway_key: Ed25519PublicKey,
    data_provider: str,
    now: datetime,
    replay_guard: ManifestReplayGuard,
    max_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> CohortManifest:
    """Verify a whole stream and return the manifest with every entry.

    For callers that need the entries together (the ClientApp's handlers do);
    it holds one chunk's bytes at a time and the parsed entries, never the
    whole manifest's bytes.

    Raises
    ------
    ManifestRejected
        Anything :func:`open_stream`, :meth:`StreamVerifier.accept` or
        :meth:`StreamVerifier.finish` raises.
    """
    verifier = open_stream(
        header,
        gateway_key=gateway_key,
        data_provider=data_provider,
        now=now,
        replay_guard=replay_guard,
        max_skew=max_skew,
    )
    entries: list[ManifestEntry] = []
    for chunk in chunks:
        entries.extend(verifier.accept(chunk))
    return replace(verifier.finish(), entries=tuple(entries))
