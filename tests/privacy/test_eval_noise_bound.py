"""The curious platform reads the node's ``auc-std`` back into the exact minority count.

``auc-std`` exists so the platform can weigh a node's noisy AUC; if it were the exact
``2σ / n_min`` it would hand over the hold-out's number of defaults (a class count the
node never releases). It is computed from the noisy counts only, so inverting it gives
the noisy count: the attack recovers the exact count no more often than the noise
allows (one value in ≈ 2σ·sqrt(2π) ≈ 20 at σ = 4), where the exact formula gives it
every time.
"""

from __future__ import annotations

import numpy as np

from federation.apps._handling import STD_BOUND_Z, noisy_metrics

SIGMA = 4.0


def _invert(std: float) -> int:
    """The platform's inversion of ``2σ / (n_min - z·2σ)``."""
    scale = 2 * SIGMA
    return int(round(scale / std + STD_BOUND_Z * scale))


def test_auc_std_does_not_give_back_the_minority_count() -> None:
    rng = np.random.default_rng(0)
    n, n_min = 3000, 200
    y = np.zeros(n)
    y[:n_min] = 1.0
    p = rng.random(n)
    releases = [noisy_metrics(y, p, SIGMA, rng) for _ in range(400)]
    hits = sum(_invert(r["auc-std"]) == n_min for r in releases)
    assert hits <= 0.1 * len(releases)
    # The same bound from the exact counts would be inverted every time: the attack works.
    from_exact = 2 * SIGMA / (n_min - STD_BOUND_Z * 2 * SIGMA)
    assert _invert(from_exact) == n_min
    # and the released count is as noisy as before: no exact n either
    assert sum(r["num-examples"] == n for r in releases) <= 0.1 * len(releases)
