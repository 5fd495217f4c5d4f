"""Attack 8 — lifetime overrun: a server-chosen lifetime, and ε raised in the middle of a job."""

from __future__ import annotations

import json
from pathlib import Path

from federation import is_holdout
from federation.dp import PrivacyLedger
from federation.lifetime import MerchantPrivacyAccount, split_by_receipt
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


def test_the_platform_account_charges_exactly_whom_the_nodes_receipt_says_it_used(
    world: World, tmp_path: Path
) -> None:
    """Charged per manifest, settled by the node's signed receipt: spent and held-out refunded."""
    node = own_node(world, "isv2", tmp_path,
                    "min-cohort = 5\nmax-epsilon-lifetime = 6.0\nmax-epsilon-per-job = 3.0")
    entries = world.cohort.by_isv["isv2"]
    training = [e.merchant_id for e in entries if not is_holdout(e.merchant_id)]
    spent = training[: len(training) // 3]
    PrivacyLedger(node.privacy_ledger_path).reserve(
        job_id="earlier", budget=DPBudget(epsilon=6.0, lifetime_epsilon=6.0), merchant_ids=spent
    )
    budget = DPBudget(epsilon=3.0, lifetime_epsilon=20.0)
    account = MerchantPrivacyAccount(tmp_path / "platform-account.json")
    ids = [e.merchant_id for e in entries]
    account.charge(job_id="job-exact", budget=budget, isv="isv2", merchant_ids=ids)
    token = manifest(world, "isv2", entries, job_id="job-exact", round=1)

    reply = send(node, model_message(token, job_id="job-exact", round=1,
                                     encoder=grid_encoder(world, "isv2")))
    receipt = reply_receipt(node, reply)  # verified with the node's key
    used, unused = split_by_receipt(ids, receipt.unused_entries)
    account.settle(job_id="job-exact", budget=budget, isv="isv2", used=used, unused=unused)

    assert sorted(used) == sorted(set(training) - set(spent))
    assert len(used) == receipt.merchants_used
    assert all(account.spent(m) == 3.0 for m in used)
    assert all(account.spent(m) == 0.0 for m in unused)  # spent at the node, or held out


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


def test_a_node_upgraded_from_the_json_ledger_still_refuses_its_spent_merchants(
    world: World, tmp_path: Path
) -> None:
    """A node whose accounting is an earlier version's ``privacy.json`` (half its training
    merchants at ε 5.5 of the node's lifetime 6.0) is sent a job: the SQLite ledger imports
    the file on first open, so the spent half sits out and only the fresh half is trained
    and charged (without the import all of them are)."""
    node = own_node(world, "isv1", tmp_path,
                    "min-cohort = 5\nmax-epsilon-lifetime = 6.0\nmax-epsilon-per-job = 3.0")
    training = [e.merchant_id for e in world.cohort.by_isv["isv1"] if not is_holdout(e.merchant_id)]
    spent, fresh = training[: len(training) // 2], training[len(training) // 2 :]
    legacy = node.state_dir / "privacy.json"
    legacy.parent.mkdir(parents=True, exist_ok=True)
    legacy.write_text(json.dumps({  # the earlier version's layout, as its reserve() wrote it
        "jobs": {"earlier": {"epsilon": 5.5, "delta": 1e-5, "history": [],
                             "merchants": sorted(spent)}},
        "merchants": {m: {"epsilon": 5.5, "jobs": ["earlier"]} for m in spent},
    }))
    token = manifest(world, "isv1", world.cohort.by_isv["isv1"], job_id="job-after", round=1)

    reply = send(node, model_message(token, job_id="job-after", round=1,
                                     encoder=grid_encoder(world, "isv1")))

    assert not reply.has_error(), reply.error.reason if reply.has_error() else None
    assert reply_receipt(node, reply).merchants_used == len(fresh)
    ledger = PrivacyLedger(node.privacy_ledger_path)
    assert all(ledger.merchant_spent(m) == 5.5 for m in spent)
    assert all(ledger.merchant_spent(m) == 3.0 for m in fresh)
    assert all(ledger.jobs_of(m) == ["earlier"] for m in spent)
    assert (node.state_dir / "privacy.json.imported").is_file() and not legacy.exists()
