"""The node's policy check of a request whose manifest already verified (a pure function).

:func:`check_request` returns the refusal code (and counts) for a request the
policy does not allow, or ``None``. :func:`node_budget` turns a message's DP
fields into the budget the node will actually enforce: the job's ε and δ may
only be at or below the policy's caps, and the lifetime ε is always the
policy's.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..specs import DPBudget
from ._policy import NodePolicy

__all__ = ["check_request", "node_budget", "Refusal"]

Refusal = tuple[str, dict[str, int | float]]
"""A refusal: its code and the counts that may leave with it."""


def check_request(
    policy: NodePolicy,
    *,
    purpose: str,
    spec: str,
    arch: str,
    categories: Sequence[str],
    dp_epsilon: float,
    dp_delta: float,
    unapproved: int,
    model: bool = True,
) -> Refusal | None:
    """The first policy rule the request breaks, or ``None``.

    Parameters
    ----------
    policy : NodePolicy
    purpose : str
        The verified manifest's purpose.
    spec, arch : str
        The model spec and architecture the message names.
    categories : Sequence[str]
        The verified manifest's categories.
    dp_epsilon, dp_delta : float
        The message's DP budget (``dp_epsilon <= 0``: no DP).
    unapproved : int
        Manifest entries no approval in the node's register covers.
    model : bool, default True
        The request runs a model (train, evaluate, sketch, score): its spec and
        architecture must be allowed. A signals query runs none (its own rules are
        checked by its handler).
    """
    if policy.require_approval and unapproved:
        return "CONSENT_NOT_APPROVED", {"entries": unapproved}
    if model and spec not in policy.allowed_specs:
        return "SPEC_NOT_ALLOWED", {}
    if model and arch not in policy.allowed_archs:
        return "ARCH_NOT_ALLOWED", {}
    outside = [c for c in categories if c not in policy.allowed_categories]
    if outside:
        return "CATEGORY_NOT_ALLOWED", {"categories": len(outside)}
    if purpose == "model_training":
        if dp_epsilon <= 0 and not policy.allow_no_dp:
            return "DP_REQUIRED", {}
        if dp_epsilon > policy.max_epsilon_per_job:
            return "EPSILON_OVER_POLICY", {"max-epsilon": policy.max_epsilon_per_job}
        if dp_epsilon > 0 and not 0 < dp_delta <= policy.delta:
            return "DELTA_OVER_POLICY", {}
    return None


def node_budget(
    policy: NodePolicy, *, dp_epsilon: float, dp_delta: float, max_grad_norm: float
) -> DPBudget | None:
    """The budget the node enforces (``None``: no DP, only where the policy allows it)."""
    if dp_epsilon <= 0:
        return None
    return DPBudget(
        epsilon=min(dp_epsilon, policy.max_epsilon_per_job),
        delta=min(dp_delta, policy.delta),
        max_grad_norm=max_grad_norm,
        lifetime_epsilon=policy.max_epsilon_lifetime,
    )
