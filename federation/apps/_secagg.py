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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.server import LegacyContext, ServerConfig
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp import Grid

from ..refusals import RefusalCheck
from ._secagg_masks import install as _install_full_seed_masks
from ._secagg_node import legacy_bridge_mod, remember_policy, secagg_mod
from ._secagg_ranges import (
    DEFAULT_CLIPPING_RANGE,
    SecAggRanges,
    secagg_ranges,
    secagg_setup_problem,
)
from ._secagg_strategy import TokenCheck, _ConsentedLegacyStrategy
from ._strategy import ManifestFn, PrepareFn, RoundLog

# Masks from the whole shared secret on this side too (Flower's own folds it to 32 bits).
_install_full_seed_masks()

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
    prepare: PrepareFn | None = None,
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
    prepare : PrepareFn | None, default None
        As for :class:`ConsentedStrategy`.

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
        prepare=prepare,
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
