"""The ISV side of fedgate: what the node enforces, whatever the platform asks.

* :class:`NodePolicy` — the ISV's privacy policy (node TOML ``[policy]``; safe
  defaults without one), :func:`load_policy`;
* :class:`ApprovalRegister` — merchant approvals the node holds and countersigns;
* :class:`ModelRegister` — the global models and encoders the node helped train;
* :func:`dp_sketch`, :data:`PUBLIC_GRID` — bin statistics under DP on a public grid;
* :func:`error_guard_mod` — error replies leave as codes and counts only;
* :func:`torch_generator`, :func:`numpy_generator` — the node's own randomness;
* :func:`check_request` — the policy check of a verified request;
* :func:`field_problem` — the job's extra fields against the node's declarations;
* :func:`register_approvals` — the one way approvals enter the register;
  :func:`approve_lines` verifies a file of signed approvals first (``fedgate node approve``);
* :func:`models_shaped_by` — the models a (revoked) merchant's data shaped.
"""

from __future__ import annotations

from ._approvals import Approval, ApprovalRegister, approval_payload
from ._checks import check_request, node_budget
from ._enrol import ApproveResult, approve_lines, register_approvals
from ._fields import field_problem
from ._guard import REASON_GRAMMAR, error_guard_mod, safe_reason
from ._lineage import models_shaped_by
from ._models import ModelRegister, encoder_hash, weights_hash
from ._policy import POLICY_TABLE, SAFE_DEFAULTS, NodePolicy, load_policy
from ._rng import node_seed, numpy_generator, torch_generator
from ._sketch import PUBLIC_GRID, SKETCH_SIZE, dp_sketch, encoder_problem, snap_edges

__all__ = [
    "Approval",
    "ApprovalRegister",
    "ApproveResult",
    "ModelRegister",
    "NodePolicy",
    "POLICY_TABLE",
    "PUBLIC_GRID",
    "REASON_GRAMMAR",
    "SAFE_DEFAULTS",
    "SKETCH_SIZE",
    "approval_payload",
    "approve_lines",
    "check_request",
    "dp_sketch",
    "encoder_hash",
    "encoder_problem",
    "error_guard_mod",
    "field_problem",
    "load_policy",
    "models_shaped_by",
    "register_approvals",
    "node_budget",
    "node_seed",
    "numpy_generator",
    "safe_reason",
    "snap_edges",
    "torch_generator",
    "weights_hash",
]
