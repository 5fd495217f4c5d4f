"""Tests for ConsentedStrategy's per-round bookkeeping."""

from __future__ import annotations

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

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
