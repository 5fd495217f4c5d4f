"""Attack 2 — no privacy floor: a one-merchant cohort and server-chosen DP settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.apps import ERR

from ..federation._flworld import World
from ._platform import (
    grid_encoder,
    manifest,
    model_message,
    own_node,
    refusal_receipt,
    send,
)


def test_one_merchant_cohort_is_refused_with_a_signed_refusal(world: World, tmp_path: Path) -> None:
    """A manifest of one training merchant trains nobody; the refusal is in the node's receipt."""
    node = own_node(world, "isv0", tmp_path)  # safe defaults: min-cohort 10
    one = [e for e in world.cohort.by_isv["isv0"] if e.merchant_id == "m0x002"]
    token = manifest(world, "isv0", one, job_id="job-one", round=1)

    reply = send(node, model_message(token, job_id="job-one", round=1,
                                     encoder=grid_encoder(world, "isv0")))

    assert reply.has_error() and reply.error.code == ERR.POLICY_REFUSED
    assert not reply.has_content()  # no weights, no metrics
    receipt = refusal_receipt(node, reply)
    assert (receipt.refusal, receipt.rows_used, receipt.rows_read) == ("MIN_COHORT", 0, 0)
    assert receipt.job_id == "job-one"


@pytest.mark.parametrize(
    ("fields", "rule"),
    [
        ({"dp-epsilon": 0.0}, "DP_REQUIRED"),  # DP switched off by the server
        ({"dp-epsilon": 1000.0}, "EPSILON_OVER_POLICY"),  # ε far above the node's cap
        ({"dp-epsilon": 3.0, "dp-delta": 0.2}, "DELTA_OVER_POLICY"),
        ({"spec": "fake-trade"}, "SPEC_NOT_ALLOWED"),  # a spec that trains without DP
        ({"arch": "transformer"}, "ARCH_NOT_ALLOWED"),
    ],
)
def test_server_chosen_privacy_settings_are_requests_not_settings(
    world: World, tmp_path: Path, fields: dict[str, object], rule: str
) -> None:
    """Each setting outside the node's policy is refused with its code, signed."""
    node = own_node(world, "isv1", tmp_path)
    token = manifest(world, "isv1", world.cohort.by_isv["isv1"], job_id=f"job-{rule}", round=1)

    reply = send(node, model_message(token, job_id=f"job-{rule}", round=1,
                                     encoder=grid_encoder(world, "isv1"), **fields))

    assert reply.has_error() and reply.error.code == ERR.POLICY_REFUSED
    assert refusal_receipt(node, reply).refusal == rule


def test_categories_the_node_does_not_serve_are_refused(world: World, tmp_path: Path) -> None:
    """A policy that serves only margins refuses a job that also reads cash and debt."""
    node = own_node(world, "isv2", tmp_path, 'allowed-categories = ["margins"]')
    token = manifest(world, "isv2", world.cohort.by_isv["isv2"], job_id="job-cats", round=1)

    reply = send(node, model_message(token, job_id="job-cats", round=1,
                                     encoder=grid_encoder(world, "isv2")))

    assert reply.has_error() and refusal_receipt(node, reply).refusal == "CATEGORY_NOT_ALLOWED"
