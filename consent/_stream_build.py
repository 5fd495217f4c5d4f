"""The gateway side of a streamed manifest: sign the header, spool and hash chunks, prove each."""

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

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import canonical_json, hash_children

from ._entries import ManifestEntry, encode_entries, leaf_hashes, merkle_root
from ._errors import InvalidConsentRequest
from ._manifest import (
    STREAM_VERSION,
    CohortManifest,
    build_manifest,
    header_fields,
    sign_header,
)

DEFAULT_CHUNK_SIZE = 4096
"""Entries per chunk: ≈ 0.75 MB of entry lines, 12 proof hashes for 10⁷ entries."""

MAX_CHUNK_SIZE = 1 << 16
"""The largest chunk a node accepts (≈ 12 MB of lines): a node bounds what one message costs."""


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
        """The wire bytes of chunk ``index`` (see :mod:`consent._stream`)."""
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
