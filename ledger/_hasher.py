"""RFC 9162 §2.1.1 Merkle tree hashing: the whole hasher.

    leaf hash  MTH({d})  = SHA-256(0x00 || d)
    node hash  MTH(L||R) = SHA-256(0x01 || MTH(L) || MTH(R))
    empty tree MTH({})   = SHA-256("")

The distinct prefixes keep a leaf from ever being mistaken for an interior
node (second-preimage resistance).
"""

from __future__ import annotations

import hashlib

__all__ = ["EMPTY_ROOT", "HASH_SIZE", "LEAF_PREFIX", "NODE_PREFIX", "hash_leaf", "hash_children"]

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def hash_leaf(data: bytes) -> bytes:
    """Hash one log entry's canonical bytes into a leaf."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """Hash two subtree roots into their parent."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()
