"""Evaluation at the node: noisy metrics of the global model on the held-out merchants."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Context, Message, MetricRecord, RecordDict

from .._errors import BudgetExceeded
from ..dp import PrivacyLedger, noise_for_budget
from ..models import predict_proba
from ..node import (
    numpy_generator,
)
from ._handling import (
    checked_encoder,
    holdout_split,
    labelled,
    message_model,
    model_hashes,
    node_dp_budget,
    noisy_metrics,
    only_merchants,
    request_cohort,
    request_policy,
)
from ._keys import (
    ERR,
    JOB_KEY,
    KEY_JOB_ID,
    KEY_ROUND,
    KEY_ROUNDS,
    METRICS_KEY,
)
from ._mods import refuse
from ._node import label_vector
from ._request import current_request, current_usage

__all__ = ["evaluate"]


def evaluate(msg: Message, ctx: Context) -> Message:
    """Noisy AUC, KS and Brier of the global model on this node's held-out merchants."""
    torch.set_num_threads(1)
    req, policy = current_request(), request_policy()
    cfg = msg.content.config_records[JOB_KEY]
    job_id = str(cfg[KEY_JOB_ID])
    cohort = request_cohort(holdout_split(msg, held_out=True))  # labelled held-out merchants only
    encoder = checked_encoder(msg, cohort)
    if isinstance(encoder, Message):
        return encoder  # the policy refused it
    registry = req.node.model_register()
    if job_id not in registry.trained_jobs():
        return refuse(msg, ERR.MODEL_UNKNOWN, "MODEL_UNKNOWN")
    model_hash, enc_hash = model_hashes(msg)
    registry.record(job_id=job_id, action="evaluate", model=model_hash, encoder=enc_hash)
    part, y, ids = labelled(cohort)
    if len(part) < policy.min_score_cohort or np.unique(y).size < 2:
        # NO_DATA: a fact about the node's held-out merchants, the job goes on.
        return refuse(msg, ERR.NO_DATA, "MIN_COHORT", {"min": policy.min_score_cohort})
    budget = node_dp_budget(cfg)
    ledger = PrivacyLedger(req.node.privacy_ledger_path)
    sigma = policy.eval_noise_multiplier
    eps, delta = 0.0, 0.0
    if budget is not None:
        try:
            ids, _ = ledger.admit(
                job_id=job_id,
                budget=budget,
                merchant_ids=ids,
                lifetime_epsilon=policy.max_epsilon_lifetime,
            )
            rounds_left = int(cfg[KEY_ROUNDS]) - int(cfg[KEY_ROUND]) + 1  # type: ignore[arg-type]
            sigma = max(
                sigma,
                noise_for_budget(
                    ledger.job_history(job_id, "eval"),
                    target_epsilon=budget.epsilon,
                    delta=budget.delta,
                    sample_rate=1.0,
                    steps=max(rounds_left, 1),
                ),
            )
        except BudgetExceeded:
            return refuse(msg, ERR.BUDGET_EXCEEDED, "BUDGET_EXCEEDED")
        part = only_merchants(part, ids)
        y = label_vector(cohort, part)
        if len(part) < policy.min_score_cohort or np.unique(y).size < 2:
            return refuse(msg, ERR.NO_DATA, "MIN_COHORT", {"min": policy.min_score_cohort})
        eps = ledger.record(job_id, [(sigma, 1.0, 1)], streams=("eval",))
        delta = budget.delta
    X = encoder.transform_rows(part)
    p = predict_proba(message_model(msg, X.shape[1]), X)
    values = noisy_metrics(y, p, sigma, numpy_generator(policy, 2))
    current_usage().record(
        rows_used=len(part),
        merchant_ids=ids,
        epsilon=eps,
        delta=delta,
        rows_read=cohort.rows_read,
        read_ids=cohort.merchant_ids,
    )
    allowed = set(policy.allowed_metrics)
    metrics = MetricRecord(
        {k: v for k, v in {**values, "epsilon": eps, "delta": delta}.items() if k in allowed}
    )
    return Message(RecordDict({METRICS_KEY: metrics}), reply_to=msg)