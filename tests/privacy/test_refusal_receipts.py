"""Refusal receipts: a node's signed refusal is verified and ledgered; a forged one is not."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from federation import ReceiptInvalid
from federation.apps import ERR, NodeConfig
from federation.apps._node import _public_key
from federation.receipts import UsageReceipt, sign_receipt
from federation.refusals import REFUSAL, parse_refusal, record_refusal
from ledger._models import LogEntryRow

from ..federation._flworld import World
from ._platform import grid_encoder, manifest, model_message, own_node, send

JOB = "job-refused"


def _refused(world: World, tmp_path: Path) -> tuple[NodeConfig, str, str]:
    """A real refusal: a one-merchant cohort sent to a node with min-cohort 10."""
    node = own_node(world, "isv0", tmp_path)
    one = [e for e in world.cohort.by_isv["isv0"] if e.merchant_id == "m0x002"]
    token = manifest(world, "isv0", one, job_id=JOB, round=1)
    reply = send(node, model_message(token, job_id=JOB, round=1,
                                     encoder=grid_encoder(world, "isv0")))
    assert reply.has_error() and reply.error.code == ERR.POLICY_REFUSED
    # The platform's own record of what it sent: the root in the signed manifest's payload.
    payload = token.split(b"\n", 1)[0].split(b".")[1]
    header = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
    return node, reply.error.reason, str(header["root"])


def _refusals(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).where(LogEntryRow.kind == REFUSAL)) or 0


def _request(root: str) -> dict[str, object]:
    return dict(job_id=JOB, round=1, data_provider="isv0", action="train", manifest_root=root)


def test_a_nodes_signed_refusal_is_verified_and_ledgered(
    world: World, tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    """The refusal names its rule and counts; the ledger keeps the node's receipt."""
    node, reason, root = _refused(world, tmp_path)
    key = _public_key(node.node_key.with_suffix(".pub.pem"))

    body = record_refusal(sessions, reason, key, **_request(root))  # type: ignore[arg-type]

    assert body is not None
    assert (body["code"], body["refusal"], body["counts"]) == (
        "POLICY_REFUSED", "MIN_COHORT", {"min": 10}
    )
    assert (body["rows_read"], body["merchants_used"], body["data_provider"]) == (0, 0, "isv0")
    assert _refusals(sessions) == 1


def test_forged_refusals_are_refused_and_nothing_is_written(
    world: World, tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    """Another key, another request, another rule, or a 'refusal' that read rows: all refused."""
    node, reason, root = _refused(world, tmp_path)
    key = _public_key(node.node_key.with_suffix(".pub.pem"))
    claim = parse_refusal(reason)
    assert claim is not None
    platform_key = Ed25519PrivateKey.generate()  # the platform signing in the node's name
    honest = UsageReceipt(
        job_id=JOB, round=1, data_provider="isv0", action="train", rows_used=0,
        merchants_used=0, merchants_hash="x", rows_read=0, merchants_read=0,
        merchants_read_hash="x", manifest_root=root, epsilon_spent=0.0, delta=0.0,
        issued_at="2026-12-06T00:00:00Z", refusal="MIN_COHORT",
    )
    signed = sign_receipt(honest, platform_key).decode()
    forged = f"POLICY_REFUSED: MIN_COHORT min=10 receipt={signed}"
    cases = {
        "RECEIPT_SIGNATURE": (forged, _request(root)),
        "RECEIPT_MISMATCH": (reason, {**_request(root), "round": 2}),
    }
    renamed = reason.replace("MIN_COHORT", "MODEL_UNKNOWN", 1)
    cases["RULE"] = (renamed, _request(root))

    for name, (text, request) in cases.items():
        with pytest.raises(ReceiptInvalid) as err:
            record_refusal(sessions, text, key, **request)  # type: ignore[arg-type]
        want = "RECEIPT_MISMATCH" if name == "RULE" else name
        assert err.value.code == want, name

    assert record_refusal(sessions, "POLICY_REFUSED: MIN_COHORT min=10", key,
                          **_request(root)) is None  # type: ignore[arg-type]
    assert _refusals(sessions) == 0


def test_a_refusal_that_read_rows_is_not_a_refusal(sessions: sessionmaker[Session]) -> None:
    """A node's key signing a 'refusal' that read rows does not pass as one."""
    key = Ed25519PrivateKey.generate()
    receipt = UsageReceipt(
        job_id=JOB, round=1, data_provider="isv0", action="train", rows_used=0,
        merchants_used=0, merchants_hash="x", rows_read=12, merchants_read=12,
        merchants_read_hash="x", manifest_root="r", epsilon_spent=0.0, delta=0.0,
        issued_at="2026-12-06T00:00:00Z", refusal="MIN_COHORT",
    )
    reason = f"POLICY_REFUSED: MIN_COHORT receipt={sign_receipt(receipt, key).decode()}"

    with pytest.raises(ReceiptInvalid, match="nothing"):
        record_refusal(sessions, reason, key.public_key(), **_request("r"))  # type: ignore[arg-type]
    assert _refusals(sessions) == 0
