"""The node's SecAgg+ mods: the policy check before setup and the legacy-records bridge."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.client.mod import secaggplus_mod
from flwr.common import (
    Code,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from ..node import NodePolicy
from ._keys import (
    ARRAYS_KEY,
    ENCODER_KEY,
    ERR,
    JOB_KEY,
    KEY_RECEIPT,
    METRICS_KEY,
    NUM_EXAMPLES,
    RECEIPT_KEY,
)
from ._request import secagg_scope
from ._secagg_masks import install as _install_full_seed_masks
from ._secagg_ranges import secagg_setup_problem

# Masks from the whole shared secret on this side too (Flower's own folds it to 32 bits).
_install_full_seed_masks()

_ENCODER_CONFIG = "fedgate-encoder"  # npz bytes of the encoder inside a legacy config
_RECEIPT_METRIC = "fedgate-receipt"  # the receipt token inside legacy FitRes/EvaluateRes metrics

CallNext = Callable[[Message, Context], Message]


# -- node side ------------------------------------------------------------------------------
_POLICY_RECORD = "fedgate.secagg-policy"
"""Node-local Context state: the SecAgg+ bound of the node's policy, noted by the manifest mod."""
_MAX_CLIP = "max-clipping-range"


def remember_policy(ctx: Context, policy: NodePolicy) -> None:
    """Note the node's SecAgg+ bound in its own Context state (the server cannot write it).

    The manifest mod calls this on every message it resolves the node for (the
    identification handshake first), so :func:`secagg_mod` knows the bound even
    where the Context alone does not name the node (simulation, whose node
    settings reach the ClientApp as run-config defaults of the manifest mod).
    """
    ctx.state.config_records[_POLICY_RECORD] = ConfigRecord(
        {_MAX_CLIP: float(policy.secagg_max_clipping_range)}
    )


def _max_clipping_range(ctx: Context) -> float | None:
    """The node policy's bound: from the node's own config, else the noted one, else None."""
    from .._errors import FederationError
    from ._node import NodeConfig

    try:
        node = NodeConfig.from_context(ctx.node_config, ctx.run_config)
        return float(node.node_policy().secagg_max_clipping_range)
    except (ValueError, OSError, KeyError, FederationError):
        rec = ctx.state.config_records.get(_POLICY_RECORD)
        return float(rec[_MAX_CLIP]) if rec is not None else None  # type: ignore[arg-type]


class _InnerError(Exception):
    """An error reply from below the SecAgg+ mod, carried past Flower's mod unchanged."""

    def __init__(self, reply: Message) -> None:
        super().__init__(reply.error.reason)
        self.reply = reply


def secagg_mod(msg: Message, ctx: Context, call_next: CallNext) -> Message:
    """Flower's ``secaggplus_mod`` for SecAgg+ protocol messages; everything else passes.

    A setup outside the node's policy (:func:`secagg_setup_problem`) is refused
    before any key is made: ``POLICY_REFUSED: <rule> clipping-range=<x>``; so is
    one where the node cannot tell its policy (``SECAGG_NO_POLICY``, fail closed).
    """
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is None:
        return call_next(msg, ctx)
    if configs.get(Key.STAGE) == Stage.SETUP:
        bound = _max_clipping_range(ctx)
        rule = "SECAGG_NO_POLICY" if bound is None else secagg_setup_problem(configs, bound)
        if rule is not None:
            clip = float(configs[Key.CLIPPING_RANGE])  # type: ignore[arg-type]
            reason = f"POLICY_REFUSED: {rule} clipping-range={clip:.3f}"
            return Message(Error(code=ERR.POLICY_REFUSED, reason=reason), reply_to=msg)
    def inner(m: Message, c: Context) -> Message:
        reply = call_next(m, c)
        if reply.has_error():  # Flower's mod would read its content and raise
            raise _InnerError(reply)
        return reply

    with secagg_scope():
        try:
            return secaggplus_mod(msg, ctx, inner)
        except _InnerError as exc:
            # The node's own error (a signed refusal, a code) leaves as it is, not as a
            # NODE_FAILURE; no masked vector leaves, and the next round starts at setup.
            return Message(exc.reply.error, reply_to=msg)


def _npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def _un_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _to_fedgate(params: Parameters, config: Mapping[str, Scalar]) -> RecordDict:
    weights = parameters_to_ndarrays(params)
    encoder = config.get(_ENCODER_CONFIG)
    if not isinstance(encoder, bytes):
        raise ValueError("legacy instruction lacks the fedgate encoder")
    return RecordDict(
        {
            ARRAYS_KEY: ArrayRecord(
                {str(i): Array(np.ascontiguousarray(w)) for i, w in enumerate(weights)}
            ),
            JOB_KEY: ConfigRecord({k: v for k, v in config.items() if k != _ENCODER_CONFIG}),
            ENCODER_KEY: ArrayRecord({k: Array(v) for k, v in _un_npz(encoder).items()}),
        }
    )


def _metrics(content: RecordDict) -> dict[str, Scalar]:
    metrics: dict[str, Scalar] = {}
    rec = content.metric_records.get(METRICS_KEY)
    for k, v in (rec or MetricRecord()).items():
        metrics[k] = float(v)  # type: ignore[arg-type]
    receipt = content.config_records.get(RECEIPT_KEY)
    if receipt is not None:
        metrics[_RECEIPT_METRIC] = receipt[KEY_RECEIPT]  # type: ignore[assignment]
    return metrics


def legacy_bridge_mod(msg: Message, ctx: Context, call_next: CallNext) -> Message:
    """Translate legacy ``fitins``/``evaluateins`` messages to fedgate's records and back."""
    content = msg.content
    if "fitins.config" in content.config_records:
        ins: FitIns | EvaluateIns = compat.recorddict_to_fitins(content, keep_input=True)
    elif "evaluateins.config" in content.config_records:
        ins = compat.recorddict_to_evaluateins(content, keep_input=True)
    else:
        return call_next(msg, ctx)
    inner = Message(content=_to_fedgate(ins.parameters, ins.config), metadata=msg.metadata)
    reply = call_next(inner, ctx)
    if reply.has_error():
        return Message(reply.error, reply_to=msg)
    out = reply.content
    metrics = _metrics(out)
    n = int(metrics.get(NUM_EXAMPLES, 0))  # type: ignore[arg-type]
    ok = Status(code=Code.OK, message="")
    if isinstance(ins, FitIns):
        weights = out.array_records[ARRAYS_KEY].to_numpy_ndarrays()
        res = FitRes(
            status=ok, parameters=ndarrays_to_parameters(weights), num_examples=n, metrics=metrics
        )
        return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)
    loss = float(metrics.get("brier", 0.0))  # type: ignore[arg-type]
    eres = EvaluateRes(status=ok, loss=loss, num_examples=n, metrics=metrics)
    return Message(compat.evaluateres_to_recorddict(eres), reply_to=msg)
