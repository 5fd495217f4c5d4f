"""Local training at the node: DP-SGD on the admitted merchants outside the hold-out."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict

from .._errors import BudgetExceeded
from ..dp import PrivacyLedger, round_noise, train_dp_sgd
from ..models import get_weights, train_local
from ..node import (
    node_seed,
    torch_generator,
)
from ..schema import MERCHANT_ID
from ._handling import (
    as_array,
    checked_encoder,
    holdout_split,
    message_model,
    model_hashes,
    node_dp_budget,
    only_merchants,
    request_cohort,
    request_policy,
)
from ._keys import (
    ARRAYS_KEY,
    ERR,
    JOB_KEY,
    KEY_BATCH_SIZE,
    KEY_EPOCHS,
    KEY_JOB_ID,
    KEY_LR,
    KEY_PROXIMAL_MU,
    KEY_ROUND,
    KEY_ROUNDS,
    METRICS_KEY,
    NUM_EXAMPLES,
)
from ._mods import refuse
from ._node import label_vector
from ._request import current_request, current_usage

__all__ = ["train"]


def train(msg: Message, ctx: Context) -> Message:
    """Local training (DP-SGD unless the node's policy allows a job without it)."""
    torch.set_num_threads(1)
    req, policy = current_request(), request_policy()
    cfg = msg.content.config_records[JOB_KEY]
    job_id = str(cfg[KEY_JOB_ID])
    # Read only what training uses: labelled merchants outside the held-out fifth.
    cohort = request_cohort(holdout_split(msg, held_out=False))
    encoder = checked_encoder(msg, cohort)
    if isinstance(encoder, Message):
        return encoder  # the policy refused it
    budget = node_dp_budget(cfg)
    ledger = PrivacyLedger(req.node.privacy_ledger_path)
    ids_all = [str(m) for m in cohort.frame[MERCHANT_ID]]
    try:
        admitted = ids_all
        if budget is not None:  # who this round may use: spent merchants sit it out
            admitted, _ = ledger.admit(
                job_id=job_id,
                budget=budget,
                merchant_ids=ids_all,
                lifetime_epsilon=policy.max_epsilon_lifetime,
                dry_run=True,
            )
        if len(admitted) < policy.min_cohort:
            return refuse(msg, ERR.POLICY_REFUSED, "MIN_COHORT", {"min": policy.min_cohort})
        part = only_merchants(cohort.frame, admitted)
        y, ids = label_vector(cohort, part), [str(m) for m in part[MERCHANT_ID]]
        X = encoder.transform_rows(part)
        model = message_model(msg, X.shape[1])
        common = dict(
            epochs=int(cfg[KEY_EPOCHS]),  # type: ignore[arg-type]
            batch_size=int(cfg[KEY_BATCH_SIZE]),  # type: ignore[arg-type]
            lr=float(cfg[KEY_LR]),  # type: ignore[arg-type]
            proximal_mu=float(cfg[KEY_PROXIMAL_MU]),  # type: ignore[arg-type]
        )
        epsilon, delta = 0.0, 0.0
        generator = torch_generator(policy, int(cfg[KEY_ROUND]))  # type: ignore[arg-type]
        if budget is None:
            train_local(model, X, y, seed=node_seed(policy), **common)  # type: ignore[arg-type]
        else:
            # Refuse before touching the optimiser, and charge nobody for a refused
            # round: size the noise for the rounds left (pure; refuses when none can
            # cover them), then charge the admitted merchants, then train.
            rounds_left = int(cfg[KEY_ROUNDS]) - int(cfg[KEY_ROUND]) + 1  # type: ignore[arg-type]
            history = ledger.job_history(job_id)
            sigma = max(
                policy.min_noise_multiplier,
                round_noise(
                    len(part),
                    epochs=common["epochs"],  # type: ignore[arg-type]
                    batch_size=common["batch_size"],  # type: ignore[arg-type]
                    budget=budget,
                    history=history,
                    rounds_left=rounds_left,
                ),
            )
            ids, _ = ledger.admit(
                job_id=job_id,
                budget=budget,
                merchant_ids=ids,
                lifetime_epsilon=policy.max_epsilon_lifetime,
            )
            if len(ids) < len(part):  # another job spent someone since the dry run
                if len(ids) < policy.min_cohort:
                    return refuse(
                        msg, ERR.POLICY_REFUSED, "MIN_COHORT", {"min": policy.min_cohort}
                    )
                part = only_merchants(part, ids)
                y, X = label_vector(cohort, part), encoder.transform_rows(part)
            result = train_dp_sgd(
                model,
                X,
                y,
                budget=budget,
                history=history,
                rounds_left=rounds_left,
                noise_multiplier=sigma,
                generator=generator,
                **common,  # type: ignore[arg-type]
            )
            epsilon = ledger.record(job_id, result.steps)
            delta = budget.delta
    except BudgetExceeded:
        return refuse(msg, ERR.BUDGET_EXCEEDED, "BUDGET_EXCEEDED")
    model_hash, enc_hash = model_hashes(msg)
    req.node.model_register().record(
        job_id=job_id, action="train", model=model_hash, encoder=enc_hash
    )
    current_usage().record(
        rows_used=len(part),
        merchant_ids=ids,
        epsilon=epsilon,
        delta=delta,
        rows_read=cohort.rows_read,
        read_ids=cohort.merchant_ids,
    )
    sent = msg.content.array_records[ARRAYS_KEY]
    weights = get_weights(model)
    arrays = ArrayRecord(
        {
            k: as_array(np.asarray(w, dtype=sent[k].numpy().dtype))
            for k, w in zip(sent.keys(), weights, strict=True)
        }
    )
    # No training loss: on a small cohort it is a function of a few rows.
    metrics = MetricRecord({NUM_EXAMPLES: len(part), "epsilon": epsilon, "delta": delta})
    return Message(RecordDict({ARRAYS_KEY: arrays, METRICS_KEY: metrics}), reply_to=msg)