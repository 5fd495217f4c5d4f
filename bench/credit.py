"""Credit benchmarks: what ISV data is worth at equal exposure, and the money paths' throughput.

Run ``python -m bench.credit`` (a 20,000-merchant world; 10⁶ loan events and a
100,000-loan month close on SQLite and PostgreSQL; several minutes),
``python -m bench.credit --sections throughput`` for the throughput rows alone, or
``python -m bench.credit --merchants 3000 --loans 2000`` for a smoke run.
PostgreSQL comes from ``FEDGATE_BENCH_POSTGRES_URL`` (default the local ``test``
database, a private schema dropped afterwards); ``--no-postgres`` leaves it out.

**Economics.** On the synthetic world (known outcomes: each merchant's 12-month
default label is a draw from its true default propensity) the platform allots the
same total exposure twice: lines from ``f_platform`` alone, and lines from the
combiner with the ERP score. ``f`` is cross-fitted gradient boosting (as in the
demo); the ERP score is a cross-fitted logistic regression on the ERP features,
pooled — a stand-in for the federated ``g``, whose AUC the federation bench shows
within 0.005 of the pooled one. The with-ISV lines are scaled down (floored to whole
yuan) until their total is at most the f-only total. The same loan simulator (same
seed) runs both books for six months; income and losses come from
:func:`gateway.credit.accrue` over the simulated events (interest counts until a
merchant stops paying; a stopped merchant's balance at the end, written off or not,
is the loss). Net income = interest − losses − what the ISVs are paid (interest
shares at the default policy's 20 % of uplift interest, plus 0.50 yuan per
merchant-round for five training rounds and one scoring round).

**Throughput.** 100,000 merchants get line decisions, then the simulator's six
months for their loans (~1.1 × 10⁶ events) are imported with ``import_bytes`` (parse,
validate, idempotency check, bulk insert, one ledger entry) and the first month is
closed with ``close_period`` (100,000 active loans: accruals, one interest transfer
per loan, all through one :func:`ledger.post_many`, and the month's flows). Peers,
in the same run and database: a bare multi-row ``INSERT`` of the same rows into a
table with the same columns (no checks), and the month's accrual computed in memory
(no database). The close's accrual digest must be equal on SQLite, on PostgreSQL
and in memory, and a second import of the same file must add nothing, or the run fails.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    MetaData,
    String,
    Table,
    insert,
)
from sqlalchemy.orm import Session, sessionmaker

import ledger
from gateway import credit
from gateway.db import create_schema, make_engine, make_sessionmaker

from ._common import Row, add_exit_option, finish
from .ledger import _check_postgres, _postgres

DEFAULT_MERCHANTS = 20_000
DEFAULT_LOANS = 100_000
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
START = credit.Period("2026-01")
CUR = "CNY"
TRAIN_ROUNDS = 5


@dataclass(frozen=True, slots=True)
class Book:
    """One allotment's six months."""

    name: str
    exposure: int
    with_line: int
    newly_given: int
    drawn: int
    interest: int
    loss: int
    isv_cost: int

    @property
    def loss_rate(self) -> float:
        """Losses per yuan of exposure."""
        return self.loss / self.exposure if self.exposure else 0.0

    @property
    def net(self) -> int:
        """Interest − losses − ISV payouts."""
        return self.interest - self.loss - self.isv_cost


@dataclass(slots=True)
class Result:
    """Everything measured."""

    merchants: int
    books: list[Book] = field(default_factory=list)
    auc: dict[str, float] = field(default_factory=dict)
    throughput: list[Row] = field(default_factory=list)  # section: the database
    digests: dict[str, str] = field(default_factory=dict)
    full_size: bool = True


# -- economics ---------------------------------------------------------------------------


