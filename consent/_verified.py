"""Per-process memory of consent artefacts whose signature verified, keyed by token hash.

Verifying an artefact (EdDSA plus a strict parse of its body) costs some
260 µs; a snapshot of 10^5 consents re-verified every round would spend half
a minute on tokens that never change. A signed token is immutable, so once
``(SHA-256 of the token, public key)`` has verified, the parsed terms can be
reused. The token is still hashed on every load (about a microsecond), so a
token edited in the database has another hash, is verified afresh, and fails
as ``SIGNATURE_INVALID``.

The memory is least-recently-used with a capacity that a snapshot raises to
its own size (:meth:`VerifiedArtefacts.reserve`), so a round over 10^6
consents never evicts its own entries halfway through. It holds the parsed
terms, which the snapshot holds anyway while it lives.
"""

from __future__ import annotations

import threading
from hashlib import sha256
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._artefact import ConsentArtefact

__all__ = ["VerifiedArtefacts", "VERIFIED", "DEFAULT_CAPACITY"]

DEFAULT_CAPACITY: Final = 1 << 17
"""Entries kept before any snapshot asks for more."""


class VerifiedArtefacts:
    """An LRU map ``(token hash, public key) -> verified terms``; see the module docstring.

    Parameters
    ----------
    capacity : int, default ``DEFAULT_CAPACITY`` (131,072)
        Entries kept; :meth:`reserve` raises it, nothing lowers it.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._entries: dict[tuple[str, bytes], ConsentArtefact] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def capacity(self) -> int:
        """How many entries are kept before the least recently used is dropped."""
        return self._capacity

    def reserve(self, size: int) -> None:
        """Keep at least ``size`` entries from now on (a snapshot calls it with its row count)."""
        with self._lock:
            self._capacity = max(self._capacity, size)

    def get(self, token: str, key: Ed25519PublicKey | bytes) -> tuple[str, ConsentArtefact | None]:
        """The token's hex SHA-256, and its terms if it verified under ``key`` before.

        ``key`` may be given as its raw 32 bytes, which a caller looking up 10^5
        tokens computes once.
        """
        # UTF-8, not ASCII: an edited token may hold anything, and must hash, not raise.
        digest = sha256(token.encode("utf-8")).hexdigest()
        slot = (digest, key if isinstance(key, bytes) else key.public_bytes_raw())
        with self._lock:
            artefact = self._entries.pop(slot, None)
            if artefact is not None:
                self._entries[slot] = artefact  # most recently used goes last
        return digest, artefact

    def put(self, digest: str, key: Ed25519PublicKey, artefact: ConsentArtefact) -> None:
        """Remember that the token with hex SHA-256 ``digest`` verified under ``key``."""
        slot = (digest, key.public_bytes_raw())
        with self._lock:
            self._entries[slot] = artefact
            while len(self._entries) > self._capacity:
                del self._entries[next(iter(self._entries))]  # the least recently used

    def clear(self) -> None:
        """Forget everything (tests, or a key rotation)."""
        with self._lock:
            self._entries.clear()


VERIFIED: Final = VerifiedArtefacts()
"""The process's memory, shared by every snapshot and check."""
