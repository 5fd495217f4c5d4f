"""Tests for the per-round bookkeeping of ConsentedStrategy and its SecAgg+ twin."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, RecordDict
from flwr.common import Code, FitRes, Parameters, Status, ndarrays_to_parameters
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from federation.apps._keys import ERR
from federation.apps._secagg import _ConsentedLegacyStrategy
from federation.apps._strategy import ConsentedStrategy

NODES = {11: "isv0", 12: "isv1"}


@pytest.fixture(autouse=True)
def _server_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run/task/node identity Flower's ServerApp runtime sets before messages are built."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)


def _strategy(calls: list[tuple[int, str]]) -> ConsentedStrategy:
    """A strategy over two identified nodes whose manifest builder logs its calls."""

    def manifest_for(server_round: int, isv: str) -> tuple[ConfigRecord, str, int]:
        calls.append((server_round, isv))
        return ConfigRecord({"manifest": "x" * 290}), f"root-{server_round}-{isv}", 1

    return ConsentedStrategy(
        FedAvg(),
        nodes=NODES,
        manifest_for=manifest_for,
        check_receipt=lambda *_: None,
        encoder=ArrayRecord(),
    )


def _send(strategy: ConsentedStrategy, server_round: int, message_type: str) -> list[Message]:
    """Decorate one message per node, as configure_train/configure_evaluate do."""
    msgs = [
        Message(content=RecordDict(), dst_node_id=node, message_type=message_type) for node in NODES
    ]
    return strategy._decorate(server_round, msgs)


def test_only_the_current_rounds_configs_are_held() -> None:
    """Train and evaluate share a round's configs; they are dropped once the round is done."""
    calls: list[tuple[int, str]] = []
    strategy = _strategy(calls)

    _send(strategy, 1, "train")
    _send(strategy, 1, "evaluate")
    held_mid_round = strategy.held_configs
    strategy.aggregate_evaluate(1, [])
    held_after_round = strategy.held_configs
    _send(strategy, 2, "train")  # round 2 has no evaluation
    _send(strategy, 3, "train")

    assert held_mid_round == [(1, "isv0"), (1, "isv1")]
    assert held_after_round == []
    assert strategy.held_configs == [(3, "isv0"), (3, "isv1")]
    assert calls == [(r, isv) for r in (1, 2, 3) for isv in ("isv0", "isv1")]
    assert strategy.as_dict()[2]["manifest_roots"] == {"isv0": "root-2-isv0", "isv1": "root-2-isv1"}


def _error_replies(sent: list[Message], code: int) -> list[Message]:
    """Each node answers its message with an error reply carrying ``code``."""
    return [Message(Error(code=code, reason="held-out merchants lack both classes"), reply_to=m)
            for m in sent]


def test_evaluation_without_data_is_skipped_not_failed() -> None:
    """NO_DATA from evaluate is noted as skipped; the same code from train is a failure."""
    strategy = _strategy([])
    evaluate = _send(strategy, 1, "evaluate")
    train = _send(strategy, 2, "train")

    strategy.aggregate_evaluate(1, _error_replies(evaluate, ERR.NO_DATA))
    strategy.aggregate_train(2, _error_replies(train, ERR.NO_DATA))
    rounds = strategy.as_dict()

    assert rounds[1]["failures"] == [] and len(rounds[1]["skipped"]) == 2
    assert all(s.startswith("evaluate@isv") for s in rounds[1]["skipped"])
    assert len(rounds[2]["failures"]) == 2 and rounds[2]["skipped"] == []


class _Proxy(ClientProxy):
    """A registered legacy client that is never actually called."""

    def get_properties(self, ins: Any, timeout: float | None, group_id: int | None) -> Any:
        """Never called: these tests drive the strategy directly."""
        raise NotImplementedError

    def get_parameters(self, ins: Any, timeout: float | None, group_id: int | None) -> Any:
        """Never called: these tests drive the strategy directly."""
        raise NotImplementedError

    def fit(self, ins: Any, timeout: float | None, group_id: int | None) -> Any:
        """Never called: these tests drive the strategy directly."""
        raise NotImplementedError

    def evaluate(self, ins: Any, timeout: float | None, group_id: int | None) -> Any:
        """Never called: these tests drive the strategy directly."""
        raise NotImplementedError

    def reconnect(self, ins: Any, timeout: float | None, group_id: int | None) -> Any:
        """Never called: these tests drive the strategy directly."""
        raise NotImplementedError


def _legacy(
    calls: list[tuple[int, str]], evaluate_fn: Any = None
) -> tuple[_ConsentedLegacyStrategy, SimpleClientManager]:
    """The SecAgg+ strategy over two registered, identified nodes."""

    def manifest_for(server_round: int, isv: str) -> tuple[ConfigRecord, str, int]:
        calls.append((server_round, isv))
        return ConfigRecord({"manifest": "x" * 290}), f"root-{server_round}-{isv}", 1

    manager = SimpleClientManager()
    for node in NODES:
        proxy = _Proxy(str(node))
        proxy.node_id = node
        manager.register(proxy)
    strategy = _ConsentedLegacyStrategy(
        initial=[np.zeros(2, dtype=np.float32)],
        nodes=NODES,
        manifest_for=manifest_for,
        check_token=lambda *_: None,
        encoder={"e": np.zeros(1)},
        on_round=None,
        evaluate_fn=evaluate_fn,
    )
    return strategy, manager


