"""The node's replay guard: which manifests it accepted, per job and round.

Two rules, checked in this order, for a manifest of job ``j`` and round ``r``:

1. ``r`` below the highest round already accepted for ``j`` is refused as
   ``STALE_ROUND``: a round-1 manifest presented at round 2 may still list a
   merchant who revoked in between, even while its own validity window lasts.
2. A round accepted before may come again only with the identical signed
   payload (a re-delivery: Flower sends ``train`` and then ``evaluate`` of one
   round with the same manifest); any other payload is ``REPLAYED``.

Payloads are compared by SHA-256 of the whole signed JWS payload (the manifest
header, which covers the entries through their Merkle root), so the same job
and round with another purpose, category, consumer, window or entry set is a
different manifest.

With a file the memory survives restarts, and several processes of one node
(Flower runs simulated nodes in worker processes) share it: each decision is
taken under an exclusive ``flock`` after reading what other processes
appended, and an accepted manifest is appended as one JSON line and fsynced
before it is used. Lines ``[job_id, round, root]`` written by earlier versions
still count for the highest round; their round is never re-delivered (no
manifest of that format verifies any more), so any payload for it is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ._errors import ConsentError, ConsentIntegrityError, ManifestRejected

__all__ = ["ManifestReplayGuard"]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_LEGACY = ""  # the digest recorded for a pre-digest line: equal to no real digest


class ManifestReplayGuard:
    """Node-side memory of accepted manifests; see the module docstring for the rules.

    Parameters
    ----------
    path : Path | None, default None
        File to persist to (created on first use); ``None`` keeps memory only.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._seen: dict[tuple[str, int], str] = {}
        self._highest: dict[str, int] = {}
        self._offset = 0  # bytes of the file read so far
        self._lines_read = 0
        self._lock = threading.Lock()
        if path is not None and path.exists():
            with self._locked(fcntl.LOCK_SH) as fh:
                self._catch_up(fh)

    def __len__(self) -> int:
        return len(self._seen)

    def highest_round(self, job_id: str) -> int | None:
        """The highest round accepted for ``job_id``, or ``None`` for a job never seen."""
        return self._highest.get(job_id)

    def check_and_record(self, job_id: str, round: int, payload_sha256: str) -> None:
        """Accept and remember a manifest, or refuse it; see the module docstring.

        Parameters
        ----------
        job_id : str
            The manifest's job.
        round : int
            Its round.
        payload_sha256 : str
            Hex SHA-256 of its signed JWS payload.

        Raises
        ------
        ManifestRejected
            ``STALE_ROUND`` or ``REPLAYED``; nothing is recorded.
        ConsentIntegrityError
            The file holds a line this guard did not write.
        """
        if _HEX64.fullmatch(payload_sha256) is None:
            raise ValueError("payload_sha256 must be 64 lowercase hex digits")
        with self._lock:
            if self._path is None:
                self._decide(job_id, round, payload_sha256)
                return
            with self._locked(fcntl.LOCK_EX) as fh:
                self._catch_up(fh)  # what other processes accepted since we last looked
                if not self._decide(job_id, round, payload_sha256):
                    return
                record = {"job_id": job_id, "round": round, "payload_sha256": payload_sha256}
                fh.seek(0, os.SEEK_END)
                fh.write((json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
                self._offset = fh.tell()

    def _decide(self, job_id: str, round: int, digest: str) -> bool:
        """Apply both rules; True when the manifest is new and has been remembered."""
        highest = self._highest.get(job_id)
        if highest is not None and round < highest:
            raise ManifestRejected(
                f"job {job_id!r} is at round {highest}; refusing a manifest for round {round}",
                code="STALE_ROUND",
            )
        seen = self._seen.get((job_id, round))
        if seen == digest:
            return False  # a re-delivery of the manifest already accepted
        if seen is not None:
            raise ManifestRejected(
                f"job {job_id!r} round {round} was already accepted with another manifest; "
                f"refusing payload {digest}",
                code="REPLAYED",
            )
        self._remember(job_id, round, digest)
        return True

    def _remember(self, job_id: str, round: int, digest: str) -> None:
        self._seen[(job_id, round)] = digest
        self._highest[job_id] = max(round, self._highest.get(job_id, round))

    @contextmanager
    def _locked(self, mode: int) -> Iterator[IO[bytes]]:
        if self._path is None:  # only file-backed guards lock
            raise ConsentError("an in-memory replay guard has no file to lock", code="NO_FILE")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("a+b") as fh:
            fcntl.flock(fh.fileno(), mode)
            try:
                yield fh
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _catch_up(self, fh: IO[bytes]) -> None:
        """Read the lines appended since the last read (the caller holds the file lock)."""
        fh.seek(self._offset)
        data = fh.read()
        for raw in data.splitlines():
            self._lines_read += 1
            self._remember(*self._parse(raw, self._lines_read))
        self._offset += len(data)

    def _parse(self, raw: bytes, number: int) -> tuple[str, int, str]:
        try:
            record = json.loads(raw)
            if isinstance(record, list) and len(record) == 3:  # [job_id, round, root]
                job_id, round_, root = record
                digest = _LEGACY
                if not (isinstance(root, str) and _HEX64.fullmatch(root)):
                    raise ValueError("bad root")
            elif isinstance(record, dict) and set(record) == {"job_id", "round", "payload_sha256"}:
                job_id, round_, digest = record["job_id"], record["round"], record["payload_sha256"]
                if not (isinstance(digest, str) and _HEX64.fullmatch(digest)):
                    raise ValueError("bad payload digest")
            else:
                raise ValueError("not a replay-guard record")
            if not (isinstance(job_id, str) and type(round_) is int):
                raise ValueError("bad job or round")
        except ValueError as exc:
            raise ConsentIntegrityError(
                f"replay guard file {self._path} line {number} is corrupt: {exc}"
            ) from exc
        return job_id, round_, digest
