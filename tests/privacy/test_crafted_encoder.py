"""Attack 3 — scoring as a raw-value oracle through a crafted model and bin encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from federation.apps import ERR
from federation.apps._keys import KEY_MERCHANT_IDS, SCORE_IDS_KEY, SCORES_KEY
from federation.features import BinEncoder
from federation.models import build_g_erp, get_weights

from ..federation._flworld import World
from ._platform import (
    FEATURES,
    SPEC,
    grid_encoder,
    manifest,
    model_message,
    own_node,
    refusal_receipt,
    send,
)

SCORE_ENTRIES = "credit_scoring"


def _oracle(world: World) -> tuple[BinEncoder, list[np.ndarray]]:
    """2,000 edges on cash and a logistic model whose score is monotone in the cash bin."""
    cash = np.sort(world.erp["isv2"]["cash"].to_numpy(dtype=np.float64))
    fine = np.unique(np.concatenate([np.linspace(cash.min() - 1, cash.max() + 1, 2000)]))
    base = grid_encoder(world, "isv2")
    edges = dict(base.edges)
    edges["cash"] = fine
    encoder = BinEncoder(edges)
    model = build_g_erp("logistic", encoder.n_outputs)
    with torch.no_grad():
        w = np.zeros(encoder.n_outputs, dtype=np.float32)
        start = sum(len(e) + 2 for c, e in encoder.edges.items() if FEATURES.index(c) < 2)
        w[start : start + len(fine) + 1] = np.linspace(-8, 8, len(fine) + 1)
        model.linear.weight.copy_(torch.as_tensor(w[None, :]))  # type: ignore[union-attr]
    return encoder, get_weights(model)


def _recovered_within_100(world: World, reply: object, encoder: BinEncoder) -> int:
    """Merchants whose cash the attacker reads back from their score to within 100."""
    if reply.has_error():  # type: ignore[attr-defined]
        return 0
    ids = reply.content.config_records[SCORE_IDS_KEY][KEY_MERCHANT_IDS]  # type: ignore[attr-defined]
    g = reply.content.array_records[SCORES_KEY]["g"].numpy()  # type: ignore[attr-defined]
    fine = encoder.edges["cash"]
    logit = np.log(g / (1 - g))
    bins = np.rint((logit + 8) / 16 * len(fine)).astype(int)
    guess = fine[np.clip(bins, 0, len(fine) - 1)]
    truth = world.erp["isv2"].set_index("merchant_id").loc[list(ids), "cash"].to_numpy()
    return int((np.abs(guess - truth) <= 100).sum())


def test_crafted_encoder_returns_no_merchants_cash(world: World, tmp_path: Path) -> None:
    """Scoring with a model the node never trained is refused; so is training it in."""
    node = own_node(world, "isv2", tmp_path, "min-cohort = 5\nmin-score-cohort = 5")
    encoder, weights = _oracle(world)
    entries = world.cohort.by_isv["isv2"]
    scoring = [e for e in entries if e.merchant_id in world.cohort.scoring_ok]

    score_token = manifest(world, "isv2", scoring, job_id="job-oracle", round=0,
                           purpose=SCORE_ENTRIES, with_labels=False)
    reply = send(node, model_message(score_token, job_id="job-oracle", round=0, encoder=encoder,
                                     weights=weights, action="query.score"))
    assert reply.has_error() and reply.error.code == ERR.MODEL_UNKNOWN
    assert _recovered_within_100(world, reply, encoder) == 0

    # The platform slips the oracle into a "training job" first: the node refuses the encoder.
    train_token = manifest(world, "isv2", entries, job_id="job-launder", round=1)
    reply = send(node, model_message(train_token, job_id="job-launder", round=1, encoder=encoder,
                                     weights=weights))
    assert reply.has_error() and refusal_receipt(node, reply).refusal == "ENCODER_TOO_FINE"

    # Few edges, but each placed at a merchant's value: off the public grid, refused too.
    cash = np.sort(world.erp["isv2"]["cash"].to_numpy(dtype=np.float64))
    sneaky = BinEncoder({**grid_encoder(world, "isv2").edges, "cash": cash[::6][:10]})
    reply = send(node, model_message(train_token, job_id="job-launder", round=1, encoder=sneaky))
    assert reply.has_error() and refusal_receipt(node, reply).refusal == "ENCODER_OFF_GRID"


def test_node_scores_with_a_model_it_helped_train(world: World, tmp_path: Path) -> None:
    """Control: the model and grid encoder of a job the node trained in are scored normally."""
    node = own_node(world, "isv2", tmp_path, "min-cohort = 5\nmin-score-cohort = 5")
    encoder = grid_encoder(world, "isv2")
    weights = get_weights(build_g_erp(SPEC.arch, encoder.n_outputs))
    token = manifest(world, "isv2", world.cohort.by_isv["isv2"], job_id="job-honest", round=1)
    assert not send(node, model_message(token, job_id="job-honest", round=1, encoder=encoder,
                                        weights=weights)).has_error()
    scoring = [e for e in world.cohort.by_isv["isv2"] if e.merchant_id in world.cohort.scoring_ok]
    token = manifest(world, "isv2", scoring, job_id="job-honest-score", round=0,
                     purpose=SCORE_ENTRIES, with_labels=False)

    reply = send(node, model_message(token, job_id="job-honest-score", round=0, encoder=encoder,
                                     weights=weights, action="query.score"))

    assert not reply.has_error(), reply.error.reason if reply.has_error() else None
    assert len(reply.content.config_records[SCORE_IDS_KEY][KEY_MERCHANT_IDS]) == len(scoring)
