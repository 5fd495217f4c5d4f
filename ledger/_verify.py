"""Pure RFC 9162 proof verification: free functions of explicit arguments.

Shaped after transparency-dev/merkle ``proof/verify.go``: computing a root from a
proof is kept apart from comparing it, so callers can do either, and a mismatch
comes back as one :class:`~ledger.RootMismatch` that holds both roots. A proof of
the wrong shape (length, hash size, impossible sizes) raises
:class:`~ledger.InvalidProof` before any hashing.

Index and size conventions follow RFC 9162: leaves are numbered from 0, a tree
of size ``n`` holds leaves ``0 … n-1``.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from ._errors import InvalidProof, RootMismatch
from ._hasher import EMPTY_ROOT, HASH_SIZE, hash_children

__all__ = [
    "root_from_inclusion_proof",
    "verify_inclusion",
    "root_from_consistency_proof",
    "verify_consistency",
    "verify_match",
    "inclusion_proof_shape",
]


def inclusion_proof_shape(index: int, size: int) -> tuple[int, int]:
    """Split an inclusion proof for leaf ``index`` in a tree of ``size`` into its two parts.

    Returns ``(inner, border)``: ``inner`` siblings below the level where the
    leaf's path meets the right border of the tree, then ``border`` left
    siblings above it (one per set bit of ``index`` above that level).
    """
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, sibling in enumerate(proof):
        seed = (
            hash_children(seed, sibling) if not (index >> i) & 1 else hash_children(sibling, seed)
        )
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    # Only the left siblings: they are all the older tree needs.
    for i, sibling in enumerate(proof):
        if (index >> i) & 1:
            seed = hash_children(sibling, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for sibling in proof:
        seed = hash_children(sibling, seed)
    return seed


def _check_hashes(proof: Sequence[bytes]) -> None:
    for i, node in enumerate(proof):
        if len(node) != HASH_SIZE:
            raise InvalidProof(f"proof[{i}] is {len(node)} bytes, want {HASH_SIZE}")


def verify_match(computed: bytes, expected: bytes) -> None:
    """Raise :class:`RootMismatch` unless ``computed == expected`` (constant time)."""
    if not hmac.compare_digest(computed, expected):
        raise RootMismatch(
            f"root mismatch: computed {computed.hex()}, expected {expected.hex()}",
            expected=expected,
            computed=computed,
        )


def root_from_inclusion_proof(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> bytes:
    """Compute the root that ``proof`` implies for ``leaf_hash`` at ``index`` in a tree of ``size``.

    Parameters
    ----------
    index : int
        Leaf index, ``0 <= index < size``.
    size : int
        Tree size the proof is for.
    leaf_hash : bytes
        The 32-byte RFC 9162 leaf hash.
    proof : Sequence[bytes]
        Sibling hashes from the leaf up, as :func:`ledger.inclusion_proof` returns them.

    Returns
    -------
    bytes
        The root the proof leads to.

    Raises
    ------
    InvalidProof
        If ``index`` is not in ``[0, size)``, the leaf hash or a proof hash is not
        32 bytes, or the proof has the wrong length for ``index`` and ``size``.
    """
    if not 0 <= index < size:
        raise InvalidProof(f"index {index} is beyond tree size {size}")
    if len(leaf_hash) != HASH_SIZE:
        raise InvalidProof(f"leaf hash is {len(leaf_hash)} bytes, want {HASH_SIZE}")
    inner, border = inclusion_proof_shape(index, size)
    if len(proof) != inner + border:
        raise InvalidProof(f"inclusion proof has {len(proof)} hashes, want {inner + border}")
    _check_hashes(proof)
    node = _chain_inner(leaf_hash, proof[:inner], index)
    return _chain_border_right(node, proof[inner:])


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes] | None, root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    ``proof=None`` is read as an empty proof (the only valid one for ``size == 1``).

    Raises
    ------
    InvalidProof
        If the proof cannot be checked (see :func:`root_from_inclusion_proof`) or
        ``root`` is not 32 bytes.
    RootMismatch
        If the proof leads to a different root; the error holds both.
    """
    if len(root) != HASH_SIZE:
        raise InvalidProof(f"root is {len(root)} bytes, want {HASH_SIZE}")
    computed = root_from_inclusion_proof(index, size, leaf_hash, proof or [])
    verify_match(computed, root)


