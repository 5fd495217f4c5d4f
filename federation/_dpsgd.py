"""DP-SGD and plain SGD at the node: one round of local training (Opacus for DP).

The accountant that sizes the noise and the persisted per-node ledger are
:mod:`federation.dp`, which re-exports these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from opacus import PrivacyEngine
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .onehot import OneHotRows
from .specs import DPBudget

if TYPE_CHECKING:
    from .dp import HistoryEntry

__all__ = ["DPRoundResult", "train_dp_sgd", "train_plain_sgd"]


@dataclass(frozen=True, slots=True)
class DPRoundResult:
    """What one round of DP-SGD did: mean loss, noise, and the steps to record."""

    loss: float
    noise_multiplier: float
    steps: tuple[HistoryEntry, ...]


class _OneHotDataset(Dataset[Any]):
    """:class:`OneHotRows` and labels as a dataset that builds its dense rows per batch.

    ``__getitems__`` (which torch's fetcher calls with a whole batch of indices) returns
    one ready ``[X_batch, y_batch]``, and :func:`_one_batch` is the collate function, so
    a batch is the same tensors a ``TensorDataset`` over the dense matrix would give for
    the same indices. An empty index list gives ``[]``, which Opacus' empty-batch wrapper
    turns into zero-row tensors as it does for ``TensorDataset``.
    """

    def __init__(self, X: OneHotRows, y: np.ndarray) -> None:
        self.X = X
        self.y = torch.as_tensor(y, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.X[i][0]), self.y[i]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        if not indices:
            return []
        idx = np.asarray(indices, dtype=np.intp)
        return [[torch.from_numpy(self.X[idx]), self.y[torch.from_numpy(idx)]]]


def _one_batch(batch: list[Any]) -> Any:
    """Collate for :class:`_OneHotDataset`: its ``__getitems__`` already made the batch."""
    return batch[0]


def _loader(
    X: np.ndarray | OneHotRows,
    y: np.ndarray,
    batch_size: int,
    seed: int,
    generator: torch.Generator | None = None,
) -> DataLoader[Any]:
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    if isinstance(X, OneHotRows):
        return DataLoader(_OneHotDataset(X, y), batch_size=batch_size, shuffle=True,
                          generator=gen, collate_fn=_one_batch)
    ds = TensorDataset(
        torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    )
    return DataLoader(ds, batch_size=batch_size, shuffle=True, generator=gen)


def _epochs(
    model: torch.nn.Module,
    loader: DataLoader[Any],
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    lr: float,
    proximal_mu: float,
    anchor: list[torch.Tensor],
    params: list[torch.nn.Parameter],
    step_on_empty: bool = False,
) -> float:
    loss_fn = torch.nn.BCEWithLogitsLoss()
    total, count = 0.0, 0
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            if len(xb) == 0:  # Poisson sampling can draw an empty batch
                if not step_on_empty:
                    continue
                # DP-SGD still takes the step: zero clipped gradients plus full noise, so
                # whether a batch was empty does not change what leaves the node.
                optimizer.zero_grad()
                for p in params:
                    p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)
                optimizer.step()
                continue
            optimizer.zero_grad()
            loss = loss_fn(model(xb).reshape(-1), yb)
            loss.backward()
            optimizer.step()
            if proximal_mu > 0:
                # FedProx's pull towards the round's global weights, as a separate step: it
                # does not touch the data, so under DP it costs no privacy.
                with torch.no_grad():
                    for p, p0 in zip(params, anchor, strict=True):
                        p.sub_(lr * proximal_mu * (p - p0))
            total += float(loss.detach()) * len(xb)
            count += len(xb)
    return total / max(count, 1)


def train_dp_sgd(
    model: torch.nn.Module,
    X: np.ndarray | OneHotRows,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    budget: DPBudget,
    history: Sequence[HistoryEntry],
    rounds_left: int,
    proximal_mu: float = 0.0,
    seed: int = 0,
    noise_multiplier: float | None = None,
    generator: torch.Generator | None = None,
) -> DPRoundResult:
    """One round of DP-SGD with noise sized for the job's remaining rounds.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place; its forward returns logits of shape (n,).
    X, y : np.ndarray
        Features (float32, or the same one-hot matrix as :class:`OneHotRows`) and 0/1
        labels of the manifest-filtered cohort.
    epochs, batch_size : int
        Local epochs and expected (Poisson) batch size.
    lr : float
    budget : DPBudget
        The job's (ε, δ, clipping norm).
    history : Sequence[HistoryEntry]
        The job's RDP history at this node before this round.
    rounds_left : int
        Rounds including this one; noise is sized so all of them fit the budget.
    proximal_mu : float, default 0.0
    seed : int, default 0
    noise_multiplier : float | None, default None
        The round's noise from :func:`round_noise` (the node sizes it before it
        charges any merchant); ``None`` sizes it here the same way.
    generator : torch.Generator | None, default None
        The node's own generator (:mod:`federation.node`, seeded from the OS
        CSPRNG) for Poisson sampling and noise; ``None`` derives one from ``seed``
        (benchmarks and unit tests only: never a seed from a message).

    Raises
    ------
    BudgetExceeded
        If the remaining rounds cannot fit the job's ε at any noise level.
    """
    if len(X) == 0:
        raise ValueError("X must not be empty")
    from .dp import round_noise  # the accountant (it re-exports this module)

    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    sigma = noise_multiplier
    if sigma is None:
        sigma = round_noise(
            len(X),
            epochs=epochs,
            batch_size=batch_size,
            budget=budget,
            history=history,
            rounds_left=rounds_left,
        )
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=lr)
    engine = PrivacyEngine(accountant="rdp", secure_mode=False)
    # Opacus' per-sample gradient hooks. Its "ghost" mode (fast gradient clipping) gives
    # the same clipped, noised updates (weights equal to 1e-7, same accountant history)
    # but was not faster for these small models (MLP 2.14-2.47x vs 2.42-2.45x plain SGD,
    # logistic 1.81-1.90x vs 1.58-1.67x; one GMSC epoch, 30k rows, one thread).
    from opacus.data_loader import DPDataLoader

    # Poisson sampling and noise both from the node's generator (never the global RNG).
    loader = DPDataLoader.from_data_loader(_loader(X, y, batch_size, seed, gen), generator=gen)
    dp_model, dp_opt, dp_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=sigma,
        max_grad_norm=budget.max_grad_norm,
        poisson_sampling=False,
        noise_generator=gen,
    )
    # Opacus' floating-point mitigation (sum of four Gaussians / 2) without torchcsprng:
    # see federation.node._rng for the choice.
    dp_opt.secure_mode = True
    loss = _epochs(
        dp_model,
        dp_loader,
        dp_opt,
        epochs=epochs,
        lr=lr,
        proximal_mu=proximal_mu,
        anchor=anchor,
        params=params,
        step_on_empty=True,
    )
    steps = tuple((float(s), float(q), int(n)) for s, q, n in engine.accountant.history)
    # Opacus leaves hooks on the wrapped module; remove them so the weights read back cleanly.
    dp_model._close()  # noqa: SLF001 - GradSampleModule's documented way to drop its hooks
    return DPRoundResult(loss=loss, noise_multiplier=sigma, steps=steps)


def train_plain_sgd(
    model: torch.nn.Module,
    X: np.ndarray | OneHotRows,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    proximal_mu: float = 0.0,
    seed: int = 0,
) -> float:
    """The same loop as :func:`train_dp_sgd` without Opacus (the DP cost baseline).

    ``seed`` seeds the batch order only (the loader's own generator); torch's global
    random state is left alone.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params]
    return _epochs(
        model,
        _loader(X, y, batch_size, seed),
        torch.optim.SGD(params, lr=lr),
        epochs=epochs,
        lr=lr,
        proximal_mu=proximal_mu,
        anchor=anchor,
        params=params,
    )