def _pds(
    merchants: int, seed: int
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict[str, float]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from federation.metrics import auc
    from federation.models import Combiner, out_of_fold_f_scores
    from federation.schema import AS_OF, ERP_FEATURES, LABEL
    from federation.synth import SynthParams, generate_world

    world = generate_world(SynthParams(merchants=merchants, isvs=5, seed=seed))
    platform = world.platform.reset_index(drop=True)
    y = platform[LABEL].to_numpy(int)
    with threadpool_limits(1):
        f = out_of_fold_f_scores(platform, y, kind="hgb", seed=seed)
    erp = pd.concat(world.erp.values()).sort_values(AS_OF).groupby("merchant_id").tail(1)
    erp = erp.set_index("merchant_id")
    ids = platform["merchant_id"].astype(str)
    has = ids.isin(erp.index).to_numpy()
    X = erp.loc[ids[has], list(ERP_FEATURES)].to_numpy(float)
    X = np.sign(X) * np.log1p(np.abs(X))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    g_has = cross_val_predict(model, X, y[has], cv=5, method="predict_proba")[:, 1]
    g = np.full(len(platform), np.nan)
    g[has] = g_has
    est = Combiner().fit(f, g, y).predict(f, g)
    aucs = {"f only": float(auc(y, est.platform_only)), "f + ERP": float(auc(y, est.with_erp))}
    return platform, est.platform_only, est.with_erp, aucs


def _book(
    name: str,
    platform: pd.DataFrame,
    lines: np.ndarray,
    line_f: np.ndarray,
    isv: np.ndarray,
    policy: credit.CreditPolicy,
    seed: int,
    isv_merchants: int,
) -> Book:
    """Six simulated months of one allotment, valued with :func:`gateway.credit.accrue`."""
    from federation.schema import LABEL

    ids = platform["merchant_id"].astype(str).tolist()
    sim = credit.simulate_loans(
        ids,
        lines.tolist(),
        platform[LABEL].astype(int).tolist(),
        start=START,
        seed=seed,
        currency=CUR,
    )
    sign = {"drawdown": 1, "repayment": -1, "write_off": -1, "recovery": 0}
    per_loan: dict[str, list[tuple[date, int, str]]] = defaultdict(list)
    for e in sim.events:
        per_loan[e["loan_id"]].append(
            (date.fromisoformat(e["date"]), sign[e["kind"]] * e["amount"], e["kind"])
        )
    stop = dict(zip(sim.loan_ids, sim.stop_month.tolist(), strict=True))
    idx = {f"L-{m}": i for i, m in enumerate(ids)}
    rate, share_bp = policy.pricing.rate_bp, policy.pricing.share_bp
    periods = [START]
    for _ in range(5):
        periods.append(periods[-1].next)
    interest = loss = shares = drawn = 0
    for loan, events in per_loan.items():
        i = idx[loan]
        uplift = int(lines[i]) - int(line_f[i]) if isv[i] else 0
        bal = 0
        for m, per in enumerate(periods):
            inside = [(d, a) for d, a, _ in events if per.first <= d <= per.last]
            _, _, inte, up, _ = credit.accrue(
                bal,
                inside,
                per.first,
                per.last,
                rate_bp=rate,
                line_f=int(line_f[i]),
                uplift=uplift,
            )
            bal += sum(a for _, a in inside)
            if stop[loan] < 0 or m < stop[loan]:  # interest is paid until the merchant stops
                interest += inte
                shares += up * share_bp // 10_000
        d_l = sum(a for _, a, k in events if k == "drawdown")
        drawn += d_l
        if stop[loan] >= 0:  # written off, or still owed by a merchant who stopped paying
            loss += d_l - sum(-a for _, a, k in events if k == "repayment")
    fees = isv_merchants * (TRAIN_ROUNDS + 1) * policy.pricing.fee_per_merchant_round
    return Book(
        name=name,
        exposure=int(lines.sum()),
        with_line=int((lines > 0).sum()),
        newly_given=int(((line_f == 0) & (lines > 0)).sum()),
        drawn=drawn,
        interest=interest,
        loss=loss,
        isv_cost=shares + (fees if isv.any() else 0),
    )


def economics(merchants: int, seed: int, result: Result) -> None:
    """The two allotments at equal exposure."""
    platform, pd_f, pd_w, aucs = _pds(merchants, seed)
    result.auc.update(aucs)
    policy = credit.parse_policy(credit.DEFAULT_POLICY_TOML)
    sales_3m = 3 * platform["sales"].to_numpy(np.int64)
    line_f = credit.line_amounts(policy.line, sales_3m, pd_f)
    has_isv = (platform["isv"].astype(str) != "").to_numpy()
    raw_w = credit.line_amounts(policy.line, sales_3m, np.where(has_isv, pd_w, pd_f))
    budget, total_w = int(line_f.sum()), int(raw_w.sum())
    # Scale the ISV-data lines to the same total: floor each to whole yuan (total ≤ budget).
    scaled = raw_w * budget // max(total_w, 1) if total_w > budget else raw_w.copy()
    line_w = scaled - scaled % 100
    line_w = np.where(line_w < policy.line.minimum, 0, line_w)
    none = np.zeros(len(platform), dtype=bool)
    result.books.append(_book("f only", platform, line_f, line_f, none, policy, seed, 0))
    result.books.append(
        _book("with ISV data", platform, line_w, line_f, has_isv, policy, seed, int(has_isv.sum()))
    )


# -- throughput --------------------------------------------------------------------------


@contextmanager
def _sqlite() -> Iterator[sessionmaker[Session]]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        create_schema(engine)
        try:
            yield make_sessionmaker(engine)
        finally:
            engine.dispose()


_PEER = MetaData()
_PEER_EVENTS = Table(
    "bench_peer_events",
    _PEER,
    Column("key", String(128), primary_key=True),
    Column("loan_id", String(128)),
    Column("kind", String(16)),
    Column("day", Date),
    Column("amount", BigInteger),
    Column("digest", String(64)),
    Column("import_id", String(64)),
)


def _loans_world(
    loans: int, seed: int
) -> tuple[list[credit.MerchantScores], list[dict[str, Any]], bytes]:
    rng = np.random.default_rng([seed, 3])
    ids = [f"b{i:07d}" for i in range(loans)]
    sales = rng.integers(50_000_00, 2_000_000_00, loans)
    pd_f = rng.uniform(0.005, 0.08, loans)
    pd_w = np.clip(pd_f + rng.normal(0, 0.02, loans), 0.001, 0.2)
    merchants = [
        credit.MerchantScores(
            merchant_id=m,
            sales_3m=int(s),
            pd_f=float(a),
            pd_with=float(b),
            isv_pd={f"isv{i % 5:02d}": float(b)},
        )
        for i, (m, s, a, b) in enumerate(zip(ids, sales, pd_f, pd_w, strict=True))
    ]
    pol = credit.parse_policy(credit.DEFAULT_POLICY_TOML)
    lines = credit.line_amounts(pol.line, sales, pd_w)
    lines = np.where(lines > 0, lines, 1_000_000)  # every merchant borrows in this bench
    defaults = (rng.random(loans) < 0.05).astype(int)
    sim = credit.simulate_loans(
        ids, lines.tolist(), defaults.tolist(), start=START, seed=seed, currency=CUR
    )
    return merchants, sim.events, credit.events_as_jsonl(sim.events)


def _memory_close(events: list[dict[str, Any]], lines: dict[str, tuple[int, int]]) -> str:
    """The first month's accrual digest, computed without a database (the peer)."""
    sign = {"drawdown": 1, "repayment": -1, "write_off": -1, "recovery": 0}
    moves: dict[str, list[tuple[date, int]]] = defaultdict(list)
    written: set[str] = set()
    for e in events:
        day = date.fromisoformat(e["date"])
        if START.first <= day <= START.last:
            moves[e["loan_id"]].append((day, sign[e["kind"]] * e["amount"]))
            if e["kind"] == "write_off":
                written.add(e["loan_id"])
    out = []
    for loan in sorted(moves):
        line_f, uplift = lines[loan]
        bd, ubd, i, u, c = credit.accrue(
            0, moves[loan], START.first, START.last, rate_bp=1800, line_f=line_f, uplift=uplift
        )
        # First month: no interest due, none paid; a write-off that leaves no principal
        # writes the month's interest off with it.
        wo = i if loan in written and c == 0 else 0
        out.append(f"{loan},{START},{bd},{ubd},{i},{u},{c},0,{wo}")
    return hashlib.sha256("\n".join(out).encode()).hexdigest()


def throughput(
    name: str, factory: sessionmaker[Session], loans: int, seed: int, result: Result
) -> None:
    """Decide, import, re-import, close; the raw-insert peer in the same database."""
    merchants, events, data = _loans_world(loans, seed)
    with factory() as s, s.begin():
        version, pol = credit.current_policy(s)
        credit.open_credit_chart(s, CUR)
        ledger.post_transfer(
            s,
            ledger.TransferRequest(
                "bench:equity", ledger.PLATFORM_CASH, ledger.EQUITY, ledger.Money(10**15, CUR)
            ),
        )
        decisions = credit.decide_lines(s, version, pol, merchants, models={"f": "b", "g": "b"})
    t0 = time.perf_counter()
    with factory() as s, s.begin():
        summary = credit.import_bytes(
            s, data, fmt="jsonl", source="bench.jsonl", default_rate_bp=1800, currency=CUR
        )
    t_import = time.perf_counter() - t0
    with factory() as s, s.begin():
        again = credit.import_bytes(
            s, data, fmt="jsonl", source="bench.jsonl", default_rate_bp=1800, currency=CUR
        )
    if summary.added != len(events) or not again.already_imported:
        raise SystemExit(f"{name}: import added {summary.added} of {len(events)}; repeat {again}")
    rows = [
        {
            "key": e["key"],
            "loan_id": e["loan_id"],
            "kind": e["kind"],
            "day": date.fromisoformat(e["date"]),
            "amount": e["amount"],
            "digest": "0" * 64,
            "import_id": "peer",
        }
        for e in events
    ]
    engine = factory.kw["bind"]
    _PEER.create_all(engine)
    t0 = time.perf_counter()
    with factory() as s, s.begin():
        for start in range(0, len(rows), 20_000):
            s.execute(insert(_PEER_EVENTS), rows[start : start + 20_000])
    t_peer = time.perf_counter() - t0
    t0 = time.perf_counter()
    with factory() as s, s.begin():
        close = credit.close_period(s, START, currency=CUR, policy_version=version)
    t_close = time.perf_counter() - t0
    lines = {f"L-{d.merchant_id}": (d.line_f, d.line_with - d.line_f) for d in decisions}
    t0 = time.perf_counter()
    digest = _memory_close(events, lines)
    t_mem = time.perf_counter() - t0
    if close.accruals_digest != digest:
        raise SystemExit(f"{name}: close digest {close.accruals_digest} != in-memory {digest}")
    result.digests[name] = digest
    n = len(events)
    result.throughput.append(
        _throughput_row(f"import {n:,} loan events", name, t_import, t_peer,
                        "bare multi-row INSERT, no checks", full_size=result.full_size)
    )
    result.throughput.append(
        _throughput_row(f"close a month, {close.loans:,} active loans", name, t_close, t_mem,
                        "accrual in memory, no database", full_size=result.full_size)
    )


SECTIONS = ("economics", "throughput")


def run(
    merchants: int,
    loans: int,
    *,
    seed: int = 0,
    pg_url: str | None = DEFAULT_PG_URL,
    sections: tuple[str, ...] = SECTIONS,
) -> Result:
    """Economics on ``merchants``; throughput with ``loans`` loans on SQLite and PostgreSQL."""
    if pg_url is not None and "throughput" in sections:
        _check_postgres(pg_url)
    result = Result(merchants=merchants, full_size=loans >= DEFAULT_LOANS)
    if "economics" in sections:
        economics(merchants, seed, result)
    if "throughput" not in sections:
        return result
    with _sqlite() as factory:
        throughput("SQLite", factory, loans, seed, result)
    if pg_url is not None:
        with _postgres(pg_url) as factory:
            throughput("PostgreSQL", factory, loans, seed, result)
    if len(set(result.digests.values())) > 1:
        raise SystemExit(f"accrual digests differ between databases: {result.digests}")
    return result


def _throughput_row(
    metric: str, db: str, seconds: float, peer: float, peer_is: str, *, full_size: bool
) -> Row:
    """A throughput row: fedgate's seconds against the peer's, target ≤ 60 s at full size."""
    if not full_size:  # the target is for 10⁶ events and 10⁵ loans; a smaller run shows ratios
        return Row(metric, seconds, "s", peer_is, peer, "(≤ 60 s at 10⁵ loans)", None, db, "ratio")
    return Row(metric, seconds, "s", peer_is, peer, "≤ 60 s", seconds <= 60, db, "ratio")


def _render_economics(r: Result) -> list[str]:
    f, w = r.books
    out = [
        f"Economics: {r.merchants:,} merchants, 5 ISVs, six simulated months; AUC f only "
        f"{r.auc['f only']:.4f}, f + ERP {r.auc['f + ERP']:.4f}",
        "",
        "| at equal exposure | f only | with ISV data | change |",
        "|---|---:|---:|---:|",
    ]

    def yuan(x: int) -> str:
        return f"{x / 100:,.0f}"

    rows = [
        (
            "total line (yuan)",
            yuan(f.exposure),
            yuan(w.exposure),
            f"{(w.exposure - f.exposure) / max(f.exposure, 1):+.2%}",
        ),
        (
            "merchants with a line",
            f"{f.with_line:,}",
            f"{w.with_line:,}",
            f"{w.with_line - f.with_line:+,}",
        ),
        ("merchants newly given a line", "—", f"{w.newly_given:,}", ""),
        ("drawn over six months (yuan)", yuan(f.drawn), yuan(w.drawn), ""),
        (
            "loss rate (losses / exposure)",
            f"{f.loss_rate:.2%}",
            f"{w.loss_rate:.2%}",
            f"{(w.loss_rate - f.loss_rate) * 100:+.2f} pt",
        ),
        (
            "interest income (yuan)",
            yuan(f.interest),
            yuan(w.interest),
            f"{(w.interest - f.interest) / max(f.interest, 1):+.1%}",
        ),
        ("paid to ISVs: fees + shares (yuan)", "0", yuan(w.isv_cost), ""),
        (
            "net income (yuan)",
            yuan(f.net),
            yuan(w.net),
            f"{(w.net - f.net) / max(abs(f.net), 1):+.1%}",
        ),
    ]
    return [*out, *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows), ""]


