"""The platform's per-merchant lifetime ε account across ISVs, and where jobs consult it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from federation import BudgetExceeded, run_job
from federation.apps.server_app import Job, ServerSettings
from federation.dp import PrivacyLedger
from federation.lifetime import MerchantPrivacyAccount
from federation.specs import DPBudget

from ._flworld import World, grant_consents, make_world

BUDGET = DPBudget(epsilon=3.0, lifetime_epsilon=8.0)


def test_a_merchant_at_two_isvs_is_charged_once_per_isv_and_job(tmp_path: Path) -> None:
    """Each (job, ISV) that trains on a merchant costs it the job's ε, never twice per round."""
    account = MerchantPrivacyAccount(tmp_path / "account.json")

    for _ in range(3):  # three rounds of one job re-send the same manifests
        account.charge(job_id="j1", budget=BUDGET, isv="isvA", merchant_ids=["shared", "a-only"])
        account.charge(job_id="j1", budget=BUDGET, isv="isvB", merchant_ids=["shared"])

    assert account.spent("shared") == 2 * BUDGET.epsilon
    assert account.spent("a-only") == BUDGET.epsilon
    assert account.summary() == (2, 6.0)


def test_a_job_past_a_merchants_lifetime_across_isvs_is_refused_and_charges_nobody(
    tmp_path: Path,
) -> None:
    """6 of 8 spent at two ISVs: a next job at one more ISV is refused; its manifest drops them."""
    account = MerchantPrivacyAccount(tmp_path / "account.json")
    account.charge(job_id="j1", budget=BUDGET, isv="isvA", merchant_ids=["shared"])
    account.charge(job_id="j1", budget=BUDGET, isv="isvB", merchant_ids=["shared"])
    cohorts = {"isvA": ["shared", "fresh"], "isvC": ["other"]}

    with pytest.raises(BudgetExceeded) as err:
        account.check(job_id="j2", budget=BUDGET, cohorts=cohorts)
    left_out = account.charge(
        job_id="j2", budget=BUDGET, isv="isvA", merchant_ids=["shared", "fresh"]
    )

    assert "1 merchant(s)" in str(err.value) and "shared" in str(err.value)
    assert left_out == ["shared"]
    assert account.spent("shared") == 6.0 and account.spent("fresh") == 3.0


def _dp_world(tmp_path: Path, sessions: sessionmaker[Session]) -> World:
    world = make_world(tmp_path / "world", n_isvs=2, per_isv=10)
    grant_consents(world, sessions)
    return world


def test_runner_refuses_a_job_the_platform_account_cannot_cover(
    tmp_path: Path, db_url: str, sessions: sessionmaker[Session]
) -> None:
    """Every node's own ledger has room, but the platform account has not: refused before start."""
    world = _dp_world(tmp_path, sessions)
    config = world.run_config(
        job_id="job-platform-refused",
        db_url=db_url,
        out="out",
        categories="margins",
        **{"dp-epsilon": 3.0, "dp-lifetime-epsilon": 8.0},
    )
    account = MerchantPrivacyAccount(Path(str(config["privacy-account"])))
    account.charge(job_id="elsewhere", budget=BUDGET, isv="isv9", merchant_ids=["m1x004"])
    account.charge(job_id="elsewhere", budget=BUDGET, isv="isv8", merchant_ids=["m1x004"])

    with pytest.raises(BudgetExceeded) as err:
        run_job(config, world.nodes)

    assert "m1x004" in str(err.value) and "across ISVs" in str(err.value)
    assert not (tmp_path / "world" / "out" / "result.json").exists()
    assert all(
        PrivacyLedger(n.privacy_ledger_path).job_history("job-platform-refused") == []
        for n in world.nodes
    )
    assert account.spent("m1x000") == 0.0


def test_server_charges_each_dp_training_manifest_and_leaves_out_the_spent(
    tmp_path: Path, db_url: str, sessions: sessionmaker[Session]
) -> None:
    """Round 1 charges its manifest; a merchant with no lifetime left is not in it."""
    world = _dp_world(tmp_path, sessions)
    rc = world.run_config(
        job_id="job-charge",
        db_url=db_url,
        out="out",
        categories="cash_and_debt,margins",
        **{"dp-epsilon": 3.0, "dp-lifetime-epsilon": 8.0},
    )
    settings = ServerSettings.from_run_config(rc)
    account = MerchantPrivacyAccount(Path(str(rc["privacy-account"])))
    for isv in ("isv8", "isv9"):
        account.charge(job_id="elsewhere", budget=BUDGET, isv=isv, merchant_ids=["m0x002"])
    job = Job(settings=settings, grid=None, cohort=world.cohort)  # type: ignore[arg-type]

    _, _, stats_size = job.job_config(0, "isv0", "model_training")  # statistics: not DP
    charged_before_training = account.spent("m0x001")
    _, _, size = job.job_config(1, "isv0", "model_training")
    job.job_config(2, "isv0", "model_training")
    job.engine.dispose()

    assert (stats_size, size, charged_before_training) == (10, 9, 0.0)
    assert account.spent("m0x001") == 3.0  # once for the job, not per round
    assert account.spent("m0x002") == 6.0  # left out, not charged
