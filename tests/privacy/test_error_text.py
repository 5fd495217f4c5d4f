"""Attack 5 — error replies as a side channel: raw cells and merchant ids in reasons."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from federation.apps import ERR
from federation.models import build_g_erp, get_weights
from federation.node import REASON_GRAMMAR

from ..federation._flworld import World
from ._platform import SPEC, grid_encoder, manifest, model_message, own_node, send

RAW = "1,234,567.89"


def _bad_csv(world: World, tmp_path: Path) -> Path:
    frame = world.erp["isv0"].copy()
    frame["cash"] = frame["cash"].astype(object)
    frame.loc[3, "cash"] = RAW  # a cell the ERP export got wrong
    frame.loc[[5, 9], "debt"] = -1  # and two negative debts
    path = tmp_path / "erp.csv"
    frame.to_csv(path, index=False)
    return path


def test_error_replies_carry_codes_and_counts_only(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A data error leaves as its code; the raw cell and merchant ids stay in the node's log."""
    node = replace(own_node(world, "isv0", tmp_path, "min-cohort = 5"),
                   erp_path=_bad_csv(world, tmp_path))
    token = manifest(world, "isv0", world.cohort.by_isv["isv0"], job_id="job-bad-data", round=1)

    with caplog.at_level(logging.WARNING, logger="fedgate.node"):
        reply = send(node, model_message(token, job_id="job-bad-data", round=1,
                                         encoder=grid_encoder(world, "isv0")))

    assert reply.has_error() and reply.error.code == ERR.NODE_FAILURE
    reason = reply.error.reason
    assert REASON_GRAMMAR.match(reason), reason
    assert RAW not in reason and "m0x" not in reason and "1234567" not in reason
    assert RAW in caplog.text or "m0x" in caplog.text  # the ISV can still debug it locally


def test_an_exception_in_the_node_leaves_as_node_failure(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Weights of the wrong shape make the handler raise: the reply says NODE_FAILURE only."""
    node = own_node(world, "isv1", tmp_path, "min-cohort = 5")
    encoder = grid_encoder(world, "isv1")
    wrong = [np.full(w.shape[::-1] + (3,), 7.0, dtype=np.float32)
             for w in get_weights(build_g_erp(SPEC.arch, encoder.n_outputs))]
    token = manifest(world, "isv1", world.cohort.by_isv["isv1"], job_id="job-raise", round=1)

    with caplog.at_level(logging.WARNING, logger="fedgate.node"):
        reply = send(node, model_message(token, job_id="job-raise", round=1, encoder=encoder,
                                         weights=wrong))

    assert reply.has_error() and REASON_GRAMMAR.match(reply.error.reason), reply.error.reason
    assert "shape" not in reply.error.reason.lower() and "Traceback" not in reply.error.reason
