"""Attack 6 — the training loss and evaluation metrics as exact functions of a few rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from federation import is_holdout
from federation.apps import ERR, egress_guard_mod, manifest_mod, usage_receipt_mod
from federation.apps._keys import METRICS_KEY
from federation.apps._request import current_usage
from federation.metrics import auc
from federation.models import build_g_erp, get_weights, predict_proba
from federation.schema import MERCHANT_ID

from ..federation._flworld import World, node_context
from ._platform import SPEC, grid_encoder, labels, manifest, model_message, own_node, send


def test_train_reply_carries_no_loss(world: World, tmp_path: Path) -> None:
    """A train reply's metrics are the count and the ε spent: no loss to invert."""
    node = own_node(world, "isv0", tmp_path, "min-cohort = 5")
    token = manifest(world, "isv0", world.cohort.by_isv["isv0"], job_id="job-loss", round=1)

    reply = send(node, model_message(token, job_id="job-loss", round=1,
                                     encoder=grid_encoder(world, "isv0")))

    assert not reply.has_error(), reply.error.reason if reply.has_error() else None
    assert set(reply.content.metric_records[METRICS_KEY]) == {"num-examples", "epsilon", "delta"}


def test_a_handler_that_leaks_the_loss_is_blocked(world: World, tmp_path: Path) -> None:
    """Even a handler that adds train-loss cannot get it past the egress guard."""
    node = own_node(world, "isv0", tmp_path, "min-cohort = 5")
    app = ClientApp(mods=[manifest_mod, egress_guard_mod, usage_receipt_mod])

    @app.train()
    def leaky(msg: Message, ctx: Context) -> Message:
        current_usage().record(rows_used=0, merchant_ids=[], epsilon=0.0, delta=0.0)
        metrics = MetricRecord({"num-examples": 1, "train-loss": 0.6931})
        return Message(RecordDict({METRICS_KEY: metrics, "arrays": msg.content["arrays"]}),
                       reply_to=msg)

    token = manifest(world, "isv0", world.cohort.by_isv["isv0"], job_id="job-leak", round=1)
    reply = app(model_message(token, job_id="job-leak", round=1,
                              encoder=grid_encoder(world, "isv0")), node_context(node))

    assert reply.has_error() and reply.error.code == ERR.EGRESS_BLOCKED


def test_evaluation_metrics_are_noisy_and_policy_listed(world: World, tmp_path: Path) -> None:
    """Evaluation never returns the exact AUC of the held-out merchants; unlisted metrics stay."""
    policy = 'min-cohort = 5\nmin-score-cohort = 5\nallowed-metrics = ["num-examples", "auc"]'
    node = own_node(world, "isv0", tmp_path, policy)
    encoder = grid_encoder(world, "isv0")
    model = build_g_erp(SPEC.arch, encoder.n_outputs)
    weights = get_weights(model)
    token = manifest(world, "isv0", world.cohort.by_isv["isv0"], job_id="job-eval", round=1)
    assert not send(node, model_message(token, job_id="job-eval", round=1, encoder=encoder,
                                        weights=weights)).has_error()
    frame = world.erp["isv0"]
    held = frame[frame[MERCHANT_ID].map(is_holdout)].sort_values(MERCHANT_ID)
    lab = labels(world)
    scores = predict_proba(model, encoder.transform(held))
    exact = auc(held[MERCHANT_ID].map(lab).to_numpy(), scores)

    for _ in range(2):
        reply = send(node, model_message(token, job_id="job-eval", round=1, encoder=encoder,
                                         weights=weights, action="evaluate"))
        assert not reply.has_error(), reply.error.reason if reply.has_error() else None
        metrics = reply.content.metric_records[METRICS_KEY]
        assert set(metrics) == {"num-examples", "auc"}
        assert float(metrics["auc"]) != pytest.approx(exact, abs=1e-9)
