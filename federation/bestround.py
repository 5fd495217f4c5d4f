"""Keep the best training round: the global model with the best aggregated validation AUC.

Each round the nodes evaluate the new global model on their held-out merchants
(never trained on, see :class:`~federation.jobconfig.HoldoutRule`) and return
AUC with their example count. :class:`BestRound` captures every round's global
weights through Flower's ``evaluate_fn`` hook (called after each round with
the aggregated arrays) and :meth:`BestRound.select` keeps the round whose
example-weighted AUC is highest, so a late round that overshoots does not
become the saved model. Rounds without any evaluation fall back to the last.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from flwr.app import ArrayRecord, MetricRecord

__all__ = ["BestRound", "weighted_auc"]


def weighted_auc(per_node: Mapping[str, Mapping[str, float]]) -> float:
    """AUC averaged over nodes, weighted by their evaluation examples (NaN if none)."""
    pairs = [(float(m["auc"]), float(m.get("num-examples", 0.0)))
             for m in per_node.values() if "auc" in m]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else float("nan")


class BestRound:
    """Captures each round's global arrays and selects the best by validation AUC."""

    def __init__(self) -> None:
        self.arrays: dict[int, ArrayRecord] = {}

    def capture(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Flower's ``evaluate_fn``: remember round ``server_round``'s global arrays."""
        if server_round >= 1:
            self.arrays[server_round] = ArrayRecord(
                {k: v for k, v in arrays.items()}  # the record's arrays are not mutated later
            )
        return None

    def select(
        self, rounds: Mapping[int, Mapping[str, Any]], fallback: ArrayRecord
    ) -> tuple[ArrayRecord, int | None, float]:
        """The best round's arrays, its number and its weighted AUC.

        Parameters
        ----------
        rounds : Mapping[int, Mapping[str, Any]]
            Round logs with an ``evaluate`` mapping per node (``ConsentedStrategy.as_dict``).
        fallback : ArrayRecord
            Returned (with round ``None``) when no round was evaluated.
        """
        best: tuple[float, int] | None = None
        for r, log in sorted(rounds.items()):
            score = weighted_auc(log.get("evaluate", {}))
            if r in self.arrays and not math.isnan(score) and (best is None or score > best[0]):
                best = (score, r)
        if best is None:
            return fallback, None, float("nan")
        return self.arrays[best[1]], best[1], best[0]
