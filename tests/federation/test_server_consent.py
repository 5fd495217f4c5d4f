"""The ServerApp's consent duties without a runtime: verified cohorts and counted uses.

A training job's per-node manifests are built by the real ``Job`` from the real
consent store (signatures verified with the ``consent-key``), and node receipts,
signed with the node's real key, are recorded as they would be after a reply.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import consent
from federation import FederationError
from federation.apps.server_app import (
    Job,
    ServerSettings,
    cohort_source_from_run_config,
)
from federation.receipts import UsageReceipt, merchant_ids_hash, sign_receipt
from ledger import parse_canonical
from ledger._models import LogEntryRow

from ._flworld import CONSUMER, World, grant_consents, make_world

ISV = "isv0"
QUERY = {"purpose": "model_training", "categories": ["cash_and_debt", "margins"]}


def _job(world: World, db_url: str, job_id: str) -> Job:
    rc = world.run_config(
        job_id=job_id, db_url=db_url, out=job_id, categories="cash_and_debt,margins"
    )
    # No Flower runtime here: the grid is only used to send messages, which these tests do not.
    return Job(
        settings=ServerSettings.from_run_config(rc),
        grid=None,  # type: ignore[arg-type]
        cohort=cohort_source_from_run_config(rc),
        count_uses=True,
    )


def _receipt(world: World, job: Job, server_round: int, action: str, root: str) -> bytes:
    size = job.manifest_sizes[(server_round, ISV)]
    ids = [f"m0x{i:03d}" for i in range(size)]
    receipt = UsageReceipt(
        job_id=job.settings.job_id,
        round=server_round,
        data_provider=ISV,
        action=action,
        rows_used=len(ids),
        merchants_used=len(ids),
        merchants_hash=merchant_ids_hash(ids),
        rows_read=len(ids),
        merchants_read=len(ids),
        merchants_read_hash=merchant_ids_hash(ids),
        manifest_root=root,
        epsilon_spent=0.0,
        delta=0.0,
        issued_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    )
    return sign_receipt(receipt, world.node(ISV).signing_key())


def test_frequency_limit_takes_consents_out_of_later_rounds(
    tmp_path: Path, db_url: str, sessions: sessionmaker[Session]
) -> None:
    """With 2 uses a day, a node's round-2 manifest is empty: rounds 0 and 1 used them up."""
    world = make_world(tmp_path / "world", n_isvs=1, per_isv=25)
    grant_consents(world, sessions, uses_per_day=2)
    job = _job(world, db_url, "job-freq")

    sizes, problems, held, consent_ids = [], [], [], {}
    for rnd in (0, 1, 2):
        _, root, size = job.job_config(rnd, ISV, "model_training")
        sizes.append(size)
        consent_ids[rnd] = np.char.decode(job.manifest_consents[(rnd, ISV)]).tolist()
        if size:  # train and evaluate replies of one round count one use
            for action in ("train", "evaluate"):
                token = _receipt(world, job, rnd, action, root)
                problems.append(job.record_receipt_token(token, ISV, rnd, action, root))
        held.append(sorted(job.manifest_consents))
    with sessions() as s:
        use = consent.Use(
            merchant_id="m0x000", data_provider=ISV, data_consumer=CONSUMER,
            at=datetime.now(UTC), **QUERY,  # type: ignore[arg-type]
        )
        decision = consent.check(s, use, consent_manager_key=world.consent_key.public_key())
        uses = [
            parse_canonical(row.leaf_data)["body"]
            for row in s.scalars(select(LogEntryRow).where(LogEntryRow.kind == "consent.uses"))
        ]
        view = consent.get_consent(s, "c-m0x000")
    job.engine.dispose()

    assert sizes == [25, 25, 0]
    assert problems == [None] * 4
    assert decision.code == "FREQUENCY_EXCEEDED"
    assert [(u["round"], u["count"], u["job_id"]) for u in uses] == [
        (0, 25, "job-freq"),
        (1, 25, "job-freq"),
    ]
    assert uses[0]["consent_ids_hash"] == consent.consent_ids_hash(consent_ids[0])
    assert view.state.use_count == 2
    assert held == [[], [], [(2, ISV)]]  # counted ids are dropped; round 2 was never used


def test_forged_artefact_is_kept_out_of_the_manifest(
    tmp_path: Path, db_url: str, sessions: sessionmaker[Session]
) -> None:
    """An artefact signed by another key than the consent manager's is denied SIGNATURE_INVALID."""
    world = make_world(tmp_path / "world", n_isvs=1, per_isv=25)
    grant_consents(world, sessions)
    with sessions() as s, s.begin():  # re-sign one merchant's consent with a forger's key
        from consent._models import ArtefactRow

        row = s.get(ArtefactRow, "c-m0x004")
        assert row is not None
        forged = consent.sign_artefact(
            consent.verify_artefact(row.token, world.consent_key.public_key()).artefact,
            Ed25519PrivateKey.generate(),
        )
        row.token, row.artefact_hash = forged.token, forged.hash
    job = _job(world, db_url, "job-forged")

    _, _, size = job.job_config(1, ISV, "model_training")
    merchants = {
        e.merchant_id
        for e in job.cohort.entries(
            consent.Use(data_provider=ISV, data_consumer=CONSUMER, at=datetime.now(UTC), **QUERY)  # type: ignore[arg-type]
        )
    }
    with sessions() as s:
        use = consent.Use(
            merchant_id="m0x004", data_provider=ISV, data_consumer=CONSUMER,
            at=datetime.now(UTC), **QUERY,  # type: ignore[arg-type]
        )
        decision = consent.check(s, use, consent_manager_key=world.consent_key.public_key())
    job.engine.dispose()

    assert size == 24 and "m0x004" not in merchants and len(merchants) == 24
    assert decision.code == "SIGNATURE_INVALID"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cohort_from_consent_needs_the_consent_key(tmp_path: Path, db_url: str) -> None:
    """Without consent-key (or with an unreadable one) the job is refused with BAD_CONFIG."""
    world = make_world(tmp_path / "world", n_isvs=1, per_isv=5)
    rc = world.run_config(job_id="job-nokey", db_url=db_url, out="out")

    with pytest.raises(FederationError) as missing:
        cohort_source_from_run_config({k: v for k, v in rc.items() if k != "consent-key"})
    with pytest.raises(FederationError) as unreadable:
        cohort_source_from_run_config({**rc, "consent-key": str(tmp_path / "nope.pem")})

    assert missing.value.code == unreadable.value.code == "BAD_CONFIG"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_manifest_consents_are_kept_only_when_uses_are_counted(
    tmp_path: Path, db_url: str, sessions: sessionmaker[Session]
) -> None:
    """Without use counting no consent ids are held; with it, a round's ids go at the next round."""
    world = make_world(tmp_path / "world", n_isvs=1, per_isv=25)
    grant_consents(world, sessions)
    counting, silent = _job(world, db_url, "job-count"), _job(world, db_url, "job-silent")
    silent.count_uses = False

    for job in (counting, silent):
        job.job_config(1, ISV, "model_training")
    held_round_1 = sorted(counting.manifest_consents)
    counting.job_config(2, ISV, "model_training")
    counting.engine.dispose()
    silent.engine.dispose()

    assert held_round_1 == [(1, ISV)]
    assert sorted(counting.manifest_consents) == [(2, ISV)]  # round 1's, never counted, dropped
    assert silent.manifest_consents == {}
