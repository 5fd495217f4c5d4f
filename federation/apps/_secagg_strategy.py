"""The legacy FedAvg strategy SecAgg+ runs under: per-node manifests, receipts checked."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg as LegacyFedAvg

from ..refusals import RefusalCheck, parse_refusal
from ._keys import ERR
from ._secagg_node import _ENCODER_CONFIG, _RECEIPT_METRIC, _npz
from ._strategy import ManifestFn, PrepareFn, RoundConfigs, RoundLog

# (token, isv, round, action) -> None if good, else a reason
TokenCheck = Callable[[bytes | None, str, int, str], str | None]


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
        prepare: PrepareFn | None = None,
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
        self.prepare = prepare
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
        proxies = list(client_manager.all().values())
        if self.prepare is not None:
            missing = [self.nodes[p.node_id] for p in proxies if p.node_id in self.nodes
                       and (rnd, self.nodes[p.node_id]) not in self._configs]  # fmt: skip
            if missing:
                self.prepare(rnd, missing)
        out = []
        for proxy in proxies:
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
