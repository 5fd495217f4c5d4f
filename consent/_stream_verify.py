"""The node side of a streamed manifest: open the signed header, accept chunks in order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from hashlib import sha256
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger import InvalidProof, parse_canonical, root_from_inclusion_proof

from ._entries import ManifestEntry, leaf_hashes, merkle_root, parse_entries
from ._errors import ManifestRejected
from ._manifest import (
    DEFAULT_CLOCK_SKEW,
    STREAM_VERSION,
    CohortManifest,
    manifest_of,
    open_header,
)
from ._replay import ManifestReplayGuard
from ._stream_build import MAX_CHUNK_SIZE, _is_power_of_two

_CHUNK_KEYS = frozenset({"index", "manifest", "proof"})


def _chunk_count(count: int, chunk_size: int) -> int:
    return -(-count // chunk_size)


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
