"""Attack 6 — the training loss and evaluation metrics as exact functions of a few rows."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from federation.apps import ERR, egress_guard_mod, manifest_mod, usage_receipt_mod
from federation.apps._keys import METRICS_KEY
from federation.apps._request import current_usage
from federation.models import build_g_erp, get_weights

from ..federation._flworld import World, node_context
from ._platform import SPEC, grid_encoder, manifest, model_message, own_node, send


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
    """The same evaluation twice gives two different AUCs; unlisted metrics never leave."""
    policy = 'min-cohort = 5\nmin-score-cohort = 5\nallowed-metrics = ["num-examples", "auc"]'
    node = own_node(world, "isv0", tmp_path, policy)
    encoder = grid_encoder(world, "isv0")
    weights = get_weights(build_g_erp(SPEC.arch, encoder.n_outputs))
    token = manifest(world, "isv0", world.cohort.by_isv["isv0"], job_id="job-eval", round=1)
    assert not send(node, model_message(token, job_id="job-eval", round=1, encoder=encoder,
                                        weights=weights)).has_error()

    aucs = []
    for _ in range(2):
        reply = send(node, model_message(token, job_id="job-eval", round=1, encoder=encoder,
                                         weights=weights, action="evaluate"))
        assert not reply.has_error(), reply.error.reason if reply.has_error() else None
        metrics = reply.content.metric_records[METRICS_KEY]
        assert set(metrics) == {"num-examples", "auc"}
        aucs.append(float(metrics["auc"]))

    assert aucs[0] != aucs[1]
