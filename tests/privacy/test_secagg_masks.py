"""The curious platform against SecAgg+'s masks: a mask must need the whole secret.

Flower's own generator folds a 32-byte seed to 32 bits, so any two seeds that fold
alike give the same mask and the platform can enumerate a pairwise mask's 2³² seeds.
These tests show that weakness on Flower's function (so they can fail) and that the
generator both fedgate apps run is keyed by every bit of the secret.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen as flower_gen

import federation.apps.client_app  # noqa: F401  (installs the node side)
import federation.apps.server_app  # noqa: F401  (installs the server side)
from federation.apps._secagg_masks import full_seed_rand_gen, installed

MOD = 2**32
SHAPES = [(3, 4), (5,), ()]


def _fold_alike(seed: bytes) -> bytes:
    """Another seed with the same 32-bit XOR fold: swap its first two 4-byte words."""
    return seed[4:8] + seed[0:4] + seed[8:]


def test_flowers_own_generator_has_only_32_bits_of_seed() -> None:
    """The attack's premise: distinct secrets, identical masks (so the test below can fail)."""
    seed = os.urandom(32)
    other = _fold_alike(seed)
    assert other != seed
    for a, b in zip(flower_gen(seed, MOD, SHAPES), flower_gen(other, MOD, SHAPES), strict=True):
        assert np.array_equal(a, b)


def test_both_sides_run_the_full_seed_generator() -> None:
    assert installed()
    # By module path: the package re-exports a function named like the client module.
    for side in (
        "flwr.client.mod.secure_aggregation.secaggplus_mod",
        "flwr.server.workflow.secure_aggregation.secaggplus_workflow",
    ):
        assert importlib.import_module(side).pseudo_rand_gen is full_seed_rand_gen


def test_seeds_that_fold_alike_give_unrelated_masks() -> None:
    seed = os.urandom(32)
    ours = full_seed_rand_gen(seed, MOD, SHAPES)
    theirs = full_seed_rand_gen(_fold_alike(seed), MOD, SHAPES)
    assert not any(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    # One flipped bit anywhere in the secret changes the mask too.
    base = full_seed_rand_gen(seed, MOD, [(8,)])[0]
    for byte in (0, 17, 31):
        flipped = bytearray(seed)
        flipped[byte] ^= 0x01
        assert not np.array_equal(full_seed_rand_gen(bytes(flipped), MOD, [(8,)])[0], base)


def test_masks_are_deterministic_in_range_and_shaped_like_flowers() -> None:
    seed = os.urandom(32)
    a = full_seed_rand_gen(seed, MOD, SHAPES)
    b = full_seed_rand_gen(seed, MOD, SHAPES)
    assert [x.shape for x in a] == [x.shape for x in flower_gen(seed, MOD, SHAPES)]
    assert all(x.dtype == np.int64 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    big = full_seed_rand_gen(seed, MOD, [(200_000,)])[0]
    assert big.min() >= 0 and big.max() < MOD
    # Uniform over the modulus: each of 16 equal slices holds 1/16 of the values (±5 %).
    counts = np.bincount(big >> 28, minlength=16)
    assert np.all(np.abs(counts / len(big) - 1 / 16) < 0.05 / 16)
    odd = full_seed_rand_gen(seed, 1_000_003, [(10_000,)])[0]
    assert odd.min() >= 0 and odd.max() < 1_000_003


@pytest.mark.parametrize("seed", [b"", b"short"])
def test_a_short_seed_is_refused(seed: bytes) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        full_seed_rand_gen(seed, MOD, SHAPES)
