"""Attack 7 — the platform signs its own consents: entries the merchant never approved."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from consent import ManifestEntry
from federation.apps import ERR
from federation.data import Connector

from ..federation._flworld import World
from ._platform import grid_encoder, manifest, model_message, own_node, refusal_receipt, send


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the node's ERP reads (a refused request must read no row)."""
    seen: list[int] = []
    original = Connector.read_selected

    def spy(self: Connector, *args: object, **kwargs: object) -> pd.DataFrame:
        seen.append(1)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Connector, "read_selected", spy)
    return seen


def _forge(entries: list[ManifestEntry], how: str) -> list[ManifestEntry]:
    first = entries[0]
    if how == "invented-consent":
        return [*entries, replace(first, merchant_id="m9x999", consent_id="c-m9x999")]
    if how == "wider-data-range":
        return [replace(first, data_from=date(2010, 1, 1)), *entries[1:]]
    if how == "longer-window":
        return [replace(first, consent_expiry=first.consent_expiry + timedelta(days=3650)),
                *entries[1:]]
    if how == "other-artefact":
        return [replace(first, artefact_hash="f" * 64), *entries[1:]]
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how", ["invented-consent", "wider-data-range", "longer-window", "other-artefact"]
)
def test_forged_manifest_entries_read_no_row(
    world: World, tmp_path: Path, reads: list[int], how: str
) -> None:
    """A gateway-signed manifest with one entry the merchant never approved is refused whole."""
    node = own_node(world, "isv0", tmp_path, "min-cohort = 5")
    entries = _forge(list(world.cohort.by_isv["isv0"]), how)
    token = manifest(world, "isv0", entries, job_id=f"job-forged-{how}", round=1)

    reply = send(node, model_message(token, job_id=f"job-forged-{how}", round=1,
                                     encoder=grid_encoder(world, "isv0")))

    assert reply.has_error() and reply.error.code == ERR.CONSENT_NOT_APPROVED
    assert refusal_receipt(node, reply).refusal == "CONSENT_NOT_APPROVED"
    assert "entries=1" in reply.error.reason and reads == []


def test_scoring_purpose_needs_the_merchants_scoring_approval(
    world: World, tmp_path: Path, reads: list[int]
) -> None:
    """A merchant who approved training only cannot be put in a credit_scoring manifest."""
    node = own_node(world, "isv1", tmp_path)
    training_only = [e for e in world.cohort.by_isv["isv1"]
                     if e.merchant_id not in world.cohort.scoring_ok]
    token = manifest(world, "isv1", training_only, job_id="job-score-forged", round=0,
                     purpose="credit_scoring", with_labels=False)

    reply = send(node, model_message(token, job_id="job-score-forged", round=0,
                                     encoder=grid_encoder(world, "isv1"), action="query.score"))

    assert reply.has_error() and reply.error.code == ERR.CONSENT_NOT_APPROVED and reads == []


def test_revoked_and_unsigned_approvals_do_not_count(
    world: World, tmp_path: Path, reads: list[int]
) -> None:
    """A revocation in the ISV's system, or a register line without the node's key, refuses."""
    node = own_node(world, "isv2", tmp_path, "min-cohort = 5")
    entries = list(world.cohort.by_isv["isv2"])
    register = node.approvals(node.node_policy())
    register.revoke(entries[0].consent_id)
    token = manifest(world, "isv2", entries, job_id="job-revoked", round=1)
    reply = send(node, model_message(token, job_id="job-revoked", round=1,
                                     encoder=grid_encoder(world, "isv2")))
    assert reply.has_error() and reply.error.code == ERR.CONSENT_NOT_APPROVED

    # Someone who can append to the register but lacks the node's key adds an approval.
    # (Copied from an approval the forged entry would otherwise match: only the MAC fails.)
    terms = register.lookup([entries[1].consent_id])[entries[1].consent_id].body()
    forged = {**terms, "consent_id": "c-m9x001", "merchant_id": "m9x001", "revoked": False}
    with closing(sqlite3.connect(register.path)) as db, db:
        db.execute("INSERT INTO approvals (consent_id, terms, mac) VALUES (?, ?, ?)",
                    ("c-m9x001", json.dumps(forged, sort_keys=True).encode(), b"\0" * 32))
    extra = replace(entries[1], merchant_id="m9x001", consent_id="c-m9x001")
    token = manifest(world, "isv2", [*entries[1:], extra], job_id="job-unsigned", round=1)
    reply = send(node, model_message(token, job_id="job-unsigned", round=1,
                                     encoder=grid_encoder(world, "isv2")))
    assert reply.has_error() and reply.error.code == ERR.CONSENT_NOT_APPROVED
    assert reads == []


def test_approved_manifest_is_served(world: World, tmp_path: Path) -> None:
    """Control: the same manifest without forgery trains."""
    node = own_node(world, "isv0", tmp_path, "min-cohort = 5")
    token = manifest(world, "isv0", world.cohort.by_isv["isv0"], job_id="job-approved", round=1)

    reply = send(node, model_message(token, job_id="job-approved", round=1,
                                     encoder=grid_encoder(world, "isv0")))

    assert not reply.has_error(), reply.error.reason if reply.has_error() else None


@pytest.mark.parametrize("how", ["corrupt-database", "json-lines-register"])
def test_unreadable_approval_register_refuses_and_reads_no_row(
    world: World, tmp_path: Path, reads: list[int], how: str
) -> None:
    """A damaged register, or a JSON-lines one not yet imported, refuses: no row is read."""
    node = own_node(world, "isv0", tmp_path, "min-cohort = 5")
    register = node.approvals(node.node_policy())
    if how == "corrupt-database":  # an SQLite header over garbage
        register.path.write_bytes(b"SQLite format 3\0" + b"\xff" * 4096)
    else:
        register.path.write_text('{"mac": "00", "terms": {}}\n', "utf-8")
    entries = list(world.cohort.by_isv["isv0"])
    token = manifest(world, "isv0", entries, job_id=f"job-{how}", round=1)
    reply = send(node, model_message(token, job_id=f"job-{how}", round=1,
                                     encoder=grid_encoder(world, "isv0")))
    assert reply.has_error() and reply.error.code == ERR.NODE_FAILURE
    assert "BAD_POLICY" in reply.error.reason and reads == []
