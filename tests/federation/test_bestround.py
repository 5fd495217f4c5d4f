"""The kept round: the last one, unless an earlier round is better beyond the nodes' noise.

The statistical tests run the node's real metric release (``noisy_metrics``) on
hold-outs the size of the demo's (130-660 merchants, a handful of defaults) and of
a large bench, with fixed seeds; each also runs the old rule (highest
example-weighted AUC) on the same releases, which shows the check can fail.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import Array, ArrayRecord
from scipy.stats import norm

from federation.apps._handling import noisy_metrics
from federation.bestround import ALPHA, BestRound, margin_z, pooled_auc

SIGMA = 4.0  # the policy's eval-noise-multiplier


def _rec(v: float) -> ArrayRecord:
    return ArrayRecord({"0": Array(np.array([v]))})


def _keeper(rounds: int) -> BestRound:
    keeper = BestRound()
    for r in range(1, rounds + 1):
        keeper.capture(r, _rec(float(r)))
    return keeper


def _node(n: int, defaults: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and a fixed score with a true AUC around 0.7."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n)
    y[rng.choice(n, size=defaults, replace=False)] = 1.0
    return y, 1 / (1 + np.exp(-(1.0 * y + rng.normal(size=n))))


def _old_rule(rounds: dict[int, dict[str, dict[str, dict[str, float]]]]) -> int:
    def weighted(per_node: dict[str, dict[str, float]]) -> float:
        pairs = [(m["auc"], m["num-examples"]) for m in per_node.values()]
        return sum(a * w for a, w in pairs) / sum(w for _, w in pairs)

    return max(rounds, key=lambda r: weighted(rounds[r]["evaluate"]))


def _trials(
    nodes: list[tuple[np.ndarray, np.ndarray]],
    per_round: dict[int, list[np.ndarray]],
    trials: int,
) -> tuple[list[int], list[int]]:
    """Kept round by the new and the old rule, over ``trials`` seeded releases."""
    new, old = [], []
    for t in range(trials):
        rng = np.random.default_rng(1000 + t)
        rounds = {
            r: {"evaluate": {f"isv{i}": noisy_metrics(y, p, SIGMA, rng)
                             for i, ((y, _), p) in enumerate(zip(nodes, preds, strict=True))}}
            for r, preds in per_round.items()
        }
        new.append(_keeper(len(rounds)).select(rounds, _rec(-1.0))[1])
        old.append(_old_rule(rounds))
    return new, old


def test_noise_only_differences_on_demo_sized_holdouts_never_leave_the_last_round() -> None:
    """The same model evaluated three times on the demo's hold-outs: round 3 is always kept.

    On 130-660 merchants with 4-25 defaults the AUC noise std is 0.3-2.0, and the
    old rule followed it (it kept an earlier round in most trials).
    """
    nodes = [_node(130, 4, 1), _node(300, 10, 2), _node(660, 25, 3)]
    same = [p for _, p in nodes]
    new, old = _trials(nodes, {1: same, 2: same, 3: same}, trials=300)
    assert new == [3] * 300
    assert sum(r != 3 for r in old) > 100  # the old rule: a coin with three sides


def test_noise_only_differences_on_large_holdouts_rarely_switch() -> None:
    """Precise nodes (hundreds of defaults): a noise-only switch stays below α."""
    nodes = [_node(6000, 400, 4), _node(9000, 600, 5)]
    same = [p for _, p in nodes]
    new, old = _trials(nodes, {1: same, 2: same, 3: same}, trials=200)
    assert sum(r != 3 for r in new) <= ALPHA * 200
    assert sum(r != 3 for r in old) > 60


def test_a_real_overshoot_with_precise_metrics_still_switches() -> None:
    """Round 3 lost 0.06 of AUC on large hold-outs: round 2 is kept in every trial."""
    nodes = [_node(6000, 400, 6), _node(9000, 600, 7)]
    rng = np.random.default_rng(8)
    blurred = [p + rng.normal(0, 0.25, size=p.size) for _, p in nodes]  # a worse model
    good = [p for _, p in nodes]
    new, _ = _trials(nodes, {1: blurred, 2: good, 3: blurred}, trials=50)
    assert new == [2] * 50


def test_the_released_auc_std_bounds_the_noise_actually_added() -> None:
    """``auc-std`` >= 2σ / n_min with probability Φ(2) (97.7 %), from noisy counts only."""
    rng = np.random.default_rng(9)
    y, p = _node(2000, 150, 10)
    true_std = 2 * SIGMA / 150
    bounds = np.array([noisy_metrics(y, p, SIGMA, rng)["auc-std"] for _ in range(2000)])
    covered = float(np.mean(bounds >= true_std))
    assert covered >= norm.cdf(2.0) - 0.015
    assert np.median(bounds) < 1.3 * true_std  # a bound, not a refusal to say anything


def test_kept_round_rules_on_given_metrics() -> None:
    """Precise overshoot switches; a node without ``auc-std`` is left out; fallback."""
    keeper = _keeper(3)
    rounds = {
        1: {"evaluate": {"a": {"auc": 0.60, "auc-std": 0.01}}},
        2: {"evaluate": {"a": {"auc": 0.80, "auc-std": 0.01},
                         "b": {"auc": 0.70, "auc-std": 0.02}}},
        3: {"evaluate": {"a": {"auc": 0.70, "auc-std": 0.01},
                         "b": {"auc": 0.60, "auc-std": 0.02}}},
    }
    arrays, best, score = keeper.select(rounds, _rec(-1.0))
    assert best == 2 and score == pooled_auc(rounds[2]["evaluate"])[0]
    assert score == (0.80 / 0.01**2 + 0.70 / 0.02**2) / (1 / 0.01**2 + 1 / 0.02**2)
    assert arrays["0"].numpy().tolist() == [2.0]
    # Within the margin (z · sqrt(s2² + s3²)): the last round stays.
    close = {r: {"evaluate": {"a": {"auc": a, "auc-std": 0.05}}}
             for r, a in ((1, 0.70), (2, 0.70 + 0.9 * margin_z(2) * 0.05 * math.sqrt(2)),
                          (3, 0.70))}
    assert keeper.select(close, _rec(-1.0))[1] == 3
    # An AUC without its noise bound cannot be weighed: it does not move the choice.
    unweighable = {1: {"evaluate": {"a": {"auc": 0.99}}},
                   3: {"evaluate": {"a": {"auc": 0.50, "auc-std": 0.01}}}}
    assert keeper.select(unweighable, _rec(-1.0))[1] == 3
    fallback, none, _ = BestRound().select({1: {"evaluate": {}}}, _rec(-1.0))
    assert none is None and fallback["0"].numpy().tolist() == [-1.0]
    fallback, none, _ = keeper.select({1: {"evaluate": {"a": {"auc": 0.9}}}}, _rec(-1.0))
    assert none is None and fallback["0"].numpy().tolist() == [-1.0]
