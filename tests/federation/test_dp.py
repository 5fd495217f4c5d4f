"""DP-SGD at the node and the cumulative privacy accountant across rounds and jobs."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from federation import BudgetExceeded, dp
from federation.dp import (
    PrivacyLedger,
    check_job_budget,
    epsilon_of,
    noise_for_budget,
    train_dp_sgd,
)
from federation.models import build_g_erp
from federation.specs import DPBudget

BUDGET = DPBudget(epsilon=2.0, delta=1e-5, lifetime_epsilon=5.0)
IDS = [f"m{i}" for i in range(20)]


def _data(n: int = 200, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 2, size=(n, d)).astype(np.float32)
    y = (X[:, 0] + rng.normal(0, 0.5, n) > 0.5).astype(np.float32)
    return X, y


def test_rounds_of_one_job_never_exceed_its_epsilon(tmp_path: Path) -> None:
    """Three rounds of DP-SGD, each sized for the rounds left, stay within the job's ε in total."""
    ledger = PrivacyLedger(tmp_path / "privacy.json")
    X, y = _data()
    model = build_g_erp("logistic", X.shape[1])
    spent = []

    for rnd in range(1, 4):
        ledger.reserve(job_id="j", budget=BUDGET, merchant_ids=IDS)
        res = train_dp_sgd(
            model,
            X,
            y,
            epochs=1,
            batch_size=32,
            lr=0.1,
            budget=BUDGET,
            history=ledger.job_history("j"),
            rounds_left=4 - rnd,
            seed=rnd,
        )
        spent.append(ledger.record("j", res.steps))

    assert spent == sorted(spent) and spent[0] > 0
    assert spent[-1] <= BUDGET.epsilon + 1e-6
    assert spent[-1] > 0.8 * BUDGET.epsilon  # the budget is used, not wasted
    assert ledger.merchant_spent("m3") == BUDGET.epsilon  # charged once per job, not per round


def test_persisted_history_survives_a_new_ledger_object(tmp_path: Path) -> None:
    """The accountant lives in a file: a fresh PrivacyLedger sees the job's past steps."""
    PrivacyLedger(tmp_path / "p.json").reserve(job_id="j", budget=BUDGET, merchant_ids=IDS)
    PrivacyLedger(tmp_path / "p.json").record("j", [(1.0, 0.1, 50)])

    again = PrivacyLedger(tmp_path / "p.json")

    assert again.job_history("j") == [(1.0, 0.1, 50)]
    assert again.job_epsilon("j", 1e-5) == pytest.approx(epsilon_of([(1.0, 0.1, 50)], 1e-5))


def test_job_past_a_merchants_lifetime_budget_is_refused_before_it_starts(tmp_path: Path) -> None:
    """Two ε=2 jobs fit a lifetime of 5; the third is refused and charges nobody."""
    ledgers = [PrivacyLedger(tmp_path / "a.json"), PrivacyLedger(tmp_path / "b.json")]
    for job in ("j1", "j2"):
        check_job_budget(ledgers, job_id=job, budget=BUDGET, merchant_ids=IDS)
        ledgers[1].reserve(job_id=job, budget=BUDGET, merchant_ids=IDS)

    with pytest.raises(BudgetExceeded) as pre:
        check_job_budget(ledgers, job_id="j3", budget=BUDGET, merchant_ids=IDS[:1])
    with pytest.raises(BudgetExceeded):
        ledgers[1].reserve(job_id="j3", budget=BUDGET, merchant_ids=IDS)

    assert pre.value.code == "BUDGET_EXCEEDED"
    assert ledgers[1].merchant_spent("m0") == 2 * BUDGET.epsilon
    assert ledgers[1].job_history("j3") == []
    check_job_budget(ledgers, job_id="j3", budget=BUDGET, merchant_ids=["fresh-merchant"])


def test_noise_search_refuses_steps_no_noise_can_cover() -> None:
    """A history that has already spent the job's ε leaves no room for more steps."""
    history = [(0.5, 0.5, 500)]
    assert epsilon_of(history, 1e-5) > BUDGET.epsilon

    with pytest.raises(BudgetExceeded):
        noise_for_budget(
            history, target_epsilon=BUDGET.epsilon, delta=1e-5, sample_rate=0.1, steps=10
        )


# The order set before it was trimmed (2-63, 80-256) and the configurations fedgate runs:
# GMSC-size cohorts, the demo's, batch 64/256, 3-10 rounds, ε 1-10, δ 1e-5.
_FULL_ORDERS = [float(a) for a in [*range(2, 64), 80, 96, 128, 192, 256]]
_CONFIGS = [
    (n, b, rounds, eps)
    for n in (1_600, 30_000, 37_500)
    for b in (64, 256)
    for rounds in (3, 10)
    for eps in (1.0, 3.0, 10.0)
]


def _threshold(eps_at: Callable[[float], float], target: float) -> float:
    """The smallest σ (to 1e-5) with eps_at(σ) <= target, by bisection in log space."""
    low, high = 0.3, 200.0
    while high > low * (1 + 1e-5):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if eps_at(mid) > target else (low, mid)
    return high


def test_vectorised_rdp_equals_opacus_compute_rdp() -> None:
    """The vectorised RDP curve matches Opacus' per-order loop to 1e-10 (relative)."""
    for q, sigma, steps in [(0.0085, 0.9, 1_170), (0.04, 1.7, 75), (0.3, 0.5, 10), (1.0, 2.0, 3)]:
        ours = dp._rdp(q, sigma, steps)
        ref = np.asarray(compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=dp._ALPHAS))

        np.testing.assert_allclose(ours, ref, rtol=1e-10)


def test_trimmed_orders_keep_sigma_within_one_percent_and_never_tighter() -> None:
    """Against the full order set, σ moves < 1 % and the chosen σ fits the budget under both."""
    worst = 0.0
    for n, b, rounds, eps in _CONFIGS:
        q = min(1.0, b / n)
        steps = math.ceil(1 / q) * rounds

        def full(sigma: float, q: float = q, steps: int = steps) -> float:
            rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=_FULL_ORDERS)
            return float(get_privacy_spent(orders=_FULL_ORDERS, rdp=rdp, delta=1e-5)[0])

        def trimmed(sigma: float, q: float = q, steps: int = steps) -> float:
            return dp._eps(dp._rdp(q, sigma, steps), 1e-5)

        sigma_full, sigma_trim = _threshold(full, eps), _threshold(trimmed, eps)
        chosen = noise_for_budget([], target_epsilon=eps, delta=1e-5, sample_rate=q, steps=steps)

        worst = max(worst, abs(sigma_trim / sigma_full - 1))
        assert sigma_trim >= sigma_full * (1 - 1e-9)  # fewer orders: never a tighter bound
        assert full(chosen) <= eps and trimmed(chosen) <= eps
    assert worst < 0.01
