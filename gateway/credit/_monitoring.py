"""Post-loan monitoring: rules over re-scored PDs, ERP signals and repayments; actions on loans.

Rules (thresholds in the policy's ``[monitoring]`` table), checked per open loan:

=====================  ==========================================================  ================
rule                   fires when                                                  action
=====================  ==========================================================  ================
``overdue``            the oldest unpaid drawdown (repayments settle drawdowns     early collection
                       first in, first out) is ``overdue_days`` past its
                       ``term_days`` term
``fake_trade``         ERP shipping cost per order fell by ``shipping_drop`` while  freeze
                       orders shipped grew by ``orders_rise``
``margin_collapse``    ERP gross margin fell by ``margin_drop`` (points)            freeze
``pd_rise``            re-scored PD exceeds the decision's PD by ``pd_rise``        reduce
``turnover_drop``      ERP revenue fell by ``turnover_drop`` (share)                reduce
=====================  ==========================================================  ================

Only ``overdue`` reads the platform's own loan book; the other four read data
about the merchant (a re-score, ERP signals) and apply only to merchants whose
consent covers ``post_loan_monitoring`` — the caller passes that set. The ERP
signals come one of two ways:

* **changes released by the node** (``Observation.erp_changes``, from a real
  ``erp-changes`` signals job, :func:`gateway.credit.query_signals`): the relative
  change of revenue, shipping cost per order and orders shipped, and the gross
  margin's change in points, each on the node's own grid; the levels never leave
  the node. The alert's inputs record the released changes and ``erp_source``
  (job id, node, ledger index of the node's signed receipt);
* values before and now (``erp_then`` / ``erp_now``, an operator's observations
  file or the demo's simulation), from which the same changes are computed.

With both, the node's changes win. The thresholds compare the same quantities
either way: ``shipping_drop``, ``orders_rise`` and ``turnover_drop`` are shares,
``margin_drop`` is in margin units (0.10 = 10 points).

Actions: *freeze* sets the loan's limit to its drawn balance (nothing more can be
drawn); *reduce* lowers the limit to ``reduce_to_bp`` of itself, never below the
drawn balance; *early collection* debits the merchant's platform payment account:
a ``repayment`` event (``collect:<loan>:<date>``) of ``min(balance, account)``.
Every alert is a ``credit.alert`` ledger entry (rule, inputs, model and policy
version) and every action a ``credit.action`` entry (before and after), in the
caller's transaction. A pass over the same inputs is a no-op.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict, deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

import ledger

from ._models import AlertRow, LineDecisionRow, LoanEventRow, LoanRow, PeriodCloseRow
from ._policy import BP, MonitoringRules

__all__ = [
    "ALERT_ENTRY",
    "ACTION_ENTRY",
    "Observation",
    "Alert",
    "MonitorReport",
    "loan_positions",
    "evaluate_rules",
    "monitor_pass",
]

ALERT_ENTRY = "credit.alert"
ACTION_ENTRY = "credit.action"
_ACTION = {
    "overdue": "early_collection",
    "fake_trade": "freeze",
    "margin_collapse": "freeze",
    "pd_rise": "reduce",
    "turnover_drop": "reduce",
}
SIGNALS = ("gross_margin", "monthly_revenue", "shipping_cost_per_order", "orders_shipped")


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """What a monitoring pass knows about one merchant.

    Parameters
    ----------
    merchant_id : str
    pd_now : float | None, default None
        The re-scored PD (None: not re-scored).
    erp_then, erp_now : Mapping[str, float] | None, default None
        ERP values (:data:`SIGNALS`) at decision time and now (an observations file).
    payment_balance : int, default 0
        Fen in the merchant's platform payment account (what early collection may take).
    erp_changes : Mapping[str, float] | None, default None
        The changes a node released (:data:`federation.signals.CHANGE_SIGNALS`:
        ``revenue_change``, ``shipping_cost_per_order_change``, ``orders_shipped_change``
        as shares, ``gross_margin_change_pt`` in points); wins over ``erp_then/now``.
    erp_source : Mapping[str, Any] | None, default None
        Where ``erp_changes`` came from (job id, node, receipt's ledger index).
    """

    merchant_id: str
    pd_now: float | None = None
    erp_then: Mapping[str, float] | None = None
    erp_now: Mapping[str, float] | None = None
    payment_balance: int = 0
    erp_changes: Mapping[str, float] | None = None
    erp_source: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    """One rule that fired on one loan, and the action taken."""

    merchant_id: str
    loan_id: str
    rule: str
    action: str
    inputs: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class MonitorReport:
    """One pass."""

    pass_id: str
    as_of: date
    loans_checked: int
    alerts: tuple[Alert, ...] = field(default_factory=tuple)
    already_run: bool = False

    def count(self, what: str) -> int:
        """Alerts whose rule or action is ``what``."""
        return sum(1 for a in self.alerts if what in (a.rule, a.action))


def loan_positions(session: Session, as_of: date, term_days: int) -> dict[str, tuple[int, int]]:
    """``loan → (drawn balance, days overdue)`` for loans with a positive balance on ``as_of``."""
    per: dict[str, list[tuple[date, str, int]]] = defaultdict(list)
    for loan, day, kind, amount in session.execute(
        select(LoanEventRow.loan_id, LoanEventRow.day, LoanEventRow.kind, LoanEventRow.amount)
        # A recovery is cash on written-off money: it moves no drawn balance.
        .where(LoanEventRow.day <= as_of, LoanEventRow.kind.notin_(("line_change", "recovery")))
        .order_by(LoanEventRow.loan_id, LoanEventRow.day, LoanEventRow.key)
    ):
        per[loan].append((day, kind, int(amount)))
    out: dict[str, tuple[int, int]] = {}
    for loan, events in per.items():
        unpaid: deque[list[Any]] = deque()
        for day, kind, amount in events:
            if kind == "drawdown":
                unpaid.append([day, amount])
                continue
            left = amount
            while left and unpaid:
                take = min(left, unpaid[0][1])
                unpaid[0][1] -= take
                left -= take
                if unpaid[0][1] == 0:
                    unpaid.popleft()
        balance = sum(a for _, a in unpaid)
        if balance > 0:
            overdue = max(0, (as_of - unpaid[0][0]).days - term_days)
            out[loan] = (balance, overdue)
    return out


def _change(then: Mapping[str, float], now: Mapping[str, float], key: str) -> float | None:
    a, b = then.get(key), now.get(key)
    if a is None or b is None or a <= 0:
        return None
    return (b - a) / a


def _change_rules(
    rules: MonitoringRules, changes: Mapping[str, float], source: Mapping[str, Any] | None
) -> list[tuple[str, dict[str, Any]]]:
    """The ERP rules on a node's released changes; inputs name the changes and their source."""
    fired: list[tuple[str, dict[str, Any]]] = []
    src = {"erp_source": dict(source)} if source else {}
    ship = changes.get("shipping_cost_per_order_change")
    orders = changes.get("orders_shipped_change")
    if ship is not None and orders is not None and ship <= -rules.shipping_drop \
            and orders >= rules.orders_rise:  # fmt: skip
        fired.append(("fake_trade", {"shipping_change": ship, "orders_change": orders, **src}))
    gm = changes.get("gross_margin_change_pt")
    # Compared in points: the policy's margin_drop is in margin units (0.10 = 10 points).
    if gm is not None and -gm >= round(100 * rules.margin_drop, 9):
        fired.append(("margin_collapse", {"margin_change_pt": gm, **src}))
    rev = changes.get("revenue_change")
    if rev is not None and rev <= -rules.turnover_drop:
        fired.append(("turnover_drop", {"revenue_change": rev, **src}))
    return fired


def _level_rules(
    rules: MonitoringRules, then: Mapping[str, float], now: Mapping[str, float]
) -> list[tuple[str, dict[str, Any]]]:
    """The ERP rules on values before and now (an observations file)."""
    fired: list[tuple[str, dict[str, Any]]] = []
    ship = _change(then, now, "shipping_cost_per_order")
    orders = _change(then, now, "orders_shipped")
    if (
        ship is not None
        and orders is not None
        and ship <= -rules.shipping_drop
        and orders >= rules.orders_rise
    ):
        fired.append(
            ("fake_trade", {"shipping_change": round(ship, 4), "orders_change": round(orders, 4)})
        )
    gm_then, gm_now = then.get("gross_margin"), now.get("gross_margin")
    if gm_then is not None and gm_now is not None and gm_then - gm_now >= rules.margin_drop:
        fired.append(
            ("margin_collapse", {"margin_then": round(gm_then, 4), "margin_now": round(gm_now, 4)})
        )
    rev = _change(then, now, "monthly_revenue")
    if rev is not None and rev <= -rules.turnover_drop:
        fired.append(("turnover_drop", {"revenue_change": round(rev, 4)}))
    return fired


def evaluate_rules(
    rules: MonitoringRules,
    *,
    overdue_days: int,
    decision_pd: float | None,
    obs: Observation | None,
    consented: bool,
) -> list[tuple[str, dict[str, Any]]]:
    """The rules that fire for one loan, each with the inputs it read (pure)."""
    fired: list[tuple[str, dict[str, Any]]] = []
    if overdue_days >= rules.overdue_days and overdue_days > 0:
        fired.append(("overdue", {"days_overdue": overdue_days, "threshold": rules.overdue_days}))
    if obs is None or not consented:
        return fired
    if obs.erp_changes is not None:
        fired += _change_rules(rules, obs.erp_changes, obs.erp_source)
    elif obs.erp_then is not None and obs.erp_now is not None:
        fired += _level_rules(rules, obs.erp_then, obs.erp_now)
    if (
        obs.pd_now is not None
        and decision_pd is not None
        and obs.pd_now - decision_pd >= rules.pd_rise
    ):
        fired.append(
            ("pd_rise", {"pd_then": round(decision_pd, 6), "pd_now": round(obs.pd_now, 6)})
        )
    return fired


def _pass_id(
    as_of: date,
    policy_version: int,
    model_version: str,
    observations: Mapping[str, Observation],
    consented: Collection[str],
) -> str:
    h = hashlib.sha256(f"{as_of}|{policy_version}|{model_version}\n".encode())
    for m in sorted(observations):
        o = observations[m]
        h.update(
            repr(
                (
                    m,
                    o.pd_now,
                    sorted((o.erp_then or {}).items()),
                    sorted((o.erp_now or {}).items()),
                    o.payment_balance,
                    m in consented,
                    # The released values, not their job: the same changes released
                    # again make the same pass (a no-op).
                    sorted((o.erp_changes or {}).items()),
                )
            ).encode()
        )
    return h.hexdigest()


def monitor_pass(
    session: Session,
    *,
    policy_version: int,
    rules: MonitoringRules,
    observations: Mapping[str, Observation],
    consented: Collection[str],
    as_of: date,
    model_version: str,
    at: datetime | None = None,
) -> MonitorReport:
    """Run every rule on every open loan, act, and log (see the module docstring)."""
    now = at or datetime.now(UTC)
    pid = _pass_id(as_of, policy_version, model_version, observations, consented)
    seen = session.execute(select(func.count()).where(AlertRow.pass_id == pid)).scalar_one()
    if seen:
        return MonitorReport(pid, as_of, 0, (), True)
    positions = loan_positions(session, as_of, rules.term_days)
    # Repayments and write-offs the lending system has already reported after ``as_of``
    # (a replayed or simulated history) are owed out of the same balance: an early
    # collection takes only what they leave, so no loan is ever paid back twice.
    later: dict[str, int] = defaultdict(int)
    for loan, amount in session.execute(
        select(LoanEventRow.loan_id, LoanEventRow.amount).where(
            LoanEventRow.day > as_of, LoanEventRow.kind.in_(("repayment", "write_off"))
        )
    ):
        later[loan] += int(amount)
    loans = (
        {
            r.loan_id: r
            for r in session.execute(
                select(LoanRow).where(LoanRow.loan_id.in_(list(positions)))
            ).scalars()
        }
        if positions
        else {}
    )
    dec_pd = (
        dict(
            session.execute(
                select(
                    LineDecisionRow.id, func.coalesce(LineDecisionRow.pd_with, LineDecisionRow.pd_f)
                ).where(
                    LineDecisionRow.id.in_([r.decision_id for r in loans.values() if r.decision_id])
                )
            ).all()
        )
        if loans
        else {}
    )
    closed = session.execute(select(func.max(PeriodCloseRow.period))).scalar_one_or_none()
    collect_ok = closed is None or f"{as_of:%Y-%m}" > closed
    alerts: list[Alert] = []
    items: list[tuple[str, dict[str, Any]]] = []
    rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for loan_id in sorted(loans):
        loan = loans[loan_id]
        balance, overdue = positions[loan_id]
        obs = observations.get(loan.merchant_id)
        fired = evaluate_rules(
            rules,
            overdue_days=overdue,
            decision_pd=dec_pd.get(loan.decision_id),
            obs=obs,
            consented=loan.merchant_id in consented,
        )
        for rule, inputs in fired:
            action = _ACTION[rule]
            before = {
                "limit": int(loan.line_limit),
                "frozen": bool(loan.frozen),
                "balance": balance,
            }
            if action == "freeze" and not loan.frozen:
                loan.frozen, loan.line_limit = True, min(int(loan.line_limit), balance)
            elif action == "reduce" and not loan.frozen:
                target = max(balance, int(loan.line_limit) * rules.reduce_to_bp // BP)
                if target < loan.line_limit:
                    loan.line_limit = target
                else:
                    action = "none"
            elif action == "early_collection":
                amount = min(balance - later[loan_id], obs.payment_balance if obs else 0)
                if amount > 0 and collect_ok:
                    key = f"collect:{loan_id}:{as_of.isoformat()}"
                    payload = {
                        "key": key,
                        "loan_id": loan_id,
                        "kind": "repayment",
                        "date": as_of.isoformat(),
                        "amount": amount,
                    }
                    events.append(
                        {
                            "key": key,
                            "loan_id": loan_id,
                            "kind": "repayment",
                            "day": as_of,
                            "amount": amount,
                            "import_id": f"monitor:{pid[:56]}",
                            "digest": hashlib.sha256(ledger.canonical_json(payload)).hexdigest(),
                        }
                    )
                    balance -= amount
                    inputs = {**inputs, "collected": amount}
                else:
                    action = "none"
            else:
                action = "none"
            after = {"limit": int(loan.line_limit), "frozen": bool(loan.frozen), "balance": balance}
            common = {
                "pass": pid,
                "merchant": loan.merchant_id,
                "loan": loan_id,
                "rule": rule,
                "model_version": model_version,
                "policy_version": policy_version,
            }
            items.append((ALERT_ENTRY, {**common, "inputs": inputs}))
            if action != "none":
                items.append(
                    (ACTION_ENTRY, {**common, "action": action, "before": before, "after": after})
                )
            alerts.append(Alert(loan.merchant_id, loan_id, rule, action, inputs))
            rows.append(
                {
                    "pass_id": pid,
                    "merchant_id": loan.merchant_id,
                    "loan_id": loan_id,
                    "rule": rule,
                    "action": action,
                    "inputs": inputs,
                    "at": now,
                }
            )
    entries = ledger.append_entries(session, items, at=now) if items else []
    alert_seqs = [e.seq for e in entries if e.kind == ALERT_ENTRY]
    for row, seq in zip(rows, alert_seqs, strict=True):
        row["log_seq"] = seq
    if not rows:  # an empty pass is remembered too, so running it again stays a no-op
        entry = ledger.append_entry(
            session,
            ALERT_ENTRY,
            {
                "pass": pid,
                "alerts": 0,
                "model_version": model_version,
                "policy_version": policy_version,
            },
            at=now,
        )
        rows.append(
            {
                "pass_id": pid,
                "merchant_id": "-",
                "loan_id": "-",
                "rule": "none",
                "action": "none",
                "inputs": {},
                "at": now,
                "log_seq": entry.seq,
            }
        )
    session.execute(insert(AlertRow), rows)
    if events:
        session.execute(insert(LoanEventRow), events)
    session.flush()
    return MonitorReport(pid, as_of, len(loans), tuple(alerts))
