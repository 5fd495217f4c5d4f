"""DP-SGD at the node and the cumulative privacy accountant across rounds and jobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from federation import BudgetExceeded
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
