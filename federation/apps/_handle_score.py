"""Scoring at the node: g-scores, only with a model and encoder the node helped train."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from ..models import predict_proba
from ..schema import MERCHANT_ID
from ._handling import (
    as_array,
    checked_encoder,
    message_model,
    model_hashes,
    request_cohort,
    request_policy,
)
from ._keys import (
    ERR,
    KEY_MERCHANT_IDS,
    METRICS_KEY,
    NUM_EXAMPLES,
    SCORE_IDS_KEY,
    SCORES_KEY,
)
from ._mods import refuse
from ._request import current_request, current_usage

__all__ = ["score"]


def score(msg: Message, ctx: Context) -> Message:
    """Per-merchant g-scores, only with a model and encoder the node helped train."""
    torch.set_num_threads(1)
    req, policy = current_request(), request_policy()
    model_hash, enc_hash = model_hashes(msg)
    if not req.node.model_register().known(model_hash, enc_hash):
        return refuse(msg, ERR.MODEL_UNKNOWN, "MODEL_UNKNOWN")
    cohort = request_cohort()
    if len(cohort.frame) < policy.min_score_cohort:
        return refuse(msg, ERR.POLICY_REFUSED, "MIN_COHORT", {"min": policy.min_score_cohort})
    encoder = checked_encoder(msg, cohort)
    if isinstance(encoder, Message):
        return encoder  # the policy refused it
    X = encoder.transform_rows(cohort.frame)
    p = predict_proba(message_model(msg, X.shape[1]), X).astype(np.float64)
    ids = [str(m) for m in cohort.frame[MERCHANT_ID]]
    current_usage().record(
        rows_used=len(ids),
        merchant_ids=ids,
        epsilon=0.0,
        delta=0.0,
        rows_read=cohort.rows_read,
        read_ids=cohort.merchant_ids,
    )
    return Message(
        RecordDict(
            {
                SCORES_KEY: ArrayRecord({"g": as_array(p)}),
                SCORE_IDS_KEY: ConfigRecord({KEY_MERCHANT_IDS: ids}),
                METRICS_KEY: MetricRecord({NUM_EXAMPLES: len(ids)}),
            }
        ),
        reply_to=msg,
    )