def render(r: Result) -> str:
    """The README tables (those of the sections that ran)."""
    out = _render_economics(r) if r.books else []
    if not r.throughput:
        return "\n".join(out)
    out += [
        "| throughput | database | fedgate | peer | peer is | fedgate ÷ peer | target |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for row in r.throughput:
        mark = {True: "✔", False: "✘", None: ""}[row.met]
        out.append(
            f"| {row.metric} | {row.section} | {row.value:.1f} s | {row.peer_value:.1f} s "
            f"| {row.peer} | {row.versus:.1f}× | {row.target} {mark} |"
        )
    out.append("")
    out.append(f"accrual digest (equal everywhere): {next(iter(r.digests.values()))[:16]}…")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(prog="python -m bench.credit", description=__doc__.splitlines()[0])
    ap.add_argument("--merchants", type=int, default=DEFAULT_MERCHANTS)
    ap.add_argument("--loans", type=int, default=DEFAULT_LOANS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {', '.join(SECTIONS)} (default all)",
    )
    add_exit_option(ap)
    args = ap.parse_args(argv)
    sections = tuple(x.strip() for x in args.sections.split(",") if x.strip())
    if not sections or set(sections) - set(SECTIONS):
        ap.error(f"--sections takes a comma-separated subset of {', '.join(SECTIONS)}")
    url = None if args.no_postgres else os.environ.get("FEDGATE_BENCH_POSTGRES_URL", DEFAULT_PG_URL)
    started = time.perf_counter()
    print("load average at start (1/5/15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    result = run(args.merchants, args.loans, seed=args.seed, pg_url=url, sections=sections)
    print(render(result))
    print(f"\n(wall time {time.perf_counter() - started:.0f} s)")
    print("load average at end (1/5/15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return finish(result.throughput, no_fail=args.no_fail)


if __name__ == "__main__":
    sys.exit(main())
