"""The node's randomness: drawn from the operating system's CSPRNG, never from a message.

DP-SGD noise, Poisson sampling, sketch and metric noise all come from
generators seeded here with 64 fresh bits from :func:`secrets.randbits` (the
OS CSPRNG) for every release, so the platform, which never sees the raw draws
and never learns the seed, cannot regenerate and subtract the noise. The
policy's ``test-seed`` (node configuration, tests only) makes a node
reproducible; no value in a message can.

Why not Opacus ``secure_mode=True``: it needs ``torchcsprng``, which has no
build for the torch this project pins. Instead the node (a) seeds per release
from the OS CSPRNG as above and (b) turns on Opacus' floating-point mitigation
on the optimizer (``DPOptimizer.secure_mode``: each noise value is the sum of
four Gaussians over 2, after discarding one draw; Holohan & Braghin 2021, the fix
for the attacks of Jin et al. 2022 and Mironov 2012 on the binary
representation of sampled noise). The remaining gap is that torch's CPU
generator is a Mersenne Twister, not a CSPRNG: its stream could be predicted
from enough raw outputs, but the platform only ever sees sums of clipped
gradients and noise, averaged (and, with SecAgg+, summed across nodes).
"""

from __future__ import annotations

import secrets

import numpy as np
import torch

from ._policy import NodePolicy

__all__ = ["node_seed", "torch_generator", "numpy_generator"]


def node_seed(policy: NodePolicy, salt: int = 0) -> int:
    """A fresh 63-bit seed from the OS CSPRNG, or the policy's test seed (+ ``salt``)."""
    if policy.test_seed >= 0:
        return (policy.test_seed + salt) % (1 << 63)
    return secrets.randbits(63)


def torch_generator(policy: NodePolicy, salt: int = 0) -> torch.Generator:
    """A torch generator seeded by :func:`node_seed`."""
    return torch.Generator().manual_seed(node_seed(policy, salt))


def numpy_generator(policy: NodePolicy, salt: int = 0) -> np.random.Generator:
    """A numpy generator seeded by :func:`node_seed`."""
    return np.random.default_rng(node_seed(policy, salt))
