"""Differential privacy at the node: Opacus DP-SGD and a cumulative, persisted accountant.

Opacus' ``make_private_with_epsilon`` sizes the noise for one call, so a job of
R rounds would spend R times its ε. Here the node keeps each job's RDP history
(noise multiplier, sample rate, steps) in a file and, every round, picks the
noise so that *history + the remaining rounds* still fits the job's ε.

Two budgets are enforced at the node, both before a single row is trained on:

* **per job** — RDP accounting over all of the job's rounds at this node;
* **per merchant lifetime** — when a merchant first enters a DP job, the job's
  whole ε is charged to that merchant (basic composition across jobs, an upper
  bound); a job that would push any merchant past its lifetime ε is refused.

Order at the node: the round's noise is sized first (:func:`round_noise`, a pure
computation that refuses when no noise fits the rounds left), only then are the
merchants charged (:meth:`PrivacyLedger.reserve`), then DP-SGD runs — a refused
job charges nobody.

Composition bound. A job's ``(ε, δ)`` holds per node, with respect to that
node's rows, over all the job's rounds (RDP, then converted at δ). A merchant
whose rows the job reads at ``k`` ISVs is in ``k`` independent releases, so the
job costs that merchant ``k·ε`` (and ``k·δ``) by sequential composition, and
jobs add up (basic composition). Each node's ledger sees only its own share, so
the platform keeps the merchant's total across ISVs in
:class:`~federation.lifetime.MerchantPrivacyAccount` (``k`` job charges of ε,
once per job however many rounds). The runner calls :func:`check_job_budget`
on every node's ledger and checks that account before it submits a job; the
ServerApp charges the account for each training manifest; the node checks its
own ledger again before training.

RDP curves are computed vectorised over a trimmed set of integer orders
(:func:`_rdp`, equal to Opacus' ``compute_rdp``; the trimmed orders never give a
tighter bound than the full set and move σ by < 1 % for the budgets used).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import get_privacy_spent as privacy_spent
from scipy.special import gammaln, logsumexp

from ._dpsgd import DPRoundResult, train_dp_sgd, train_plain_sgd
from ._errors import BudgetExceeded
from .specs import DPBudget

__all__ = [
    "PrivacyLedger",
    "BudgetCheck",
    "check_job_budget",
    "epsilon_of",
    "noise_for_budget",
    "round_noise",
    "train_dp_sgd",
    "train_plain_sgd",
    "DPRoundResult",
]

HistoryEntry = tuple[float, float, int]  # (noise multiplier, sample rate, steps)

_STREAMS = {"train": "history", "eval": "eval_history"}
_EPS_SLACK = 1e-12
_MIN_SIGMA = 0.3
_MAX_SIGMA = 200.0
# Integer RDP orders only: Opacus evaluates them in closed form, whereas each fractional
# order needs a slowly converging series. ε is the minimum over the orders, so any subset
# gives a bound that is never tighter than the full set's. For the budgets fedgate runs
# (ε 1-10, δ 1e-5, cohorts of 10^3-10^5 rows, 1-20 rounds) the best order is <= 18; 2-32
# plus 40, 48 and 64 leave a margin for smaller ε and move σ by < 0.1 % against 2-63 and
# 80-256 (``tests/federation/test_dp.py``).
_ALPHAS: tuple[float, ...] = tuple(float(a) for a in [*range(2, 33), 40, 48, 64])
_ORDERS = np.asarray(_ALPHAS)


def _rdp(q: float, sigma: float, steps: int, orders: np.ndarray = _ORDERS) -> np.ndarray:
    """RDP of ``steps`` sampled-Gaussian steps at integer ``orders``, vectorised.

    The same closed form as Opacus' ``compute_rdp`` for integer orders (Mironov et
    al. 2019, eq. for integer α): ``log A_α = logsumexp_i [log C(α, i) + i log q +
    (α - i) log(1 - q) + (i² - i) / (2σ²)]``, ``RDP = steps · log A_α / (α - 1)``, all
    orders at once instead of a Python loop per order and term.
    """
    if q == 0:
        return np.zeros(orders.size)
    if sigma == 0:
        return np.full(orders.size, np.inf)
    if q == 1.0:
        return np.asarray(steps * orders / (2 * sigma**2), dtype=np.float64)
    alpha = orders[:, None]
    i = np.arange(int(orders.max()) + 1, dtype=np.float64)[None, :]
    valid = i <= alpha
    a_i = np.where(valid, alpha - i, 0.0)
    log_binom = gammaln(alpha + 1) - gammaln(i + 1) - gammaln(a_i + 1)
    terms = log_binom + i * math.log(q) + a_i * math.log(1 - q) + (i * i - i) / (2 * sigma**2)
    log_a = logsumexp(np.where(valid, terms, -np.inf), axis=1)
    return np.asarray(steps * log_a / (orders - 1), dtype=np.float64)


def _history_rdp(history: Sequence[HistoryEntry]) -> np.ndarray:
    return sum((_rdp(float(q), float(s), int(n)) for s, q, n in history), np.zeros(_ORDERS.size))


def _eps(rdp: np.ndarray, delta: float) -> float:
    return float(privacy_spent(orders=list(_ALPHAS), rdp=rdp, delta=delta)[0])


def epsilon_of(history: Sequence[HistoryEntry], delta: float) -> float:
    """ε of an RDP history at ``delta`` (0.0 for an empty history)."""
    if not history:
        return 0.0
    acc = RDPAccountant()
    acc.history = [(float(s), float(q), int(n)) for s, q, n in history]
    eps, _ = acc.get_privacy_spent(delta=delta, alphas=list(_ALPHAS))
    return float(eps)


def noise_for_budget(
    history: Sequence[HistoryEntry],
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
) -> float:
    """The smallest noise multiplier (to ~1 %) with ε(history + ``steps`` more) ≤ target.

    The RDP curves are evaluated vectorised (:func:`_rdp`, equal to Opacus'
    ``compute_rdp`` to ~1e-12), the history's once for the whole search.

    Raises
    ------
    BudgetExceeded
        If even the largest noise considered would exceed ``target_epsilon``.
    """
    past = _history_rdp(history)

    def eps(sigma: float) -> float:
        return _eps(past + _rdp(sample_rate, sigma, steps), delta)

    if eps(_MAX_SIGMA) > target_epsilon:
        raise BudgetExceeded(
            f"job budget ε={target_epsilon} cannot cover {steps} more steps "
            f"(already spent ε={epsilon_of(history, delta):.3f})"
        )
    low, high = _MIN_SIGMA, _MAX_SIGMA
    if eps(low) <= target_epsilon:
        return low
    while high > 1.01 * low:  # bisect in log space: ~10 evaluations to 1 %
        mid = math.sqrt(low * high)
        if eps(mid) > target_epsilon:
            low = mid
        else:
            high = mid
    return high


def round_noise(
    n_rows: int,
    *,
    epochs: int,
    batch_size: int,
    budget: DPBudget,
    history: Sequence[HistoryEntry],
    rounds_left: int,
) -> float:
    """The noise multiplier for this round of :func:`train_dp_sgd` (a pure computation).

    Sized so that the job's ``history`` plus ``rounds_left`` rounds like this one fit
    ``budget.epsilon``. A node calls it *before* charging any merchant, so a job no
    noise can fit is refused with nothing charged.

    Raises
    ------
    BudgetExceeded
        No noise level fits the remaining rounds.
    ValueError
        ``n_rows`` is not positive.
    """
    if n_rows <= 0:
        raise ValueError("n_rows must be positive")
    sample_rate = min(1.0, batch_size / n_rows)
    steps_per_round = epochs * math.ceil(1 / sample_rate)
    return noise_for_budget(
        history,
        target_epsilon=budget.epsilon,
        delta=budget.delta,
        sample_rate=sample_rate,
        steps=steps_per_round * max(rounds_left, 1),
    )


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """Outcome of a budget check: ``ok`` and, if not, which merchants would overrun."""

    ok: bool
    job_epsilon_spent: float
    over_budget: tuple[str, ...]
    reason: str = ""


class PrivacyLedger:
    """A node's persisted privacy accounting (a JSON file, locked while updated).

    Parameters
    ----------
    path : Path
        The JSON file; created on first write.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- storage --------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"jobs": {}, "merchants": {}}
        return dict(json.loads(self.path.read_text(encoding="utf-8")))

    def _write(self, state: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        # Jobs may run concurrently on one node; the lock serialises read-modify-write.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self._read()
                yield state
                self._write(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def _peek(self) -> Iterator[dict[str, Any]]:
        yield self._read()  # a private copy: changes are dropped

    # -- queries --------------------------------------------------------------------------
    def job_history(self, job_id: str, stream: str = "train") -> list[HistoryEntry]:
        """The job's RDP history at this node (``stream``: ``train`` or ``eval``)."""
        job = self._read()["jobs"].get(job_id)
        return [tuple(h) for h in job.get(_STREAMS[stream], [])] if job else []  # type: ignore[misc]

    def job_epsilon(self, job_id: str, delta: float) -> float:
        """ε the job has spent at this node so far."""
        return epsilon_of(self.job_history(job_id), delta)

    def merchant_spent(self, merchant_id: str) -> float:
        """The merchant's lifetime ε charged at this node."""
        m = self._read()["merchants"].get(merchant_id)
        return float(m["epsilon"]) if m else 0.0

    def check(self, *, job_id: str, budget: DPBudget, merchant_ids: Iterable[str]) -> BudgetCheck:
        """Would training ``merchant_ids`` in ``job_id`` fit both budgets? Pure read."""
        return _check(self._read(), job_id=job_id, budget=budget, merchant_ids=merchant_ids)

    # -- updates --------------------------------------------------------------------------
    def reserve(self, *, job_id: str, budget: DPBudget, merchant_ids: Iterable[str]) -> None:
        """Charge the job's ε to every merchant new to the job, or refuse the whole lot.

        Raises
        ------
        BudgetExceeded
            Nothing is charged when any merchant or the job would overrun.
        """
        ids = sorted(set(merchant_ids))
        with self._locked() as state:
            result = _check(state, job_id=job_id, budget=budget, merchant_ids=ids)
            if not result.ok:
                raise BudgetExceeded(result.reason)
            job = state["jobs"].setdefault(
                job_id, {"epsilon": budget.epsilon, "delta": budget.delta, "history": []}
            )
            charged = set(job.setdefault("merchants", []))
            for mid in ids:
                if mid in charged:
                    continue
                m = state["merchants"].setdefault(mid, {"epsilon": 0.0, "jobs": []})
                m["epsilon"] = float(m["epsilon"]) + budget.epsilon
                m["jobs"].append(job_id)
                charged.add(mid)
            job["merchants"] = sorted(charged)

    def record(
        self, job_id: str, steps: Sequence[HistoryEntry], streams: Sequence[str] = ("train",)
    ) -> float:
        """Append releases to the job's history; returns the job's ε after them.

        ``streams``: ``train`` (DP-SGD on the training merchants), ``eval`` (metrics
        of the held-out merchants, a disjoint set), or both (a sketch covers every
        merchant). The job's ε is the larger of the two streams' (parallel composition).
        """
        with self._locked() as state:
            job = state["jobs"][job_id]
            for stream in streams:
                job.setdefault(_STREAMS[stream], []).extend(
                    [float(s), float(q), int(n)] for s, q, n in steps
                )
            delta = float(job["delta"])
            histories = [job.get(v, []) for v in _STREAMS.values()]
        return max(epsilon_of([tuple(h) for h in hist], delta) for hist in histories)  # type: ignore[misc]

    def admit(
        self,
        *,
        job_id: str,
        budget: DPBudget,
        merchant_ids: Iterable[str],
        lifetime_epsilon: float,
        dry_run: bool = False,
    ) -> tuple[list[str], list[str]]:
        """Charge a release of ``job_id`` to the lifetime account; who may be used this round.

        Every merchant new to the job is charged the job's whole ε (whatever share
        of it this release spends: the job's releases together stay within it). A
        merchant that charge would push past ``lifetime_epsilon`` (the node
        policy's, never a message's) is left out of this round, not charged, and
        the rest go on. A job whose ε rises mid-job charges the rise to every
        merchant it already charged; one that cannot take the rise is excluded
        from the job's later rounds. ``dry_run`` computes the same answer and
        writes nothing.

        Returns
        -------
        tuple[list[str], list[str]]
            The merchants admitted (sorted) and those left out.

        Raises
        ------
        BudgetExceeded
            The job has spent its ε (nothing is charged).
        """
        ids = sorted(set(merchant_ids))
        with self._peek() if dry_run else self._locked() as state:
            merchants = state["merchants"]
            job = state["jobs"].setdefault(
                job_id,
                {"epsilon": budget.epsilon, "delta": budget.delta, "history": [], "merchants": []},
            )
            spent = max(
                epsilon_of([tuple(h) for h in job.get(v, [])], budget.delta)  # type: ignore[misc]
                for v in _STREAMS.values()
            )
            if spent >= budget.epsilon:
                raise BudgetExceeded(f"job {job_id} has spent its ε={budget.epsilon}")
            charged = set(job.setdefault("merchants", []))
            excluded = set(job.get("excluded", []))
            rise = budget.epsilon - float(job["epsilon"])
            if rise > _EPS_SLACK:
                for mid in sorted(charged - excluded):
                    m = merchants[mid]
                    if float(m["epsilon"]) + rise > lifetime_epsilon + _EPS_SLACK:
                        excluded.add(mid)
                        continue
                    m["epsilon"] = float(m["epsilon"]) + rise
                job["epsilon"] = budget.epsilon
            job_eps = max(float(job["epsilon"]), budget.epsilon)
            admitted, left_out = [], []
            for mid in ids:
                if mid in excluded:
                    left_out.append(mid)
                    continue
                if mid not in charged:
                    m = merchants.setdefault(mid, {"epsilon": 0.0, "jobs": []})
                    if float(m["epsilon"]) + job_eps > lifetime_epsilon + _EPS_SLACK:
                        left_out.append(mid)
                        continue
                    m["epsilon"] = float(m["epsilon"]) + job_eps
                    m["jobs"].append(job_id)
                    charged.add(mid)
                admitted.append(mid)
            job["merchants"] = sorted(charged)
            job["excluded"] = sorted(excluded)
        return admitted, left_out

    def jobs_of(self, merchant_id: str) -> list[str]:
        """The jobs whose releases were charged to ``merchant_id`` at this node (lineage)."""
        m = self._read()["merchants"].get(merchant_id)
        return list(m["jobs"]) if m else []


def _check(
    state: dict[str, Any], *, job_id: str, budget: DPBudget, merchant_ids: Iterable[str]
) -> BudgetCheck:
    job = state["jobs"].get(job_id)
    spent = epsilon_of([tuple(h) for h in job["history"]], budget.delta) if job else 0.0
    if spent >= budget.epsilon:
        return BudgetCheck(False, spent, (), f"job {job_id} has spent its ε={budget.epsilon}")
    charged = set(job.get("merchants", [])) if job else set()
    over = tuple(
        sorted(
            mid
            for mid in set(merchant_ids) - charged
            if float(state["merchants"].get(mid, {}).get("epsilon", 0.0)) + budget.epsilon
            > budget.lifetime_epsilon + 1e-12
        )
    )
    if over:
        return BudgetCheck(
            False,
            spent,
            over,
            f"{len(over)} merchant(s) would exceed lifetime ε={budget.lifetime_epsilon}",
        )
    return BudgetCheck(True, spent, ())


def check_job_budget(
    ledgers: Iterable[PrivacyLedger], *, job_id: str, budget: DPBudget, merchant_ids: Iterable[str]
) -> None:
    """Refuse a job before submission if any node's ledger says it would overrun.

    Raises
    ------
    BudgetExceeded
        With the first failing node's reason.
    """
    ids = list(merchant_ids)
    for ledger in ledgers:
        result = ledger.check(job_id=job_id, budget=budget, merchant_ids=ids)
        if not result.ok:
            raise BudgetExceeded(f"{ledger.path}: {result.reason}")
