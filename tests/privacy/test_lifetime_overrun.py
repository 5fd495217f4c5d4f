"""Attack 8 — lifetime overrun: a server-chosen lifetime, and ε raised in the middle of a job."""

from __future__ import annotations

from pathlib import Path

from federation import is_holdout
from federation.dp import PrivacyLedger
from federation.specs import DPBudget

from ..federation._flworld import World
from ._platform import grid_encoder, manifest, model_message, own_node, reply_receipt, send


def test_spent_merchants_sit_out_the_round_whatever_lifetime_the_server_names(
    world: World, tmp_path: Path
) -> None:
    """Lifetime 6 at the node: a job asking for lifetime 1000 trains only the unspent half."""
    node = own_node(world, "isv0", tmp_path,
                    "min-cohort = 5\nmax-epsilon-lifetime = 6.0\nmax-epsilon-per-job = 3.0")
    training = [e.merchant_id for e in world.cohort.by_isv["isv0"] if not is_holdout(e.merchant_id)]
    spent, fresh = training[: len(training) // 2], training[len(training) // 2 :]
    ledger = PrivacyLedger(node.privacy_ledger_path)
    ledger.reserve(job_id="earlier", budget=DPBudget(epsilon=6.0, lifetime_epsilon=6.0),
                   merchant_ids=spent)
    token = manifest(world, "isv0", world.cohort.by_isv["isv0"], job_id="job-greedy", round=1)

    reply = send(node, model_message(token, job_id="job-greedy", round=1,
                                     encoder=grid_encoder(world, "isv0"),
                                     **{"dp-lifetime-epsilon": 1000.0}))

    assert not reply.has_error(), reply.error.reason if reply.has_error() else None
    assert reply_receipt(node, reply).merchants_used == len(fresh)
    assert all(ledger.merchant_spent(m) == 6.0 for m in spent)
    assert all(ledger.merchant_spent(m) == 3.0 for m in fresh)


def test_raising_epsilon_mid_job_is_charged_at_its_true_cost(world: World, tmp_path: Path) -> None:
    """Round 1 at ε = 1, round 2 at ε = 3: every merchant used is charged 3, not 1."""
    node = own_node(world, "isv1", tmp_path, "min-cohort = 5")
    entries = world.cohort.by_isv["isv1"]
    encoder = grid_encoder(world, "isv1")
    for rnd, eps in ((1, 1.0), (2, 3.0)):
        token = manifest(world, "isv1", entries, job_id="job-raise-eps", round=rnd)
        reply = send(node, model_message(token, job_id="job-raise-eps", round=rnd,
                                         encoder=encoder, **{"dp-epsilon": eps}))
        assert not reply.has_error(), reply.error.reason if reply.has_error() else None

    ledger = PrivacyLedger(node.privacy_ledger_path)
    used = [e.merchant_id for e in entries if not is_holdout(e.merchant_id)]
    assert [ledger.merchant_spent(m) for m in used] == [3.0] * len(used)
    assert reply_receipt(node, reply).epsilon_spent <= 3.0 + 1e-9
