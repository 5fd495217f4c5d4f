"""The membership-inference estimator: a held-out threshold, not the in-sample maximum."""

from __future__ import annotations

import numpy as np

from bench.privacy import _advantage, _threshold


def _in_sample(member: np.ndarray, other: np.ndarray) -> float:
    t = _threshold(member, other)
    return float((member <= t).mean() - (other <= t).mean())


def test_no_membership_signal_reads_as_none() -> None:
    """Members and non-members from one distribution: the in-sample max is inflated, ours not."""
    rng = np.random.default_rng(0)
    inflated, held_out, covered = [], [], 0
    for _ in range(12):
        member, other = rng.normal(0, 1, 300), rng.normal(0, 1, 300)
        inflated.append(_in_sample(member, other))
        point, lo, hi = _advantage(member, other, rng, repeats=5, boot=40)
        held_out.append(point)
        covered += lo <= 0.0 <= hi

    # The in-sample maximum reads chance as an advantage; the held-out threshold does not.
    assert np.mean(inflated) > np.mean(held_out) + 0.02
    assert abs(float(np.mean(held_out))) < 0.02
    assert covered >= 10


def test_a_real_shift_is_found_with_its_interval() -> None:
    """A loss shift of 0.5 sd (true advantage 0.197) is measured near it, interval around it."""
    rng = np.random.default_rng(1)
    member, other = rng.normal(-0.5, 1, 2000), rng.normal(0, 1, 2000)

    point, lo, hi = _advantage(member, other, rng, repeats=5, boot=40)

    assert 0.15 < point < 0.23
    assert lo < 0.197 < hi and hi - lo < 0.12