def test_secagg_strategy_holds_only_the_current_rounds_configs() -> None:
    """Under SecAgg+ too, a round's manifests are dropped once the round is done."""
    calls: list[tuple[int, str]] = []
    strategy, manager = _legacy(calls)
    params = ndarrays_to_parameters([np.zeros(2, dtype=np.float32)])

    strategy.configure_fit(1, params, manager)
    strategy.configure_evaluate(1, params, manager)
    held_mid_round = strategy.held_configs
    strategy.aggregate_evaluate(1, [], [])
    held_after_round = strategy.held_configs
    strategy.configure_fit(2, params, manager)  # round 2 has no evaluation
    strategy.configure_fit(3, params, manager)

    assert held_mid_round == [(1, "isv0"), (1, "isv1")]
    assert held_after_round == []
    assert strategy.held_configs == [(3, "isv0"), (3, "isv1")]
    assert calls == [(r, isv) for r in (1, 2, 3) for isv in ("isv0", "isv1")]


def test_secagg_strategy_notes_only_rounds_aggregated_from_one_masked_sum() -> None:
    """A round counts as masked only when every fit result carries SecAgg+'s one shared sum."""
    strategy, manager = _legacy([])
    proxies = list(manager.all().values())
    ok = Status(code=Code.OK, message="")
    shared = ndarrays_to_parameters([np.ones(2, dtype=np.float32)])

    def fit_res(params: Parameters) -> FitRes:
        return FitRes(status=ok, parameters=params, num_examples=10, metrics={})

    strategy.aggregate_fit(1, [(p, fit_res(shared)) for p in proxies], [])
    strategy.aggregate_fit(
        2,
        [(p, fit_res(ndarrays_to_parameters([np.ones(2, dtype=np.float32)]))) for p in proxies],
        [],
    )

    assert strategy.masked_rounds == [1]


def test_secagg_strategy_sizes_max_weight_from_the_rounds_largest_manifest() -> None:
    """``on_sized`` gets the largest manifest count, so no node's weight factor exceeds 1."""
    calls: list[tuple[int, str]] = []
    strategy, manager = _legacy(calls)
    counts = {"isv0": 30_000, "isv1": 1_200}
    inner = strategy.manifest_for

    def manifest_for(server_round: int, isv: str) -> tuple[ConfigRecord, str, int]:
        cfg, root, _ = inner(server_round, isv)
        return cfg, root, counts[isv]

    strategy.manifest_for = manifest_for
    sized: list[int] = []
    strategy.on_sized = sized.append

    strategy.configure_fit(1, ndarrays_to_parameters([np.zeros(2, dtype=np.float32)]), manager)

    assert sized == [30_000]


def test_a_refusal_in_an_error_reply_is_handed_to_the_refusal_check() -> None:
    """Each error reply goes to check_refusal with the node's manifest root; its note is kept."""
    seen: list[tuple[str, str, int, str, str]] = []

    def check_refusal(reason: str, isv: str, rnd: int, action: str, root: str) -> str | None:
        seen.append((reason, isv, rnd, action, root))
        return "REFUSAL_RECORDED ledger=7" if isv == "isv0" else None

    strategy = _strategy([])
    strategy.check_refusal = check_refusal
    train = _send(strategy, 1, "train")

    strategy.aggregate_train(1, _error_replies(train, ERR.POLICY_REFUSED))
    failures = strategy.as_dict()[1]["failures"]

    assert sorted(s[1:] for s in seen) == [(isv, 1, "train", f"root-1-{isv}")
                                           for isv in ("isv0", "isv1")]
    assert any(f.startswith("train@isv0") and f.endswith("(REFUSAL_RECORDED ledger=7)")
               for f in failures)
    assert any(f.startswith("train@isv1") and "REFUSAL" not in f for f in failures)


def test_secagg_jobs_keep_the_best_round_by_the_nodes_validation() -> None:
    """Under SecAgg+ the evaluated global model is unmasked: the best round is kept.

    Each round's weights reach ``evaluate_fn`` exactly as the nodes get them for
    validation; round 2, better than the last by far more than the nodes' noise, is
    selected with its own weights.
    """
    from flwr.common import EvaluateRes

    from federation.bestround import BestRound

    keeper = BestRound()
    strategy, manager = _legacy([], keeper.capture)
    proxies = list(manager.all().values())
    ok = Status(code=Code.OK, message="")
    aucs = {1: (0.60, 0.62), 2: (0.75, 0.71), 3: (0.66, 0.64)}
    for rnd, (a0, a1) in aucs.items():
        weights = [np.full(2, float(rnd), dtype=np.float32)]
        strategy.configure_fit(rnd, ndarrays_to_parameters(weights), manager)
        # The legacy workflow's centralised evaluation runs first; it must not call the hook.
        assert strategy.evaluate(rnd, ndarrays_to_parameters(weights)) is None
        instructions = strategy.configure_evaluate(rnd, ndarrays_to_parameters(weights), manager)
        assert len(instructions) == 2
        results = [
            (p, EvaluateRes(status=ok, loss=0.5, num_examples=50,
                            metrics={"auc": auc, "auc-std": 0.01, "num-examples": 50.0}))
            for p, auc in zip(proxies, (a0, a1), strict=True)
        ]
        strategy.aggregate_evaluate(rnd, results, [])
    rounds = {r: {"evaluate": lg.evaluate} for r, lg in strategy.rounds.items()}
    last = ArrayRecord([np.full(2, 3.0, dtype=np.float32)])
    arrays, best, auc = keeper.select(rounds, last)
    assert best == 2 and auc == pytest.approx(0.73)
    assert arrays.to_numpy_ndarrays()[0].tolist() == [2.0, 2.0]
