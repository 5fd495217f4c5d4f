"""Membership inference against ``g_erp``, trained with and without DP-SGD on the same data.

The attack is the loss-threshold attack (Yeom et al. 2018): the platform, which
receives the model, guesses "member" when a merchant's loss is below a
threshold. Its **advantage** is TPR - FPR at the threshold, chosen on one half
of the candidates and measured on the other half (so the maximum over
thresholds does not inflate it), and its AUC is that of -loss over members vs
non-members. The setting is chosen so the attack demonstrably works without DP:
a small cohort of real GMSC rows, fine bins, an MLP and many local epochs,
trained with the node's own functions (:func:`federation.dp.train_plain_sgd` and
:func:`federation.dp.train_dp_sgd`; one node, one round — the release a node
makes). Without DP the advantage must be >= 0.2 (else the check proves
nothing); at ε = 3 the target is <= 0.05.

Run: ``python -m bench.privacy [--quick]``. Prints one table; the box may be shared,
so only the attack numbers (not times) are compared.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from federation.dp import train_dp_sgd, train_plain_sgd
from federation.features import BinEncoder, QuantileSketch
from federation.metrics import auc
from federation.models import build_g_erp
from federation.realdata import load_gmsc
from federation.schema import LABEL
from federation.specs import DPBudget

from ._common import Row, add_exit_option, finish

__all__ = ["MiaResult", "membership_inference", "main"]


@dataclass(frozen=True, slots=True)
class MiaResult:
    """One model's exposure: attack AUC and advantage, and the model's own test AUC."""

    name: str
    epsilon: float | None
    attack_auc: float
    advantage: float
    test_auc: float

    def __repr__(self) -> str:
        eps = "none" if self.epsilon is None else f"{self.epsilon:g}"
        return (f"{self.name:<10} ε={eps:<5} attack AUC={self.attack_auc:.3f} "
                f"advantage={self.advantage:.3f} test AUC={self.test_auc:.3f}")


def _losses(model: torch.nn.Module, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(X)).reshape(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.as_tensor(y), reduction="none"
        )
    return np.asarray(loss.numpy(), dtype=np.float64)


def _advantage(member: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> float:
    """TPR - FPR of the loss threshold picked on one half, measured on the other half."""
    def split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = rng.permutation(a.size)
        return a[idx[: a.size // 2]], a[idx[a.size // 2 :]]

    m_fit, m_eval = split(member)
    o_fit, o_eval = split(other)
    candidates = np.unique(np.concatenate([m_fit, o_fit]))
    gaps = [(m_fit <= t).mean() - (o_fit <= t).mean() for t in candidates]
    t = candidates[int(np.argmax(gaps))]
    return float((m_eval <= t).mean() - (o_eval <= t).mean())


def membership_inference(
    *,
    n: int = 1000,
    epochs: int = 100,
    n_bins: int = 50,
    hidden: int = 256,
    epsilons: tuple[float, ...] = (3.0,),
    seed: int = 0,
) -> list[MiaResult]:
    """Train ``g_erp`` on ``n`` members without and with DP; attack both.

    Parameters
    ----------
    n : int, default 1000
        Members (training rows, half defaults) and as many non-members (same mix).
    epochs, n_bins, hidden : int
        Local epochs, quantile bins per feature, MLP width.
    epsilons : tuple[float, ...], default (3.0,)
        One DP model per ε (δ = 1e-5, clipping norm 1), after the model without DP.
    seed : int, default 0
    """
    data = load_gmsc(seed=seed)
    rng = np.random.default_rng(seed)
    pool = data.train.pooled(with_platform=False)
    cols = list(data.erp_columns)
    # Balanced classes: the attack is weakest where one class dominates the loss.
    pos = pool[pool[LABEL] == 1].sample(n=n, random_state=seed)
    neg = pool[pool[LABEL] == 0].sample(n=n, random_state=seed)
    half = n // 2
    members = pd.concat([pos.iloc[:half], neg.iloc[:half]]).reset_index(drop=True)
    others = pd.concat([pos.iloc[half:2 * half], neg.iloc[half:2 * half]]).reset_index(drop=True)
    n = len(members)
    test = data.test.pooled(with_platform=False)
    test = test.iloc[rng.permutation(len(test))[:5000]]
    encoder = BinEncoder(QuantileSketch.from_frame(pd.concat([members, others]), cols)
                         .bin_edges(n_bins))
    Xm, ym = encoder.transform(members), members[LABEL].to_numpy(np.float32)
    Xo, yo = encoder.transform(others), others[LABEL].to_numpy(np.float32)
    others = others.iloc[: len(members)]
    Xt, yt = encoder.transform(test), test[LABEL].to_numpy(np.float32)
    out = []
    runs: list[tuple[str, float | None]] = [("no DP", None)]
    runs += [("DP-SGD", e) for e in epsilons]
    for name, eps in runs:
        torch.manual_seed(seed)
        model = build_g_erp("mlp", encoder.n_outputs, hidden=hidden)
        if eps is None:
            train_plain_sgd(model, Xm, ym, epochs=epochs, batch_size=32, lr=0.2, seed=seed)
        else:
            train_dp_sgd(model, Xm, ym, epochs=epochs, batch_size=32, lr=0.2,
                         budget=DPBudget(epsilon=eps), history=[], rounds_left=1, seed=seed)
        lm, lo = _losses(model, Xm, ym), _losses(model, Xo, yo)
        labels = np.concatenate([np.ones(n), np.zeros(n)])
        attack = auc(labels, -np.concatenate([lm, lo]))
        model.eval()
        with torch.no_grad():
            pt = torch.sigmoid(model(torch.as_tensor(Xt)).reshape(-1)).numpy()
        out.append(MiaResult(name, eps, float(attack), _advantage(lm, lo, rng),
                             float(auc(yt, pt))))
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the membership-inference table; exit as :mod:`bench._common` says (1 when a
    target is missed unless ``--no-fail``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller cohort, fewer epochs")
    add_exit_option(parser)
    args = parser.parse_args(argv)
    kw: dict[str, object] = dict(n=300, epochs=100) if args.quick else {}
    kw["epsilons"] = (3.0, 1.0)
    torch.set_num_threads(1)
    results = membership_inference(**kw)  # type: ignore[arg-type]
    print("membership inference (loss threshold) on g_erp, GMSC ERP columns")
    print(f"{'model':<10} {'epsilon':>8} {'attack AUC':>11} {'advantage':>10} {'test AUC':>9}"
          f" {'target':>22} {'met':>4}")
    rows = []
    for r in results:
        target = "advantage >= 0.2 (works)" if r.epsilon is None else "advantage <= 0.05"
        if r.epsilon is not None and r.epsilon != 3.0:
            target = "(context)"
        met = r.advantage >= 0.2 if r.epsilon is None else r.advantage <= 0.05
        eps = "none" if r.epsilon is None else f"{r.epsilon:g}"
        print(f"{r.name:<10} {eps:>8} {r.attack_auc:>11.3f} {r.advantage:>10.3f} "
              f"{r.test_auc:>9.3f} {target:>22} {'yes' if met else 'NO':>4}")
        # A "(context)" row prints its verdict but has no target to miss.
        rows.append(Row(f"{r.name} ε={eps}", r.advantage, "advantage", target=target,
                        met=None if target == "(context)" else met))
    return finish(rows, no_fail=args.no_fail)


if __name__ == "__main__":
    raise SystemExit(main())
