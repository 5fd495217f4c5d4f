"""``g_erp``: the torch models trained federatedly on ERP features, and their plain local trainer.

The modules use only ``Linear`` and ``ReLU`` so Opacus can compute per-sample
gradients for them unchanged. ``forward`` returns logits of shape ``(n,)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .._errors import ModelError
from ..onehot import OneHotRows

__all__ = [
    "G_ARCHS",
    "LogisticG",
    "MlpG",
    "build_g_erp",
    "train_local",
    "predict_proba",
    "get_weights",
    "set_weights",
]

G_ARCHS = ("logistic", "mlp")
_PREDICT_BATCH = 65_536


class LogisticG(nn.Module):
    """Logistic regression: one linear layer to a logit.

    Parameters
    ----------
    n_inputs : int
        Width of the (one-hot binned) input.
    """

    def __init__(self, n_inputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_inputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n,)``."""
        out: torch.Tensor = self.linear(x)
        return out.squeeze(-1)


class MlpG(nn.Module):
    """A small MLP: ``Linear -> ReLU -> Linear`` to a logit.

    Parameters
    ----------
    n_inputs : int
        Width of the input.
    hidden : int, default 32
        Hidden units.
    """

    def __init__(self, n_inputs: int, hidden: int = 32) -> None:
        super().__init__()
        self.hidden = nn.Linear(n_inputs, hidden)
        self.act = nn.ReLU()
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n,)``."""
        out: torch.Tensor = self.out(self.act(self.hidden(x)))
        return out.squeeze(-1)


def build_g_erp(arch: str, n_inputs: int, *, hidden: int = 32) -> nn.Module:
    """Build a ``g_erp`` model.

    Parameters
    ----------
    arch : {"logistic", "mlp"}
        Architecture.
    n_inputs : int
        Input width (``BinEncoder.n_outputs``).
    hidden : int, default 32
        Hidden units of the MLP (ignored for ``logistic``).

    Raises
    ------
    ValueError
        On an unknown ``arch`` or non-positive sizes.
    """
    if n_inputs < 1 or hidden < 1:
        raise ValueError(f"n_inputs and hidden must be >= 1, got {n_inputs}, {hidden}")
    if arch == "logistic":
        return LogisticG(n_inputs)
    if arch == "mlp":
        return MlpG(n_inputs, hidden)
    raise ValueError(f"arch must be one of {G_ARCHS}, got {arch!r}")


def _check_xy(model: nn.Module, X: np.ndarray | OneHotRows, y: np.ndarray | None = None) -> None:
    if X.ndim != 2:
        raise ModelError(f"X must be 2-D, got shape {X.shape}", code="BAD_INPUT")
    first = next(model.parameters())
    if first.ndim == 2 and first.shape[1] != X.shape[1]:
        raise ModelError(f"model expects {first.shape[1]} inputs, X has {X.shape[1]}",
                         code="BAD_INPUT")
    if y is not None and y.shape[0] != X.shape[0]:
        raise ModelError(f"X has {X.shape[0]} rows but y has {y.shape[0]}", code="BAD_INPUT")


def train_local(
    model: nn.Module,
    X: np.ndarray | OneHotRows,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    proximal_mu: float = 0.0,
    seed: int = 0,
    optimizer: str = "adam",
) -> float:
    """Train ``model`` in place with minibatch Adam (or SGD) on binary cross-entropy.

    Parameters
    ----------
    model : torch.nn.Module
        A :func:`build_g_erp` model (weights at entry are the global model).
    X : numpy.ndarray | OneHotRows
        Inputs ``(n, d)`` (float32 one-hot bins, dense or as codes).
    y : numpy.ndarray
        Labels ``(n,)`` in {0, 1}.
    epochs, batch_size : int
        Passes over the data and minibatch size.
    lr : float
        Learning rate.
    proximal_mu : float, default 0.0
        FedProx: adds ``mu / 2 * ||w - w_entry||^2`` to the loss when > 0.
    seed : int, default 0
        Seeds the minibatch shuffling (a local generator; global RNG untouched).
    optimizer : {"adam", "sgd"}, default "adam"

    Returns
    -------
    float
        Mean loss (without the proximal term) over the batches of the last epoch;
        ``nan`` when ``X`` has no rows.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0 or proximal_mu < 0:
        raise ValueError("epochs and batch_size must be >= 1, lr > 0 and proximal_mu >= 0")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    _check_xy(model, X, y)
    n = X.shape[0]
    if n == 0:
        return float("nan")
    # One-hot codes (the node's rows) stay codes: dense rows are built per batch below.
    rows = X if isinstance(X, OneHotRows) else None
    xt = None if rows is not None else torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    opt: torch.optim.Optimizer = (torch.optim.Adam(model.parameters(), lr=lr)
                                  if optimizer == "adam" else
                                  torch.optim.SGD(model.parameters(), lr=lr))
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    model.train()
    last = float("nan")
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        # One gather per epoch; the batches are then cheap contiguous views.
        xs = xt[perm] if xt is not None else None
        ys = yt[perm]
        total, batches = 0.0, 0
        for start in range(0, n, batch_size):
            opt.zero_grad(set_to_none=True)
            xb = (xs[start:start + batch_size] if xs is not None else
                  torch.from_numpy(rows[perm[start:start + batch_size].numpy()]))  # type: ignore[index]
            loss = loss_fn(model(xb), ys[start:start + batch_size])
            objective = loss
            if anchor:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor,
                                                                strict=True))
                objective = loss + proximal_mu / 2.0 * prox
            objective.backward()
            opt.step()
            total += float(loss.detach())
            batches += 1
        last = total / batches
    return last


def predict_proba(model: nn.Module, X: np.ndarray | OneHotRows) -> np.ndarray:
    """Default probabilities ``(n,)`` as float64 (sigmoid of the logits), in eval mode."""
    _check_xy(model, X)
    model.eval()
    out = np.empty(X.shape[0], dtype=np.float64)
    with torch.no_grad():
        for start in range(0, X.shape[0], _PREDICT_BATCH):
            chunk = torch.from_numpy(np.ascontiguousarray(X[start:start + _PREDICT_BATCH],
                                                          dtype=np.float32))
            out[start:start + chunk.shape[0]] = torch.sigmoid(model(chunk)).double().numpy()
    return out


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """The model's state as a list of numpy arrays (``state_dict`` order, copies)."""
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_weights(model: nn.Module, weights: Sequence[np.ndarray]) -> None:
    """Load ``weights`` (as from :func:`get_weights`) into ``model``.

    Raises
    ------
    ModelError
        ``BAD_WEIGHTS`` when the count or a shape differs from the model's.
    """
    state = model.state_dict()
    if len(weights) != len(state):
        raise ModelError(f"expected {len(state)} arrays, got {len(weights)}")
    new = {}
    for (name, cur), w in zip(state.items(), weights, strict=True):
        arr = np.asarray(w)
        if tuple(arr.shape) != tuple(cur.shape):
            raise ModelError(f"{name}: expected shape {tuple(cur.shape)}, got {arr.shape}")
        new[name] = torch.as_tensor(arr, dtype=cur.dtype).clone()
    model.load_state_dict(new)
