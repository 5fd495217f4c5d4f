"""The demo's money loop: lines, six months of loans, monitoring, settlement (on the demo DB).

Called by :func:`gateway.demo.run_demo` after scoring. Everything goes through
:mod:`gateway.credit` in ordinary transactions; what is *simulated* is said so:

* loan behaviour comes from :func:`gateway.credit.simulate_loans` (outcomes from the
  world's default labels);
* the synthetic world has one ERP snapshot, so the monitoring signals of later
  months are simulated from the same ground truth: a merchant that stopped paying
  shows its ERP revenue down 50 % from that month and its gross margin down 15
  points from the next; a fake-trade merchant starts brushing in a random month
  (its shipping cost per order falls 35 % while orders shipped grow 30 %); a
  merchant that stopped paying is re-scored 10 points higher and keeps 20,000
  yuan in its payment account (what early collection can take). In month
  ``RESCORE_MONTH`` the PDs are real instead: one scoring job under
  ``post_loan_monitoring`` (:func:`gateway.credit.rescore_open_loans`) over the
  merchants with an open loan whose consent covers it, mapped to a PD by the
  origination combiner as stored (:func:`gateway.credit.save_combiner`), and the ERP
  signals are real too: each ISV's ERP receives that month's snapshot (the simulated
  values written as a new row per merchant into the node's own ERP file, as the ISV's
  ERP would), and one ``erp-changes`` signals job under ``post_loan_monitoring``
  (:func:`gateway.credit.query_signals`) asks the nodes for each open-loan merchant's
  changes since the snapshot its line was decided on; the rules read the changes the
  nodes released, coarsened by their own policies, never the levels.
* off-platform merchants: 3 % of the ISV merchants are treated as having no platform
  sales; their PD is their ERP-only g score (the ``pd-erp`` job's, calibrated on the
  platform's labels: training the ``pd-erp-only`` spec too would double the demo's
  federated time) and their line base is the ERP-reported turnover as the nodes release
  it: one ``revenue-3m`` signals job under ``credit_scoring`` for those merchants, three
  months of revenue rounded down to each node's granularity (``revenue=None``: read
  from the world's ERP tables instead). A merchant no node released gets no line.
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import ledger

from . import credit

__all__ = ["MonthResult", "MoneyReport", "run_money_loop", "OFF_PLATFORM_SHARE"]

OFF_PLATFORM_SHARE = 0.03
MONTHS = 6
RESCORE_MONTH = 2
"""The month whose monitoring pass reads a real re-scoring job and a real ERP signals job
(the others simulate PDs and ERP values)."""
SIGNALS = ("gross_margin", "monthly_revenue", "shipping_cost_per_order", "orders_shipped")
STOPPED_ACCOUNT = 2_000_000
"""Fen left in the payment account of a merchant that stopped paying (early collection takes it)."""
MONITOR_PAUSED_EVERY = 10
"""Every 10th loan merchant pauses its consent (all purposes) before month 4."""


@dataclass(frozen=True, slots=True)
class MonthResult:
    """One simulated month after monitoring and settlement."""

    period: str
    loans: int
    interest: int
    uplift_interest: int
    fees: Mapping[str, int]
    shares: Mapping[str, int]
    alerts: Mapping[str, int]
    ties_to_book: bool


@dataclass(frozen=True, slots=True)
class MoneyReport:
    """What the money loop decided, lent, caught and paid."""

    policy_version: int
    policy_sha256: str
    merchants: int
    off_platform: int
    raised: int
    lowered: int
    unchanged: int
    newly_given: int
    scores_gated: int
    exposure_f: int
    exposure_with: int
    uplifts: tuple[int, ...]
    loans: int
    events: int
    import_repeat_added: int
    months: tuple[MonthResult, ...]
    alerts_by_rule: Mapping[str, int]
    actions: Mapping[str, int]
    fake_trade_loans: int
    fake_trade_caught: int
    fake_trade_alerts: int
    write_offs: int
    written_off: int
    collected: int
    paused_monitoring: int
    rescored: int
    signals_released: int
    revenue_released: int
    fees_total: Mapping[str, int]
    shares_total: Mapping[str, int]
    settled_cleared: Mapping[str, int]
    clawbacks: Mapping[str, int]
    """Shares clawed back per ISV (on interest written off), over the six months."""
    netted: Mapping[str, int]
    """Claw-backs netted against each ISV's payouts (the rest is carried forward)."""
    balanced: bool
    ties_to_book: bool
    stage_seconds: Mapping[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Book balanced, every statement ties to the book, every payout cleared.

        An ISV is due its fees and shares less the claw-backs netted against them
        (``cleared + netted = fees + shares``); netted never exceeds what was clawed back.
        """
        isvs = set(self.settled_cleared) | set(self.fees_total) | set(self.shares_total)
        return (
            self.balanced
            and self.ties_to_book
            and all(
                self.settled_cleared.get(k, 0) + self.netted.get(k, 0)
                == self.fees_total.get(k, 0) + self.shares_total.get(k, 0)
                and 0 <= self.netted.get(k, 0) <= self.clawbacks.get(k, 0)
                for k in isvs
            )
        )


def _periods(today: date) -> list[credit.Period]:
    """The six months ending with the current one (receipts are dated now)."""
    y, m = today.year, today.month
    out = []
    for k in range(MONTHS - 1, -1, -1):
        mm = m - k
        yy = y + (mm - 1) // 12
        mm = (mm - 1) % 12 + 1
        out.append(credit.Period(f"{yy:04d}-{mm:02d}"))
    return out


def _off_platform(ids: list[str], seed: int) -> set[str]:
    return {m for m in ids if zlib.crc32(f"{seed}:{m}".encode()) % 1000 < OFF_PLATFORM_SHARE * 1000}


def run_money_loop(
    sessions: Any,
    *,
    platform: pd.DataFrame,
    erp: Mapping[str, pd.DataFrame],
    g_scores: pd.DataFrame,
    consent_key: Any,
    consumer: str,
    categories: tuple[str, ...],
    g_version: str,
    out_dir: Path,
    seed: int,
    stage: Callable[[str, int], Any],
    advance: Callable[[Any, int], None],
    pause: Callable[[Any, str], bool],
    rescore: Callable[[list[str]], pd.DataFrame] | None = None,
    erp_month: Callable[[Mapping[str, pd.DataFrame]], None] | None = None,
    signals: Callable[[list[str], date, date], credit.SignalRelease] | None = None,
    revenue: Callable[[list[str], date], credit.SignalRelease] | None = None,
) -> MoneyReport:
    """Run the loop; ``stage``/``advance`` draw progress; ``pause(session, merchant)`` pauses a
    merchant's consent and says whether it could (a revoked one cannot).

    ``erp_month(rows)`` appends a month's snapshot rows to each ISV's ERP table and
    ``signals(merchants, as_of, since)`` runs the ``erp-changes`` job; with both, month
    :data:`RESCORE_MONTH`'s ERP rules read the nodes' release. ``revenue(merchants,
    as_of)`` runs the ``revenue-3m`` job that gives off-platform merchants their line base.
    """
    from federation.schema import AS_OF, FAKE_LABEL, LABEL

    secs: dict[str, float] = {}
    now = datetime.now(UTC)
    periods = _periods(now.date())
    ids = platform["merchant_id"].astype(str).tolist()
    isv_of = {m: isv for isv, f in erp.items() for m in f["merchant_id"].astype(str)}
    off = _off_platform([m for m in ids if m in isv_of], seed)
    labels = dict(zip(ids, platform[LABEL].astype(int), strict=True))
    fake = dict(zip(ids, platform[FAKE_LABEL].astype(int), strict=True))
    latest = {
        isv: f.sort_values(AS_OF).groupby("merchant_id").tail(1).set_index("merchant_id")
        for isv, f in erp.items()
    }

    # -- lines -------------------------------------------------------------------------
    with stage("credit lines (f only, f + consented ERP score)", 1) as task:
        with sessions() as s, s.begin():
            version, pol = credit.current_policy(s)
            credit.open_credit_chart(s, pol.currency)
            ledger.post_transfer(
                s,
                ledger.TransferRequest(
                    "demo:equity",
                    ledger.PLATFORM_CASH,
                    ledger.EQUITY,
                    ledger.Money(10**13, pol.currency),
                    {"what": "platform capital for lending"},
                ),
            )
            pairs = {
                (str(m), str(k))
                for m, k in zip(g_scores["merchant_id"], g_scores["isv_id"], strict=True)
            }
            allowed = credit.covering_consents(
                s,
                pairs,
                purpose=credit.SCORING_PURPOSE,
                categories=categories,
                consumer=consumer,
                at=now,
                consent_manager_key=consent_key,
            )
        gated = credit.consented_scores(g_scores, allowed)
        on = platform[~platform["merchant_id"].astype(str).isin(off)].reset_index(drop=True)
        pds = credit.platform_pds(on, on[LABEL].to_numpy(), gated, seed=seed)
        merchants = credit.merchant_scores(
            pds, on["sales"].to_numpy(), lambda m, k: allowed.get((m, k))
        )
        g_map = {str(m): float(g) for m, g in zip(gated["merchant_id"], gated["g"], strict=True)}
        cal_ids = [m for m in on["merchant_id"].astype(str) if m in g_map]
        off_ids = sorted(m for m in off if m in g_map)
        base_3m = {m: 3 * int(latest[isv_of[m]].loc[m, "monthly_revenue"]) for m in off_ids}
        if revenue is not None and off_ids:
            # The line base as the nodes release it: 3 months of ERP revenue, floored.
            rel = revenue(off_ids, now.date()).frame
            rel = rel[rel["signal"] == "revenue_3m"].drop_duplicates("merchant_id")
            base_3m = {str(m): int(v) for m, v in zip(rel["merchant_id"], rel["value"],
                                                      strict=True)}  # fmt: skip
        revenue_released = len(base_3m) if revenue is not None else 0
        off_rows = pd.DataFrame(
            [
                {
                    "merchant_id": m,
                    "isv_id": isv_of[m],
                    "g": g_map[m],
                    # offplatform_scores takes a monthly figure (× 3): a released base
                    # loses at most 2 fen more to this division.
                    "monthly_revenue": base_3m[m] // 3,
                }
                for m in off_ids
                if m in base_3m
            ],
            columns=["merchant_id", "isv_id", "g", "monthly_revenue"],
        )
        if len(off_rows):
            merchants += credit.offplatform_scores(
                off_rows,
                (np.asarray([g_map[m] for m in cal_ids]), np.asarray([labels[m] for m in cal_ids])),
                lambda m, k: allowed.get((m, k)),
            )
        with sessions() as s, s.begin():
            # Stored with its hash in the ledger, as `fedgate credit decide` does, so a later
            # `fedgate monitor run --rescore` maps g to a PD the same way.
            stored = credit.save_combiner(
                s, out_dir / credit.COMBINER_SUBDIR, pds.combiner, pds.merchant_id, pds.f_scores
            )
            decisions = credit.decide_lines(
                s,
                version,
                pol,
                merchants,
                models={
                    "f": f"hgb-oof-seed{seed}",
                    "g": g_version,
                    "combiner": stored.model_id,
                    "g_only": f"{g_version}+calibration",
                },
            )
        advance(task, 1)

    # -- loans -------------------------------------------------------------------------
    with stage("six months of loans (simulated)", 1) as task:
        lent = [d for d in decisions if d.line_with > 0]
        sim = credit.simulate_loans(
            [d.merchant_id for d in lent],
            [d.line_with for d in lent],
            [labels[d.merchant_id] for d in lent],
            start=periods[0],
            months=MONTHS,
            seed=seed,
            currency=pol.currency,
        )
        data = credit.events_as_jsonl(sim.events)
        path = out_dir / "loan-events.jsonl"
        path.write_bytes(data)
        with sessions() as s, s.begin():
            credit.import_bytes(
                s,
                data,
                fmt="jsonl",
                source=path.name,
                default_rate_bp=pol.pricing.rate_bp,
                currency=pol.currency,
            )
        # The lending system resends the file: a no-op.
        with sessions() as s, s.begin():
            repeat = credit.import_bytes(
                s,
                data,
                fmt="jsonl",
                source=path.name,
                default_rate_bp=pol.pricing.rate_bp,
                currency=pol.currency,
            )
        advance(task, 1)
    stop = dict(zip([f"L-{d.merchant_id}" for d in lent], sim.stop_month.tolist(), strict=True))
    rng = np.random.default_rng([seed, 11])
    brush_month = {m: int(rng.integers(0, MONTHS)) for m in ids if fake.get(m)}
    # The lines were decided on the world's snapshot: the node compares each later month
    # with a merchant's latest snapshot at or before that day.
    decided_on = max(pd.Timestamp(f[AS_OF].max()) for f in erp.values()).date()

    def simulated(m: str, k: int) -> tuple[dict[str, float], dict[str, float]]:
        """ERP signals at decision time and in month ``k`` (simulated from ground truth)."""
        row = latest[isv_of[m]].loc[m]
        then = {key: float(row[key]) for key in SIGNALS}
        now_s = dict(then)
        months_out = k - stop[f"L-{m}"] if stop[f"L-{m}"] >= 0 else -1
        if months_out >= 0:  # first the turnover falls, a month later the margin collapses
            now_s["monthly_revenue"] *= 0.5
            if months_out >= 1:
                now_s["gross_margin"] -= 0.15
        if m in brush_month and brush_month[m] <= k:
            now_s["shipping_cost_per_order"] *= 0.65
            now_s["orders_shipped"] *= 1.3
        return then, now_s

    def month_rows(k: int, day: date) -> dict[str, pd.DataFrame]:
        """Each ISV's snapshot of month ``k``: every merchant's latest row, dated ``day``,
        with the borrowers' simulated signals (money and counts as whole numbers)."""
        out = {}
        for isv, frame in latest.items():
            rows = frame.copy()
            for d in lent:
                if isv_of.get(d.merchant_id) == isv:
                    _, now_s = simulated(d.merchant_id, k)
                    for key, v in now_s.items():
                        rows.loc[d.merchant_id, key] = v if key == "gross_margin" else round(v)
            rows[AS_OF] = pd.Timestamp(day)
            out[isv] = rows.reset_index().astype(erp[isv].dtypes.to_dict())[list(erp[isv].columns)]
        return out

    # -- months: monitoring, then settlement --------------------------------------------
    months: list[MonthResult] = []
    rules: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    fake_caught: set[str] = set()
    fake_alerted: set[str] = set()
    paused: list[str] = []
    loan_merchants = sorted({d.merchant_id for d in lent if d.merchant_id in isv_of})
    rescored = 0
    released_n = 0
    with stage("monitoring + settlement, month by month", MONTHS) as task:
        for k, per in enumerate(periods):
            if k == 3:
                with sessions() as s, s.begin():
                    paused = [m for m in loan_merchants[::MONITOR_PAUSED_EVERY] if pause(s, m)]
            pd_rescored: dict[str, float] = {}
            released: dict[str, tuple[str, dict[str, float], dict[str, Any]]] | None = None
            if k == RESCORE_MONTH and (rescore is not None or signals is not None):
                with sessions() as s:
                    open_loans = credit.loan_positions(s, per.last, pol.monitoring.term_days)
                open_merchants = sorted(loan[2:] for loan in open_loans)  # loan ids: L-<merchant>
                if signals is not None and erp_month is not None:
                    erp_month(month_rows(k, per.last))  # the ISVs' ERPs receive the month
                if rescore is not None:
                    pd_rescored = stored.pds_now(rescore(open_merchants))
                    rescored = len(pd_rescored)
                if signals is not None and erp_month is not None:
                    release = signals(
                        [m for m in open_merchants if m in isv_of], per.last, decided_on
                    )
                    released = credit.erp_changes_by_merchant(release)
                    released_n = len(released)
            obs: dict[str, credit.Observation] = {}
            for d in lent:
                m = d.merchant_id
                isv = isv_of.get(m)
                stopped = 0 <= stop[f"L-{m}"] <= k
                pd0 = d.pd_with if d.pd_with is not None else d.pd_f
                then = now_s = None
                changes = source = None
                if released is not None:  # this month: what the nodes released, nothing else
                    if m in released:
                        _, changes, source = released[m]
                elif isv is not None:
                    then, now_s = simulated(m, k)
                pd_sim = None if pd0 is None else min(1.0, pd0 + (0.10 if stopped else 0.0))
                obs[m] = credit.Observation(
                    merchant_id=m,
                    pd_now=pd_rescored.get(m, pd_sim),
                    erp_then=then,
                    erp_now=now_s,
                    payment_balance=STOPPED_ACCOUNT if stopped else 10**9,
                    erp_changes=changes,
                    erp_source=source,
                )
            with sessions() as s, s.begin():
                allowed_m = credit.covering_consents(
                    s,
                    [(m, isv_of[m]) for m in loan_merchants],
                    purpose=credit.MONITORING_PURPOSE,
                    categories=credit.MONITORING_CATEGORIES,
                    consumer=consumer,
                    at=datetime.now(UTC),
                    consent_manager_key=consent_key,
                )
                rep = credit.monitor_pass(
                    s,
                    policy_version=version,
                    rules=pol.monitoring,
                    observations=obs,
                    consented={m for (m, _), c in allowed_m.items() if c},
                    as_of=per.last,
                    model_version=g_version,
                )
            month_alerts: Counter[str] = Counter()
            for a in rep.alerts:
                rules[a.rule] += 1
                month_alerts[a.rule] += 1
                if a.action != "none":
                    actions[a.action] += 1
                if a.rule == "fake_trade":
                    fake_alerted.add(a.merchant_id)
                    if fake.get(a.merchant_id):
                        fake_caught.add(a.merchant_id)
            with sessions() as s, s.begin():
                done = credit.settle_period(s, per, policy_version=version, policy=pol, clear=True)
                close = credit.close_period(s, per, currency=pol.currency, policy_version=version)
                ties = all(credit.statement(s, x.isv, per, pol)["ties_to_book"] for x in done)
            months.append(
                MonthResult(
                    period=str(per),
                    loans=close.loans,
                    interest=close.interest,
                    uplift_interest=close.uplift_interest,
                    fees={x.isv: x.fee for x in done},
                    shares={x.isv: x.share for x in done},
                    alerts=dict(month_alerts),
                    ties_to_book=ties,
                )
            )
            advance(task, 1)

    with sessions() as s:
        tb = ledger.trial_balance(s)
        written = ledger.balance(s, credit.CREDIT_LOSS).amount
        cleared: dict[str, int] = defaultdict(int)
        clawed: dict[str, int] = defaultdict(int)
        netted: dict[str, int] = defaultdict(int)
        for row in credit.settlements(s):
            cleared[row.isv] += int(row.cleared)
            clawed[row.isv] += int(row.clawback)
            netted[row.isv] += int(row.netted)
    fees: dict[str, int] = defaultdict(int)
    shares: dict[str, int] = defaultdict(int)
    for mo in months:
        for k, v in mo.fees.items():
            fees[k] += v
        for k, v in mo.shares.items():
            shares[k] += v
    fake_loans = {d.merchant_id for d in lent if fake.get(d.merchant_id)}
    return MoneyReport(
        policy_version=version,
        policy_sha256=pol.text_hash,
        merchants=len(decisions),
        off_platform=sum(1 for d in decisions if d.basis == "off-platform"),
        raised=sum(1 for d in decisions if d.uplift > 0),
        lowered=sum(1 for d in decisions if d.uplift < 0),
        unchanged=sum(1 for d in decisions if d.uplift == 0),
        newly_given=sum(1 for d in decisions if d.line_f == 0 and d.line_with > 0),
        scores_gated=len(g_scores) - len(gated),
        exposure_f=sum(d.line_f for d in decisions),
        exposure_with=sum(d.line_with for d in decisions),
        uplifts=tuple(d.uplift for d in decisions if d.basis == "platform" and d.uplift != 0),
        loans=len(sim.loan_ids),
        events=len(sim.events),
        import_repeat_added=repeat.added,
        months=tuple(months),
        alerts_by_rule=dict(rules),
        actions=dict(actions),
        fake_trade_loans=len(fake_loans),
        fake_trade_caught=len(fake_caught & fake_loans),
        fake_trade_alerts=len(fake_alerted),
        write_offs=sum(1 for e in sim.events if e["kind"] == "write_off"),
        written_off=written,
        collected=actions.get("early_collection", 0),
        paused_monitoring=len(paused),
        rescored=rescored,
        signals_released=released_n,
        revenue_released=revenue_released,
        fees_total=dict(fees),
        shares_total=dict(shares),
        settled_cleared=dict(cleared),
        clawbacks=dict(clawed),
        netted=dict(netted),
        balanced=tb.balanced,
        ties_to_book=all(mo.ties_to_book for mo in months),
        stage_seconds=secs,
    )
