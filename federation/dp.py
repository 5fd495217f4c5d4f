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

import hashlib
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import get_privacy_spent as privacy_spent
from scipy.special import gammaln, logsumexp

from ._dpsgd import DPRoundResult, train_dp_sgd, train_plain_sgd
from ._errors import BudgetExceeded, FederationError
from ._sqlite import connect, is_sqlite_file, write_transaction
from .specs import DPBudget

__all__ = [
    "PrivacyLedger",
    "LedgerSummary",
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

CHUNK = 500
"""Merchant ids per lookup query (below SQLite's 999 bound-parameter floor)."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, epsilon REAL NOT NULL, delta REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    job_id TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    sigma REAL NOT NULL, q REAL NOT NULL, steps INTEGER NOT NULL,
    PRIMARY KEY (job_id, stream, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS merchants (
    merchant_id TEXT PRIMARY KEY, epsilon REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS charges (
    seq INTEGER PRIMARY KEY, job_id TEXT NOT NULL, merchant_id TEXT NOT NULL,
    UNIQUE (job_id, merchant_id)
);
CREATE INDEX IF NOT EXISTS charges_merchant ON charges (merchant_id, seq);
CREATE TABLE IF NOT EXISTS exclusions (
    job_id TEXT NOT NULL, merchant_id TEXT NOT NULL, PRIMARY KEY (job_id, merchant_id)
) WITHOUT ROWID;
"""
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


@dataclass(frozen=True, slots=True)
class LedgerSummary:
    """A node ledger at a glance (:meth:`PrivacyLedger.summary`)."""

    job_epsilon: dict[str, float]
    merchants_charged: int
    max_merchant_epsilon: float


class PrivacyLedger:
    """A node's persisted privacy accounting: an SQLite file, updated one transaction a call.

    Tables (see :data:`_SCHEMA`): ``jobs`` (each job's ε and δ at this node),
    ``history`` (its RDP releases per stream), ``merchants`` (each merchant's
    lifetime ε here), ``charges`` (which jobs were charged to which merchant, in
    charge order) and ``exclusions`` (merchants a job's ε rise left out). Every
    call reads and writes the merchants it is given in chunks of :data:`CHUNK`
    through the primary keys, so memory is O(chunk), never O(ledger). A
    :meth:`reserve`, :meth:`admit` or :meth:`record` runs in one ``BEGIN
    IMMEDIATE`` transaction: concurrent jobs on a node are serialised by it, and
    a call that raises midway leaves nothing charged. Reads (:meth:`check`,
    ``admit(dry_run=True)``, the queries) run in one read transaction (one
    consistent snapshot) and write nothing.

    Each merchant's ε is the same float sum, in the same order, as the earlier
    JSON ledger computed (``epsilon + charge`` in Python, stored as an IEEE double).

    **An earlier version's JSON ledger is imported automatically** on first open
    (:meth:`_import_legacy`): forgetting a merchant's spent ε would let it be
    charged past its lifetime cap, and refusing to open would stop every job of
    the node until an operator acts, for no gain — the JSON file is the node's
    own state, as trusted as the database. The import is one transaction
    (all of it or none) that also records the file's SHA-256; only after it
    commits is the file renamed ``<name>.json.imported``. A crash in between is
    finished on the next open (the marker says it is done). A JSON ledger that
    changed after its import, or one found beside a database that already holds
    accounting of its own, is refused with :class:`~federation.FederationError`
    ``LEGACY_PRIVACY_LEDGER`` (merging them by guess could lose charges).

    Parameters
    ----------
    path : Path
        The database (``<name>.sqlite``). A path ending ``.json`` (the earlier
        version's name) means ``<name>.sqlite`` beside it; either way the legacy
        JSON ledger looked for is ``<name>.json``. Created on first write.
    """

    def __init__(self, path: Path) -> None:
        path = Path(path)
        self.path = path.with_suffix(".sqlite") if path.suffix == ".json" else path
        self.legacy_path = self.path.with_suffix(".json")

    # -- storage --------------------------------------------------------------------------
    def _connect(self, *, create: bool) -> sqlite3.Connection:
        self._import_legacy()
        if self.path.exists():
            if self.path.stat().st_size and not is_sqlite_file(self.path):
                raise FederationError(
                    f"{self.path} is not an SQLite privacy ledger", code="LEGACY_PRIVACY_LEDGER"
                )
        elif not create:
            return connect(":memory:", schema=_SCHEMA)  # nothing recorded yet: queries are empty
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return connect(self.path, schema=_SCHEMA)

    def _writing(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction: committed if the body returns, rolled back if it raises."""
        return write_transaction(self._connect(create=True))

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One read transaction (a consistent snapshot across chunked queries); writes nothing."""
        conn = self._connect(create=False)
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("ROLLBACK")
        finally:
            conn.close()

    def _import_legacy(self) -> None:
        """Import ``<name>.json`` (the earlier JSON ledger) once, atomically; then rename it."""
        legacy = self.legacy_path
        if not legacy.is_file():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Two processes opening at once: BEGIN IMMEDIATE lets one import, the other see it.
        with write_transaction(connect(self.path, schema=_SCHEMA)) as conn:
            done = conn.execute(
                "SELECT value FROM meta WHERE key = 'legacy_json_sha256'"
            ).fetchone()
            if legacy.is_file():
                raw = legacy.read_bytes()
                digest = hashlib.sha256(raw).hexdigest()
                if done is not None and done[0] != digest:
                    raise FederationError(
                        f"{legacy} changed after it was imported into {self.path}; "
                        "its new charges would be lost. Reconcile it by hand.",
                        code="LEGACY_PRIVACY_LEDGER",
                    )
                if done is None:
                    if conn.execute(
                        "SELECT 1 FROM jobs UNION ALL SELECT 1 FROM merchants LIMIT 1"
                    ).fetchone():
                        raise FederationError(
                            f"{legacy} (a JSON privacy ledger) lies beside {self.path}, "
                            "which already holds accounting; refusing to merge them by guess.",
                            code="LEGACY_PRIVACY_LEDGER",
                        )
                    _import_state(conn, json.loads(raw))
                    del raw
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('legacy_json_sha256', ?)",
                        (digest,),
                    )
        with suppress(FileNotFoundError):  # another process imported and renamed it
            os.replace(legacy, legacy.with_name(legacy.name + ".imported"))

    # -- queries --------------------------------------------------------------------------
    def job_history(self, job_id: str, stream: str = "train") -> list[HistoryEntry]:
        """The job's RDP history at this node (``stream``: ``train`` or ``eval``)."""
        _STREAMS[stream]  # KeyError on an unknown stream, as before
        with self._reading() as conn:
            return _history(conn, job_id, stream)

    def job_epsilon(self, job_id: str, delta: float) -> float:
        """ε the job has spent at this node so far."""
        return epsilon_of(self.job_history(job_id), delta)

    def merchant_spent(self, merchant_id: str) -> float:
        """The merchant's lifetime ε charged at this node."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT epsilon FROM merchants WHERE merchant_id = ?", (merchant_id,)
            ).fetchone()
        return float(row[0]) if row else 0.0

    def check(self, *, job_id: str, budget: DPBudget, merchant_ids: Iterable[str]) -> BudgetCheck:
        """Would training ``merchant_ids`` in ``job_id`` fit both budgets? Pure read."""
        with self._reading() as conn:
            return _check(conn, job_id=job_id, budget=budget, merchant_ids=merchant_ids)

    # -- updates --------------------------------------------------------------------------
    def reserve(self, *, job_id: str, budget: DPBudget, merchant_ids: Iterable[str]) -> None:
        """Charge the job's ε to every merchant new to the job, or refuse the whole lot.

        Raises
        ------
        BudgetExceeded
            Nothing is charged when any merchant or the job would overrun.
        """
        ids = _unique_sorted(merchant_ids)
        with self._writing() as conn:
            result = _check(conn, job_id=job_id, budget=budget, merchant_ids=ids)
            if not result.ok:
                raise BudgetExceeded(result.reason)
            conn.execute(
                "INSERT OR IGNORE INTO jobs (job_id, epsilon, delta) VALUES (?, ?, ?)",
                (job_id, budget.epsilon, budget.delta),
            )
            for chunk in _chunks(ids):
                spent, charged, _ = _chunk_state(conn, job_id, chunk)
                _charge(
                    conn,
                    job_id,
                    [
                        (mid, spent.get(mid, 0.0) + budget.epsilon)
                        for mid in chunk
                        if mid not in charged
                    ],
                )

    def record(
        self, job_id: str, steps: Sequence[HistoryEntry], streams: Sequence[str] = ("train",)
    ) -> float:
        """Append releases to the job's history; returns the job's ε after them.

        ``streams``: ``train`` (DP-SGD on the training merchants), ``eval`` (metrics
        of the held-out merchants, a disjoint set), or both (a sketch covers every
        merchant). The job's ε is the larger of the two streams' (parallel composition).

        Raises
        ------
        KeyError
            The job was never reserved or admitted at this node (nothing is written).
        """
        rows = [(float(s), float(q), int(n)) for s, q, n in steps]
        with self._writing() as conn:
            job = conn.execute("SELECT delta FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if job is None:
                raise KeyError(job_id)
            for stream in streams:
                _STREAMS[stream]  # KeyError on an unknown stream
                (start,) = conn.execute(
                    "SELECT COALESCE(MAX(seq) + 1, 0) FROM history WHERE job_id = ? AND stream = ?",
                    (job_id, stream),
                ).fetchone()
                conn.executemany(
                    "INSERT INTO history (job_id, stream, seq, sigma, q, steps) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(job_id, stream, start + i, *row) for i, row in enumerate(rows)],
                )
            delta = float(job[0])
            histories = [_history(conn, job_id, s) for s in _STREAMS]
        return max(epsilon_of(hist, delta) for hist in histories)

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
        writes nothing (it reads the rise's exclusions for ``merchant_ids`` only).

        Returns
        -------
        tuple[list[str], list[str]]
            The merchants admitted (sorted) and those left out.

        Raises
        ------
        BudgetExceeded
            The job has spent its ε (nothing is charged).
        """
        ids = _unique_sorted(merchant_ids)
        with self._reading() if dry_run else self._writing() as conn:
            job = conn.execute("SELECT epsilon FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            job_epsilon = float(job[0]) if job else float(budget.epsilon)
            if job is None and not dry_run:
                conn.execute(
                    "INSERT INTO jobs (job_id, epsilon, delta) VALUES (?, ?, ?)",
                    (job_id, budget.epsilon, budget.delta),
                )
            spent = max(epsilon_of(_history(conn, job_id, s), budget.delta) for s in _STREAMS)
            if spent >= budget.epsilon:
                raise BudgetExceeded(f"job {job_id} has spent its ε={budget.epsilon}")
            rise = budget.epsilon - job_epsilon
            rising = rise > _EPS_SLACK
            if rising:
                if not dry_run:
                    _charge_rise(conn, job_id, rise, lifetime_epsilon)
                    conn.execute(
                        "UPDATE jobs SET epsilon = ? WHERE job_id = ?", (budget.epsilon, job_id)
                    )
                job_epsilon = budget.epsilon
            job_eps = max(job_epsilon, budget.epsilon)
            admitted: list[str] = []
            left_out: list[str] = []
            for chunk in _chunks(ids):
                eps, charged, excluded = _chunk_state(conn, job_id, chunk)
                new: list[tuple[str, float]] = []
                for mid in chunk:
                    if mid in excluded:
                        left_out.append(mid)
                        continue
                    if mid not in charged:
                        m_eps = eps.get(mid, 0.0)
                        if m_eps + job_eps > lifetime_epsilon + _EPS_SLACK:
                            left_out.append(mid)
                            continue
                        new.append((mid, m_eps + job_eps))
                    elif dry_run and rising and (
                        eps.get(mid, 0.0) + rise > lifetime_epsilon + _EPS_SLACK
                    ):
                        left_out.append(mid)  # the rise would exclude it (written only for real)
                        continue
                    admitted.append(mid)
                if not dry_run:
                    _charge(conn, job_id, new)
        return admitted, left_out

    def summary(self) -> LedgerSummary:
        """Each job's ε spent (its training releases, at its δ), merchants charged, the largest ε.

        Aggregates in SQL: memory is O(jobs), not O(merchants).
        """
        with self._reading() as conn:
            jobs = conn.execute("SELECT job_id, delta FROM jobs ORDER BY job_id").fetchall()
            job_eps = {j: epsilon_of(_history(conn, j, "train"), float(d)) for j, d in jobs}
            count, worst = conn.execute(
                "SELECT COUNT(*), COALESCE(MAX(epsilon), 0.0) FROM merchants WHERE epsilon > 0"
            ).fetchone()
        return LedgerSummary(job_eps, int(count), float(worst))

    def jobs_of(self, merchant_id: str) -> list[str]:
        """The jobs whose releases were charged to ``merchant_id`` at this node (lineage)."""
        with self._reading() as conn:
            return [
                r[0]
                for r in conn.execute(
                    "SELECT job_id FROM charges WHERE merchant_id = ? ORDER BY seq", (merchant_id,)
                )
            ]


def _unique_sorted(ids: Iterable[str]) -> list[str]:
    """``sorted(set(ids))`` without the set (a hash table of every id: ~32 MiB per 10⁶)."""
    out = sorted(ids)
    kept = 0
    for mid in out:  # drop adjacent duplicates in place
        if kept == 0 or mid != out[kept - 1]:
            out[kept] = mid
            kept += 1
    del out[kept:]
    return out


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    """``items`` in slices of :data:`CHUNK`."""
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _history(conn: sqlite3.Connection, job_id: str, stream: str) -> list[HistoryEntry]:
    return [
        (float(s), float(q), int(n))
        for s, q, n in conn.execute(
            "SELECT sigma, q, steps FROM history WHERE job_id = ? AND stream = ? ORDER BY seq",
            (job_id, stream),
        )
    ]


def _chunk_state(
    conn: sqlite3.Connection, job_id: str, chunk: Sequence[str]
) -> tuple[dict[str, float], set[str], set[str]]:
    """For ≤ :data:`CHUNK` merchants: their lifetime ε here, and which the job charged/excluded."""
    marks = ",".join("?" * len(chunk))
    eps = {
        mid: float(e)
        for mid, e in conn.execute(
            f"SELECT merchant_id, epsilon FROM merchants WHERE merchant_id IN ({marks})", chunk
        )
    }
    charged = {
        r[0]
        for r in conn.execute(
            f"SELECT merchant_id FROM charges WHERE job_id = ? AND merchant_id IN ({marks})",
            (job_id, *chunk),
        )
    }
    excluded = {
        r[0]
        for r in conn.execute(
            f"SELECT merchant_id FROM exclusions WHERE job_id = ? AND merchant_id IN ({marks})",
            (job_id, *chunk),
        )
    }
    return eps, charged, excluded


def _charge(conn: sqlite3.Connection, job_id: str, rows: Sequence[tuple[str, float]]) -> None:
    """Set each merchant's new lifetime ε and record the job's charge to it."""
    conn.executemany(
        "INSERT INTO merchants (merchant_id, epsilon) VALUES (?, ?) "
        "ON CONFLICT (merchant_id) DO UPDATE SET epsilon = excluded.epsilon",
        rows,
    )
    conn.executemany(
        "INSERT INTO charges (job_id, merchant_id) VALUES (?, ?)",
        [(job_id, mid) for mid, _ in rows],
    )


def _charge_rise(
    conn: sqlite3.Connection, job_id: str, rise: float, lifetime_epsilon: float
) -> None:
    """Charge ``rise`` to every merchant the job charged and did not exclude, or exclude it.

    Walks the job's charges in merchant order, :data:`CHUNK` at a time (keyset
    pagination, so updating while walking is safe and memory stays O(chunk)).
    """
    sql = (
        "SELECT c.merchant_id, m.epsilon FROM charges c "
        "JOIN merchants m ON m.merchant_id = c.merchant_id WHERE c.job_id = ? {after}"
        "AND NOT EXISTS (SELECT 1 FROM exclusions e "
        "WHERE e.job_id = c.job_id AND e.merchant_id = c.merchant_id) "
        "ORDER BY c.merchant_id LIMIT ?"
    )
    rows = conn.execute(sql.format(after=""), (job_id, CHUNK)).fetchall()
    while rows:
        out = [(job_id, mid) for mid, e in rows if float(e) + rise > lifetime_epsilon + _EPS_SLACK]
        gone = {mid for _, mid in out}
        conn.executemany("INSERT INTO exclusions (job_id, merchant_id) VALUES (?, ?)", out)
        conn.executemany(
            "UPDATE merchants SET epsilon = ? WHERE merchant_id = ?",
            [(float(e) + rise, mid) for mid, e in rows if mid not in gone],
        )
        rows = conn.execute(
            sql.format(after="AND c.merchant_id > ? "), (job_id, rows[-1][0], CHUNK)
        ).fetchall()


def _import_state(conn: sqlite3.Connection, state: dict[str, Any]) -> None:
    """Copy an earlier version's JSON ledger (``{"jobs": …, "merchants": …}``) into ``conn``.

    A merchant's jobs are inserted in its list's order, so :meth:`PrivacyLedger.jobs_of`
    keeps the order; a job's own ``merchants`` list is added too (the charged set).
    """
    jobs: dict[str, Any] = state.get("jobs", {})
    for job_id, job in jobs.items():
        conn.execute(
            "INSERT INTO jobs (job_id, epsilon, delta) VALUES (?, ?, ?)",
            (job_id, float(job["epsilon"]), float(job["delta"])),
        )
        for stream, key in _STREAMS.items():
            conn.executemany(
                "INSERT INTO history (job_id, stream, seq, sigma, q, steps) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (job_id, stream, i, float(s), float(q), int(n))
                    for i, (s, q, n) in enumerate(job.get(key, []))
                ],
            )
        conn.executemany(
            "INSERT OR IGNORE INTO exclusions (job_id, merchant_id) VALUES (?, ?)",
            ((job_id, mid) for mid in job.get("excluded", [])),
        )
    merchants: dict[str, Any] = state.get("merchants", {})
    conn.executemany(
        "INSERT INTO merchants (merchant_id, epsilon) VALUES (?, ?)",
        ((mid, float(m["epsilon"])) for mid, m in merchants.items()),
    )
    conn.executemany(
        "INSERT OR IGNORE INTO charges (job_id, merchant_id) VALUES (?, ?)",
        ((job_id, mid) for mid, m in merchants.items() for job_id in m.get("jobs", [])),
    )
    for job_id, job in jobs.items():
        conn.executemany(
            "INSERT OR IGNORE INTO charges (job_id, merchant_id) VALUES (?, ?)",
            ((job_id, mid) for mid in job.get("merchants", [])),
        )


def _check(
    conn: sqlite3.Connection, *, job_id: str, budget: DPBudget, merchant_ids: Iterable[str]
) -> BudgetCheck:
    job = conn.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    spent = epsilon_of(_history(conn, job_id, "train"), budget.delta) if job else 0.0
    if spent >= budget.epsilon:
        return BudgetCheck(False, spent, (), f"job {job_id} has spent its ε={budget.epsilon}")
    over: list[str] = []
    for chunk in _chunks(_unique_sorted(merchant_ids)):
        eps, charged, _ = _chunk_state(conn, job_id, chunk)
        over.extend(
            mid
            for mid in chunk
            if mid not in charged
            and eps.get(mid, 0.0) + budget.epsilon > budget.lifetime_epsilon + 1e-12
        )
    if over:
        return BudgetCheck(
            False,
            spent,
            tuple(over),
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
