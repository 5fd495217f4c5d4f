"""SecAgg+ masks from the whole shared secret, not from 32 bits of it.

Flower 1.42's ``pseudo_rand_gen`` folds a mask seed (the 32-byte pairwise key, or the
node's private seed) into **32 bits** by XOR and seeds NumPy's Mersenne Twister with
them. A mask then has at most 2³² possible values: seeds that fold alike give the same
mask, and a server holding a masked update can enumerate a pairwise mask's seeds in
hours. The masks are what hides one node's update from the server, so fedgate
replaces the generator, on both sides, with a stream cipher keyed by the full secret:

    key  = SHA-256("fedgate/secagg-mask/v1" ‖ seed)
    mask = ChaCha20(key, nonce = 0) keystream, read as little-endian uint64 words,
           each reduced mod ``num_range`` (a bitwise AND for a power of two, as the
           2³² modulus is; otherwise the bias is below num_range / 2⁶⁴)

The masks cancel exactly as before (a pairwise mask is added by one node and
subtracted by the other; the server regenerates private masks from the recovered
seeds), so aggregation is unchanged as long as the ServerApp and every node use the
same generator. If one side does not, the unmasked sum is garbage and the round's
model visibly fails; no update is exposed by the mismatch.

The replacement is installed into the two Flower modules that call the generator
(the server workflow and the client mod) by :func:`install`, which both fedgate apps
call at import. It checks that Flower still has the name it replaces and fails loudly
otherwise, so a Flower upgrade cannot silently bring the 32-bit generator back.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = ["MASK_DOMAIN", "full_seed_rand_gen", "install", "installed"]

MASK_DOMAIN = b"fedgate/secagg-mask/v1"
_TARGETS = (
    "flwr.server.workflow.secure_aggregation.secaggplus_workflow",
    "flwr.client.mod.secure_aggregation.secaggplus_mod",
)


def full_seed_rand_gen(
    seed: bytes, num_range: int, dimensions_list: Sequence[tuple[int, ...]]
) -> list[np.ndarray]:
    """Masks in ``[0, num_range)`` for each shape, drawn from all of ``seed``.

    Same signature and output shapes (int64) as Flower's ``pseudo_rand_gen``.

    Parameters
    ----------
    seed : bytes
        The shared secret (at least 16 bytes; Flower passes 32).
    num_range : int
        The SecAgg+ modulus; every value is below it.
    dimensions_list : Sequence[tuple[int, ...]]
        One shape per array; ``()`` gives a 0-d array.
    """
    if len(seed) < 16:
        raise ValueError(f"seed must carry at least 16 bytes of secret, got {len(seed)}")
    if not 1 < num_range <= 2**63:
        raise ValueError(f"num_range must be in (1, 2**63], got {num_range}")
    sizes = [math.prod(dim) for dim in dimensions_list]
    key = hashlib.sha256(MASK_DOMAIN + seed).digest()
    # One keystream for all arrays; a fresh key per seed, so a zero nonce is never reused.
    encryptor = Cipher(algorithms.ChaCha20(key, b"\x00" * 16), mode=None).encryptor()
    words = np.frombuffer(encryptor.update(b"\x00" * (8 * sum(sizes))), dtype="<u8")
    if num_range & (num_range - 1) == 0:
        values = words & np.uint64(num_range - 1)
    else:
        values = words % np.uint64(num_range)
    out: list[np.ndarray] = []
    start = 0
    for dim, size in zip(dimensions_list, sizes, strict=True):
        out.append(values[start : start + size].astype(np.int64).reshape(dim))
        start += size
    return out


def install() -> None:
    """Make both of Flower's SecAgg+ sides draw masks with :func:`full_seed_rand_gen`."""
    import importlib

    for name in _TARGETS:
        module = importlib.import_module(name)
        if not hasattr(module, "pseudo_rand_gen"):
            raise RuntimeError(
                f"{name} no longer has pseudo_rand_gen: review fedgate's SecAgg+ mask "
                "generator against this Flower version before running SecAgg+"
            )
        module.pseudo_rand_gen = full_seed_rand_gen  # type: ignore[attr-defined]


def installed() -> bool:
    """True when both Flower SecAgg+ sides use the full-seed generator."""
    import importlib

    return all(
        getattr(importlib.import_module(n), "pseudo_rand_gen", None) is full_seed_rand_gen
        for n in _TARGETS
    )
