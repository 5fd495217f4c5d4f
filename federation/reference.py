"""The centralized reference: ``g`` trained on pooled rows the way the nodes train it.

What the demo and ``bench.federation`` hold a federated ``g`` against. The rows
are pooled (the callers bin them: the demo from a sketch of the pooled rows, the
benchmark from the merge of one sketch per ISV, as the ServerApp does); the
schedule is a node's: one local pass of ``local_epochs`` per "round" with the
node's per-round seed ``seed + round``, and DP-SGD with noise sized for all the
rounds when a budget is given.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .dp import HistoryEntry, train_dp_sgd
from .models import build_g_erp, train_local
from .specs import DPBudget

__all__ = ["train_centralized"]


def train_centralized(
    X: np.ndarray,
    y: np.ndarray,
    *,
    arch: str,
    rounds: int,
    local_epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    hidden: int = 32,
    dp: DPBudget | None = None,
    on_round: Callable[[int], None] | None = None,
) -> tuple[torch.nn.Module, list[HistoryEntry]]:
    """Train the reference model; returns it and its RDP history (empty without DP).

    Parameters
    ----------
    X, y : numpy.ndarray
        Binned pooled rows and their 0/1 labels.
    arch : str
        ``g_erp`` family (``"logistic"`` or ``"mlp"``).
    rounds, local_epochs, batch_size : int
        The job's schedule: ``rounds`` passes of ``local_epochs`` epochs each.
    lr : float
    seed : int
        **Seeds torch's global random state** before the model is built (the start a
        job's model gets from the same seed); round ``r`` trains with ``seed + r``.
    hidden : int, default 32
        MLP width.
    dp : DPBudget | None, default None
        DP-SGD with this budget over all ``rounds``; ``None`` trains without DP.
    on_round : Callable[[int], None] | None, default None
        Called with the round number after each round (progress).
    """
    torch.manual_seed(seed)
    model = build_g_erp(arch, X.shape[1], hidden=hidden)
    history: list[HistoryEntry] = []
    for r in range(1, rounds + 1):
        common = dict(epochs=local_epochs, batch_size=batch_size, lr=lr, seed=seed + r)
        if dp is None:
            train_local(model, X, y, **common)  # type: ignore[arg-type]
        else:
            result = train_dp_sgd(
                model, X, y, budget=dp, history=history, rounds_left=rounds - r + 1,
                **common,  # type: ignore[arg-type]
            )
            history.extend(result.steps)
        if on_round is not None:
            on_round(r)
    return model, history
