"""Round 0 at the node: a DP histogram of the cohort's features on the public grid."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, RecordDict

from .._errors import BudgetExceeded
from ..dp import PrivacyLedger, epsilon_of
from ..node import (
    dp_sketch,
    numpy_generator,
)
from ..specs import DPBudget
from ._handling import (
    as_array,
    node_dp_budget,
    only_merchants,
    request_cohort,
    request_policy,
)
from ._keys import (
    ERR,
    JOB_KEY,
    KEY_JOB_ID,
    SKETCH_KEY,
)
from ._mods import refuse
from ._request import current_request, current_usage

__all__ = ["sketch"]


def sketch(msg: Message, ctx: Context) -> Message:
    """A DP histogram of the cohort's features on the public grid (never rows or means)."""
    req, policy = current_request(), request_policy()
    cfg = msg.content.config_records[JOB_KEY]
    cohort = request_cohort()
    if len(cohort.frame) < policy.min_cohort:
        return refuse(msg, ERR.POLICY_REFUSED, "MIN_COHORT", {"min": policy.min_cohort})
    z = policy.sketch_noise_multiplier
    budget = node_dp_budget(cfg)
    if budget is None:  # a no-DP job (the policy allows it): the sketch is still DP
        budget = DPBudget(
            epsilon=epsilon_of([(z, 1.0, 1)], policy.delta) * (1 + 1e-9),
            delta=policy.delta,
            lifetime_epsilon=policy.max_epsilon_lifetime,
        )
    ledger = PrivacyLedger(req.node.privacy_ledger_path)
    job_id = str(cfg[KEY_JOB_ID])
    try:
        admitted, _ = ledger.admit(
            job_id=job_id,
            budget=budget,
            merchant_ids=cohort.merchant_ids,
            lifetime_epsilon=policy.max_epsilon_lifetime,
            dry_run=True,
        )
        if len(admitted) < policy.min_cohort:
            return refuse(msg, ERR.POLICY_REFUSED, "MIN_COHORT", {"min": policy.min_cohort})
        admitted, _ = ledger.admit(
            job_id=job_id,
            budget=budget,
            merchant_ids=admitted,
            lifetime_epsilon=policy.max_epsilon_lifetime,
        )
    except BudgetExceeded:
        return refuse(msg, ERR.BUDGET_EXCEEDED, "BUDGET_EXCEEDED")
    frame = only_merchants(cohort.frame, admitted)
    sk = dp_sketch(
        frame, list(cohort.features), noise_multiplier=z, rng=numpy_generator(policy, 1)
    )
    epsilon = ledger.record(job_id, [(z, 1.0, 1)], streams=("train", "eval"))
    current_usage().record(
        rows_used=len(frame),
        merchant_ids=admitted,
        epsilon=epsilon,
        delta=budget.delta,
        rows_read=cohort.rows_read,
        read_ids=cohort.merchant_ids,
    )
    arrays = ArrayRecord({k: as_array(v) for k, v in sk.to_arrays().items()})
    return Message(RecordDict({SKETCH_KEY: arrays}), reply_to=msg)