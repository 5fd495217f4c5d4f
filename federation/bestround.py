r"""Keep the best training round -- but only on evidence larger than the nodes' metric noise.

Each round the nodes evaluate the new global model on their held-out merchants
(never trained on, see :class:`~federation.jobconfig.HoldoutRule`) and release a
noisy AUC with ``auc-std``, an upper bound on the standard deviation of the noise
they added (``federation.apps._handling.noisy_metrics``: ``2σ / n_min`` with
``σ = 4`` is 1.6 on a hold-out with five defaults, so such a node's AUC is noise).
:class:`BestRound` captures every round's global weights through Flower's
``evaluate_fn`` hook, and :meth:`BestRound.select` pools each round's node AUCs by
inverse variance,

.. math::

    \hat a_r = \frac{\sum_i a_{ri} / s_{ri}^2}{\sum_i 1 / s_{ri}^2}, \qquad
    s_r = \Big(\sum_i 1 / s_{ri}^2\Big)^{-1/2},

and keeps the **last** round ``L`` unless an earlier round ``r`` beats it by more
than the noise of the difference, :math:`\hat a_r - \hat a_L > z\,\sqrt{s_r^2 +
s_L^2}` with :math:`z = \max(2, \Phi^{-1}(1 - \alpha / (R - 1)))`, ``α = 0.05``
over the ``R - 1`` earlier rounds (Bonferroni). If the nodes' noise were all there
is, the last round would be replaced with probability at most ``α``; a real
overshoot measured on large hold-outs still is. A node AUC without ``auc-std``
(its policy does not release it) cannot be weighed against its noise and is left
out. Only the noise is modelled: every round is evaluated on the same held-out
merchants, so their sampling error is common to the rounds compared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

from flwr.app import ArrayRecord, MetricRecord

__all__ = ["ALPHA", "BestRound", "margin_z", "pooled_auc"]

ALPHA = 0.05
"""Chance of leaving the last round when only the nodes' noise differs between rounds."""

_AUC, _STD = "auc", "auc-std"


def pooled_auc(per_node: Mapping[str, Mapping[str, float]]) -> tuple[float, float]:
    """Inverse-variance pooled AUC of one round and its noise std (NaN, inf if none)."""
    pairs = [
        (float(m[_AUC]), float(m[_STD]))
        for m in per_node.values()
        if _AUC in m and _STD in m and 0.0 < float(m[_STD]) < math.inf
    ]
    weight = sum(1.0 / s**2 for _, s in pairs)
    if not weight:
        return float("nan"), math.inf
    return sum(a / s**2 for a, s in pairs) / weight, 1.0 / math.sqrt(weight)


def margin_z(earlier_rounds: int, alpha: float = ALPHA) -> float:
    """The z of the switching margin: Bonferroni over the earlier rounds, at least 2."""
    return max(2.0, NormalDist().inv_cdf(1.0 - alpha / max(1, earlier_rounds)))


class BestRound:
    """Captures each round's global arrays; keeps the last unless an earlier is clearly better."""

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
        """The kept round's arrays, its number and its pooled AUC (module docstring).

        Parameters
        ----------
        rounds : Mapping[int, Mapping[str, Any]]
            Round logs with an ``evaluate`` mapping per node (``ConsentedStrategy.as_dict``).
        fallback : ArrayRecord
            Returned (with round ``None``) when no round has a weighable evaluation.
        """
        pooled = {
            r: pooled_auc(log.get("evaluate", {}))
            for r, log in rounds.items()
            if r in self.arrays
        }
        if all(math.isnan(a) for a, _ in pooled.values()):
            return fallback, None, float("nan")  # no round evaluated: the final model
        last = max(self.arrays)
        last_auc, last_std = pooled.get(last, (float("nan"), math.inf))
        if math.isnan(last_auc):
            # Nothing weighable was said about the last round: no earlier one can beat it.
            return self.arrays[last], last, last_auc
        z = margin_z(sum(1 for r in pooled if r < last))
        best = (last_auc, last)
        for r, (a, s) in sorted(pooled.items()):
            if r < last and a - last_auc > z * math.hypot(s, last_std) and a > best[0]:
                best = (a, r)
        return self.arrays[best[1]], best[1], best[0]