def _consistency_parts(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes
) -> tuple[bytes, Sequence[bytes], int, int]:
    """Seed hash, remaining proof, inner count and mask for ``0 < size1 < size2``."""
    inner, _ = inclusion_proof_shape(size1 - 1, size2)
    # The biggest perfect subtree ending at size1 has 2^shift leaves; the proof
    # starts with its hash unless that subtree is the whole old tree (root1).
    shift = (size1 & -size1).bit_length() - 1
    inner -= shift
    border = ((size1 - 1) >> (inner + shift)).bit_count()
    if size1 == 1 << shift:
        seed, start = root1, 0
    else:
        if not proof:
            raise InvalidProof("consistency proof is empty")
        seed, start = proof[0], 1
    if len(proof) != start + inner + border:
        raise InvalidProof(
            f"consistency proof has {len(proof)} hashes, want {start + inner + border}"
        )
    return seed, proof[start:], inner, (size1 - 1) >> shift


def root_from_consistency_proof(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes
) -> bytes:
    """Compute the new root that ``proof`` implies, after checking it reproduces ``root1``.

    Parameters
    ----------
    size1, size2 : int
        Old and new tree sizes, ``0 < size1 < size2``.
    proof : Sequence[bytes]
        RFC 9162 consistency proof, as :func:`ledger.consistency_proof` returns it.
    root1 : bytes
        The trusted root of the old tree.

    Raises
    ------
    InvalidProof
        Sizes out of order or zero, bad hash sizes, or a proof of the wrong length.
    RootMismatch
        If the proof does not reproduce ``root1``.
    """
    if not 0 < size1 < size2:
        raise InvalidProof(f"need 0 < size1 < size2, got size1={size1}, size2={size2}")
    if len(root1) != HASH_SIZE:
        raise InvalidProof(f"root1 is {len(root1)} bytes, want {HASH_SIZE}")
    _check_hashes(proof)
    seed, rest, inner, mask = _consistency_parts(size1, size2, proof, root1)
    old = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    verify_match(old, root1)
    return _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes] | None, root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size2`` with ``root2`` extends the tree of ``size1`` with ``root1``.

    Preconditions, checked first: ``size1 <= size2``; equal sizes need an empty
    proof and equal roots; the empty tree (size 0) has exactly
    :data:`~ledger.EMPTY_ROOT`; a proof from the empty tree to a non-empty one is
    refused because it proves nothing (RFC 9162 defines proofs for
    ``0 < size1 < size2`` only). ``proof=None`` is read as empty.

    Raises
    ------
    InvalidProof
        If a precondition fails or the proof has the wrong shape.
    RootMismatch
        If the proof does not lead to ``root1`` or ``root2``; the error holds both values.
    """
    proof = proof or []
    if size1 < 0 or size2 < 0:
        raise InvalidProof(f"sizes must be non-negative, got {size1}, {size2}")
    if size2 < size1:
        raise InvalidProof(f"size2 ({size2}) < size1 ({size1})")
    if size1 == size2:
        if proof:
            raise InvalidProof("size1 == size2 but the proof is not empty")
        if size1 == 0:
            verify_match(root1, EMPTY_ROOT)
        verify_match(root2, root1)
        return
    if size1 == 0:
        raise InvalidProof("a consistency proof from the empty tree proves nothing")
    if len(root2) != HASH_SIZE:
        raise InvalidProof(f"root2 is {len(root2)} bytes, want {HASH_SIZE}")
    verify_match(root_from_consistency_proof(size1, size2, proof, root1), root2)
