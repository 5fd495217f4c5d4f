"""SecAgg+ for fedgate's jobs, wrapped so the rest of the apps do not care.

Flower's ``SecAggPlusWorkflow`` runs only inside the legacy ``DefaultWorkflow``
(``FitIns``/``FitRes`` records, a legacy ``Strategy``). This module bridges:

* server: :func:`run_secagg_rounds` drives ``DefaultWorkflow(SecAggPlusWorkflow)``
  with :class:`_ConsentedLegacyStrategy`, which gives each node its own cohort
  manifest per round (as :class:`ConsentedStrategy` does) and checks every
  receipt; it returns the final weights and the round logs;
* node: :func:`secagg_mod` applies Flower's ``secaggplus_mod`` only to messages
  of the SecAgg+ protocol, and :func:`legacy_bridge_mod` turns legacy
  ``fitins``/``evaluateins`` records into fedgate's records (and the reply
  back), so the manifest mod, egress guard, receipt mod and handlers see the
  same messages with or without SecAgg+.

With SecAgg+ the server only ever sees the sum of the masked updates; a reply
whose receipt does not verify cannot be taken out of that sum, so it fails the
job instead (recorded as a round failure).

Sizing. Each node multiplies its weights by ``num_examples / max_weight``, clips
them to ``±clipping_range`` and quantises them to ``quantization_range`` levels;
the server sums modulo ``modulus_range``. Flower's defaults (``max_weight`` 1000,
±8, 2^22 levels) clip every weight of a node with 30,000 rows to ±8/30. Here
``max_weight`` is the largest training manifest of the round (a node uses at most
one row per manifest entry, so no node's factor exceeds 1 and the clip applies to
the weights themselves), the quantisation is as fine as the modulus allows
without the sum wrapping (:func:`secagg_ranges`), and the clipping range is a
bound the node's policy caps (``secagg-max-clipping-range``): :func:`secagg_mod`
refuses a setup whose range is wider or whose sum could wrap.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp import Grid

from ..node import NodePolicy
from ..refusals import RefusalCheck, parse_refusal
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
from ._strategy import ManifestFn, RoundConfigs, RoundLog

__all__ = [
    "secagg_mod",
    "legacy_bridge_mod",
    "run_secagg_rounds",
    "secagg_ranges",
    "secagg_setup_problem",
    "remember_policy",
    "SecAggRanges",
    "TokenCheck",
    "DEFAULT_CLIPPING_RANGE",
]

DEFAULT_CLIPPING_RANGE = 8.0
"""Bound on each weight a node clips to before quantising (Flower's default; see sizing)."""
MODULUS_RANGE = 2**32
"""The largest modulus Flower's SecAgg+ takes (its masks are drawn below it)."""
_MAX_QUANTIZATION = 2**30  # Flower's stochastic rounding casts to int32

_ENCODER_CONFIG = "fedgate-encoder"  # npz bytes of the encoder inside a legacy config
_RECEIPT_METRIC = "fedgate-receipt"  # the receipt token inside legacy FitRes/EvaluateRes metrics

# (token, isv, round, action) -> None if good, else a reason
TokenCheck = Callable[[bytes | None, str, int, str], str | None]

CallNext = Callable[[Message, Context], Message]


@dataclass(frozen=True, slots=True, kw_only=True)
class SecAggRanges:
    """SecAgg+'s quantisation: clip to ``±clipping_range``, ``quantization_range`` levels, mod."""

    clipping_range: float
    quantization_range: int
    modulus_range: int


def secagg_ranges(
    n_nodes: int,
    *,
    clipping_range: float = DEFAULT_CLIPPING_RANGE,
    modulus_range: int = MODULUS_RANGE,
) -> SecAggRanges:
    """Ranges for ``n_nodes``: the finest quantisation whose sum cannot wrap the modulus.

    Each node adds at most ``quantization_range`` per coordinate (its weight factor,
    at most 1, likewise), so ``n_nodes · quantization_range < modulus_range`` keeps
    the unmasked sum exact; the levels are the largest power of two that does.

    Parameters
    ----------
    n_nodes : int
        Nodes that train in a round (>= 2).
    clipping_range : float, default DEFAULT_CLIPPING_RANGE
    modulus_range : int, default MODULUS_RANGE

    Raises
    ------
    ValueError
        ``n_nodes`` < 2, a non-positive clipping range, or a modulus too small.
    """
    if n_nodes < 2:
        raise ValueError("n_nodes must be >= 2 for SecAgg+")
    if not clipping_range > 0:
        raise ValueError("clipping_range must be > 0")
    levels = modulus_range // (n_nodes + 1)
    if levels < 2:
        raise ValueError("modulus_range is too small for n_nodes")
    q = min(1 << (levels.bit_length() - 1), _MAX_QUANTIZATION)
    return SecAggRanges(
        clipping_range=float(clipping_range), quantization_range=q, modulus_range=modulus_range
    )


def secagg_setup_problem(configs: Mapping[str, Any], max_clipping_range: float) -> str | None:
    """Why the node refuses a SecAgg+ setup (a rule name), or ``None`` to take part.

    The node clips to the range it is given; its policy caps that range
    (``secagg-max-clipping-range``, passed as ``max_clipping_range``), and the
    quantised sum of every sampled node must fit the modulus, else the unmasked
    aggregate would wrap.
    """
    if configs.get(Key.STAGE) != Stage.SETUP:
        return None
    clip = float(configs[Key.CLIPPING_RANGE])  # type: ignore[arg-type]
    levels = int(configs[Key.TARGET_RANGE])  # type: ignore[call-overload]
    modulus = int(configs[Key.MOD_RANGE])  # type: ignore[call-overload]
    nodes = int(configs[Key.SAMPLE_NUMBER])  # type: ignore[call-overload]
    if not 0 < clip <= max_clipping_range:
        return "SECAGG_CLIPPING_RANGE"
    if float(configs[Key.MAX_WEIGHT]) <= 0 or nodes * levels >= modulus:  # type: ignore[arg-type]
        return "SECAGG_RANGES"
    return None


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


# -- server side ----------------------------------------------------------------------------
class _ConsentedLegacyStrategy(LegacyFedAvg):
    """Legacy FedAvg whose instructions carry per-node manifests and whose replies need receipts."""

    def __init__(
        self,
        *,
        initial: Sequence[np.ndarray],
        nodes: dict[int, str],
        manifest_for: ManifestFn,
        check_token: TokenCheck,
        encoder: Mapping[str, np.ndarray],
        on_round: Callable[[RoundLog], None] | None,
        evaluate_fn: Callable[[int, ArrayRecord], Any] | None = None,
    ) -> None:
        n = len(nodes)
        super().__init__(
            min_fit_clients=n,
            min_evaluate_clients=n,
            min_available_clients=n,
            initial_parameters=ndarrays_to_parameters(list(initial)),
        )
        self.nodes = dict(nodes)
        self.manifest_for = manifest_for
        self.check_token = check_token
        self.encoder = _npz(encoder)
        self.on_round = on_round
        self.capture = evaluate_fn  # not `evaluate_fn`: legacy FedAvg calls that one itself
        self.rounds: dict[int, RoundLog] = {}
        self._configs: RoundConfigs[dict[str, Scalar]] = RoundConfigs()
        self.masked_rounds: list[int] = []
        """Rounds whose fit results all carried one shared aggregate (SecAgg+'s unmasked sum)."""
        self.check_refusal: RefusalCheck | None = None
        """Verifies and records a node's signed refusal (see :class:`ConsentedStrategy`)."""
        self.on_sized: Callable[[int], None] | None = None
        """Called in ``configure_fit`` with the round's largest manifest (``max_weight``)."""

    @property
    def held_configs(self) -> list[tuple[int, str]]:
        """``(round, isv)`` of the configs still held: at most the current round's."""
        return self._configs.held()

    def _log(self, rnd: int) -> RoundLog:
        return self.rounds.setdefault(rnd, RoundLog(round=rnd))

    def _config(self, rnd: int, isv: str) -> dict[str, Scalar]:
        if (rnd, isv) not in self._configs:
            cfg, root, count = self.manifest_for(rnd, isv)
            self._log(rnd).manifest_roots[isv] = root
            self._log(rnd).merchants[isv] = count
            self._configs[(rnd, isv)] = {**dict(cfg.items()), _ENCODER_CONFIG: self.encoder}  # type: ignore[dict-item]
        return self._configs[(rnd, isv)]

    def _instructions(
        self, rnd: int, client_manager: ClientManager, kind: type
    ) -> list[tuple[ClientProxy, Any]]:
        client_manager.wait_for(len(self.nodes))
        out = []
        for proxy in client_manager.all().values():
            isv = self.nodes.get(proxy.node_id)
            if isv is not None:  # never instruct a node that did not prove its identity
                out.append((proxy, kind(self._params, self._config(rnd, isv))))
        return out

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """One FitIns per identified node, each with that node's manifest."""
        self._params = parameters
        self._configs.release(server_round - 1)  # a round without evaluation never reaches it
        instructions = self._instructions(server_round, client_manager, FitIns)
        if self.on_sized is not None:
            # A node trains on at most one row per manifest entry, so no node's weight
            # factor (num_examples / max_weight) exceeds 1 with this max_weight.
            self.on_sized(max(self._log(server_round).merchants.values(), default=1))
        return instructions

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """One EvaluateIns per identified node, reusing the round's manifests.

        ``parameters`` is the round's unmasked global model (SecAgg+ masks only the
        fit updates); ``evaluate_fn`` sees exactly the weights the nodes validate, so
        the best round can be kept as without SecAgg+.
        """
        self._params = parameters
        if self.capture is not None and server_round >= 1:
            weights = parameters_to_ndarrays(parameters)
            self.capture(server_round, ArrayRecord(
                {str(i): Array(np.ascontiguousarray(w)) for i, w in enumerate(weights)}))
        return self._instructions(server_round, client_manager, EvaluateIns)

    def _screen(
        self, rnd: int, action: str, results: list[tuple[ClientProxy, Any]], failures: list[Any]
    ) -> dict[str, dict[str, float]]:
        rlog = self._log(rnd)
        for f in failures:
            err = f.args[0] if isinstance(f, Exception) and f.args else None
            if action == "evaluate" and getattr(err, "code", None) == ERR.NO_DATA:
                rlog.skipped.append(f"{action}: {err.reason}")  # type: ignore[union-attr]
                continue
            note = f"{action}: {f!r}"
            reason = getattr(err, "reason", None)
            if self.check_refusal is not None and isinstance(reason, str):
                # A failure does not say which node sent it: try each node of the round.
                for isv, root in rlog.manifest_roots.items():
                    verdict = self.check_refusal(reason, isv, rnd, action, root)
                    if verdict and not verdict.startswith("REFUSAL_FORGED"):
                        note += f" ({isv}: {verdict})"
                        break
                else:
                    note += " (REFUSAL_FORGED)" if parse_refusal(reason) else ""
            rlog.failures.append(note)
        per_node: dict[str, dict[str, float]] = {}
        for proxy, res in results:
            isv = self.nodes.get(proxy.node_id, f"node-{proxy.node_id}")
            token = res.metrics.get(_RECEIPT_METRIC)
            problem = self.check_token(
                token if isinstance(token, bytes) else None, isv, rnd, action
            )
            if problem is not None:
                rlog.failures.append(f"{action}@{isv}: RECEIPT_INVALID: {problem}")
                continue
            per_node[isv] = {k: float(v) for k, v in res.metrics.items() if k != _RECEIPT_METRIC}  # type: ignore[arg-type]
        return per_node

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Receipts checked; the parameters are SecAgg+'s unmasked aggregate already.

        SecAgg+ hands every result the same ``Parameters`` object (the unmasked sum);
        a round where it did so is noted in :attr:`masked_rounds`, the evidence the
        lineage records that no individual update reached the server.
        """
        self._log(server_round).train = self._screen(server_round, "train", results, failures)
        if results and len({id(res.parameters) for _, res in results}) == 1:
            self.masked_rounds.append(server_round)
        params, _ = super().aggregate_fit(server_round, results, failures)
        return params, {}

    def aggregate_evaluate(
        self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]], failures: list[Any]
    ) -> tuple[float | None, dict[str, Scalar]]:
        """Per-node evaluation metrics; calls ``on_round``."""
        rlog = self._log(server_round)
        rlog.evaluate = self._screen(server_round, "evaluate", results, failures)
        loss, _ = super().aggregate_evaluate(server_round, results, failures)
        self._configs.release(server_round)
        if self.on_round is not None:
            self.on_round(rlog)
        return loss, {}


def run_secagg_rounds(
    grid: Grid,
    context: Context,
    *,
    rounds: int,
    initial: Sequence[np.ndarray],
    nodes: dict[int, str],
    manifest_for: ManifestFn,
    check_token: TokenCheck,
    encoder: Mapping[str, np.ndarray],
    on_round: Callable[[RoundLog], None] | None = None,
    num_shares: float = 1.0,
    reconstruction_threshold: float = 0.67,
    timeout: float | None = None,
    clipping_range: float = DEFAULT_CLIPPING_RANGE,
    check_refusal: RefusalCheck | None = None,
    evaluate_fn: Callable[[int, ArrayRecord], Any] | None = None,
) -> tuple[list[np.ndarray], dict[int, RoundLog], list[int]]:
    """Run ``rounds`` of SecAgg+ FedAvg over the identified nodes.

    Parameters
    ----------
    grid, context
        The ServerApp's grid and context.
    rounds : int
    initial : Sequence[np.ndarray]
        Initial model weights.
    nodes : dict[int, str]
        Flower node id → ISV id (from the identification handshake).
    manifest_for : ManifestFn
        As for :class:`ConsentedStrategy`.
    check_token : TokenCheck
        Verifies and ledgers a receipt token.
    encoder : Mapping[str, np.ndarray]
        The bin encoder's arrays.
    on_round : Callable[[RoundLog], None] | None, default None
    num_shares : float, default 1.0
        Fraction of nodes each secret is shared with (Flower's ``num_shares``).
    reconstruction_threshold : float, default 0.67
        Fraction of shares needed to unmask.
    timeout : float | None, default None
    clipping_range : float, default DEFAULT_CLIPPING_RANGE
        The bound each node clips its weights to (a node refuses one above its
        policy's ``secagg-max-clipping-range``); the quantisation levels come from
        :func:`secagg_ranges` and ``max_weight`` from each round's largest manifest.
    check_refusal : RefusalCheck | None, default None
        Verifies and records a node's signed refusal in a failure.
    evaluate_fn : Callable[[int, ArrayRecord], Any] | None, default None
        Called with each round's global weights as the nodes receive them for
        validation (:meth:`federation.bestround.BestRound.capture`).

    Returns
    -------
    tuple[list[np.ndarray], dict[int, RoundLog], list[int]]
        Final weights, the per-round logs, and the rounds whose aggregate came from
        SecAgg+'s unmasking (every result carried one shared sum, no single update).
    """
    strategy = _ConsentedLegacyStrategy(
        initial=initial,
        nodes=nodes,
        manifest_for=manifest_for,
        check_token=check_token,
        encoder=encoder,
        on_round=on_round,
        evaluate_fn=evaluate_fn,
    )
    legacy = LegacyContext(
        context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy
    )
    ranges = secagg_ranges(len(nodes), clipping_range=clipping_range)
    fit_workflow = SecAggPlusWorkflow(
        num_shares=num_shares,
        reconstruction_threshold=reconstruction_threshold,
        timeout=timeout,
        clipping_range=ranges.clipping_range,
        quantization_range=ranges.quantization_range,
        modulus_range=ranges.modulus_range,
    )

    def sized(max_rows: int) -> None:
        fit_workflow.max_weight = float(max(max_rows, 1))

    strategy.on_sized = sized
    strategy.check_refusal = check_refusal
    workflow = DefaultWorkflow(fit_workflow=fit_workflow)
    workflow(grid, legacy)
    final = legacy.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()
    return final, strategy.rounds, list(strategy.masked_rounds)
