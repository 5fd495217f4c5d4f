"""Pre-approved lines for every merchant, with and without ISV data, stored with their inputs.

For a platform merchant the line *without* ISV data uses ``f_platform``'s PD and
the line *with* uses the combiner's PD where a consented ERP score exists
(otherwise both lines are equal). An off-platform merchant (ERP data, no
platform sales) has no line without ISV data; its line uses the ``pd-erp-only``
PD and the ERP-reported turnover, and the whole line is the ISV's uplift.

**Uplift** = line with − line without. A negative uplift (ISV data showed risk)
lowers the line and owes nobody a share.

Multi-ISV attribution rule: when a merchant's ERP data sits at several ISVs,
each ISV *k* gets the weight ``w_k = max(0, line(PD_k) − line_without)``, where
``PD_k`` is the PD with only ISV *k*'s score (its marginal contribution); the
uplift's interest share is split by these weights with the ledger's
largest-remainder split. If the uplift is positive but no single ISV's weight is
(the ISVs only help together), every ISV gets weight 1 (equal split). With one
ISV the weight is simply the uplift.

Each decision writes a ``credit.line`` ledger entry (merchant, lines, PDs, policy
version, model versions, ISVs and consent ids) in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

import ledger

from ._errors import NotFound
from ._models import LineDecisionRow
from ._policy import CreditPolicy, line_amounts

__all__ = [
    "LINE_ENTRY",
    "MerchantScores",
    "LineDecision",
    "attribute",
    "decide_lines",
    "latest_decisions",
    "explain",
    "decision_terms",
]

LINE_ENTRY = "credit.line"
_BATCH = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class MerchantScores:
    """What a line decision reads for one merchant.

    Parameters
    ----------
    merchant_id : str
    sales_3m : int
        Trailing three months of platform sales in fen (off-platform: ERP revenue).
    pd_f : float | None
        ``f_platform`` PD; ``None`` for an off-platform merchant.
    pd_with : float | None
        PD with ISV data (combiner, or ``pd-erp-only`` off-platform); ``None`` when no
        consented ERP score exists.
    isv_pd : Mapping[str, float], default {}
        PD with each single ISV's score (for attribution); with one ISV, ``{isv: pd_with}``.
    consent_ids : Mapping[str, str], default {}
        ISV → the consent that covered its score.
    extra_inputs : Mapping[str, Any], default {}
        More inputs recorded with the decision (JSON values; an off-platform merchant's
        turnover source, or why it got no line).
    """

    merchant_id: str
    sales_3m: int
    pd_f: float | None
    pd_with: float | None
    isv_pd: Mapping[str, float] = field(default_factory=dict)
    consent_ids: Mapping[str, str] = field(default_factory=dict)
    extra_inputs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def basis(self) -> str:
        """``platform`` or ``off-platform``."""
        return "off-platform" if self.pd_f is None else "platform"


@dataclass(frozen=True, slots=True)
class LineDecision:
    """A stored decision."""

    id: int
    merchant_id: str
    basis: str
    policy_version: int
    line_f: int
    line_with: int
    uplift: int
    pd_f: float | None
    pd_with: float | None
    attribution: Mapping[str, int]
    inputs: Mapping[str, Any]
    decided_at: datetime


def attribute(uplift: int, line_f: int, isv_lines: Mapping[str, int]) -> dict[str, int]:
    """The multi-ISV attribution weights (see the module docstring); ``{}`` if uplift ≤ 0."""
    if uplift <= 0 or not isv_lines:
        return {}
    weights = {k: max(0, int(v) - line_f) for k, v in sorted(isv_lines.items())}
    if not any(weights.values()):
        return {k: 1 for k in weights}
    return {k: w for k, w in weights.items() if w > 0}


def _f(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def decide_lines(
    session: Session,
    policy_version: int,
    policy: CreditPolicy,
    merchants: Sequence[MerchantScores],
    *,
    models: Mapping[str, str],
    at: datetime | None = None,
) -> list[LineDecision]:
    """Compute, store and log both lines for every merchant in ``merchants``.

    Parameters
    ----------
    session : Session
        The caller's transaction.
    policy_version, policy
        The policy in force (:func:`gateway.credit.current_policy`).
    merchants : Sequence[MerchantScores]
    models : Mapping[str, str]
        Model versions used (``f``, ``g``, ``combiner``, ``g_only``): recorded with each decision.
    at : datetime | None, default now

    Returns
    -------
    list[LineDecision]
        In ``merchants`` order.
    """
    now = at or datetime.now(UTC)
    if not merchants:
        return []
    sales = np.asarray([m.sales_3m for m in merchants], dtype=np.int64)
    pd_f = np.asarray([_f(m.pd_f) for m in merchants])
    pd_w = np.asarray([_f(m.pd_with) for m in merchants])
    off = np.asarray([m.pd_f is None for m in merchants])
    line_f = np.where(off, 0, line_amounts(policy.line, sales, pd_f))
    has_w = np.isfinite(pd_w)
    line_w = np.where(has_w, line_amounts(policy.line, sales, pd_w), line_f)
    rows: list[dict[str, Any]] = []
    bodies: list[tuple[str, dict[str, Any]]] = []
    for i, m in enumerate(merchants):
        lf, lw = int(line_f[i]), int(line_w[i])
        isv_lines = {
            k: int(line_amounts(policy.line, sales[i : i + 1], np.asarray([p]))[0])
            for k, p in m.isv_pd.items()
        }
        weights = attribute(lw - lf, lf, isv_lines)
        inputs = {
            "models": dict(models),
            "isvs": sorted(m.isv_pd),
            "consents": dict(sorted(m.consent_ids.items())),
            "isv_lines": isv_lines,
            "sales_3m": int(sales[i]),
            **m.extra_inputs,
        }
        row = {
            "merchant_id": m.merchant_id,
            "basis": m.basis,
            "policy_version": policy_version,
            "currency": policy.currency,
            "sales_3m": int(sales[i]),
            "pd_f": None if m.pd_f is None else float(m.pd_f),
            "pd_with": None if m.pd_with is None else float(m.pd_with),
            "line_f": lf,
            "line_with": lw,
            "uplift": lw - lf,
            "attribution": weights,
            "inputs": inputs,
            "decided_at": now,
        }
        rows.append(row)
        body = {k: v for k, v in row.items() if k != "decided_at"}
        # PDs go to the log as decimal strings: canonical JSON carries exact values only.
        body["pd_f"] = None if m.pd_f is None else f"{m.pd_f:.6f}"
        body["pd_with"] = None if m.pd_with is None else f"{m.pd_with:.6f}"
        bodies.append((LINE_ENTRY, body))
    for start in range(0, len(rows), _BATCH):
        entries = ledger.append_entries(session, bodies[start : start + _BATCH], at=now)
        for row, entry in zip(rows[start : start + _BATCH], entries, strict=True):
            row["log_seq"] = entry.seq
    session.execute(insert(LineDecisionRow), rows)
    ids = latest_decisions(session, [m.merchant_id for m in merchants])
    return [ids[m.merchant_id] for m in merchants]


def _decision(r: LineDecisionRow) -> LineDecision:
    at = r.decided_at if r.decided_at.tzinfo else r.decided_at.replace(tzinfo=UTC)
    return LineDecision(
        id=int(r.id),
        merchant_id=r.merchant_id,
        basis=r.basis,
        policy_version=r.policy_version,
        line_f=int(r.line_f),
        line_with=int(r.line_with),
        uplift=int(r.uplift),
        pd_f=r.pd_f,
        pd_with=r.pd_with,
        attribution=dict(r.attribution),
        inputs=dict(r.inputs),
        decided_at=at,
    )


def latest_decisions(
    session: Session, merchant_ids: Sequence[str] | None = None
) -> dict[str, LineDecision]:
    """Each merchant's latest decision (all merchants when ``merchant_ids`` is ``None``)."""
    latest = select(func.max(LineDecisionRow.id)).group_by(LineDecisionRow.merchant_id)
    out: dict[str, LineDecision] = {}
    if merchant_ids is None:
        q = select(LineDecisionRow).where(LineDecisionRow.id.in_(latest))
        return {r.merchant_id: _decision(r) for r in session.execute(q).scalars()}
    ids = list(dict.fromkeys(merchant_ids))
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        q = select(LineDecisionRow).where(
            LineDecisionRow.id.in_(latest.where(LineDecisionRow.merchant_id.in_(chunk)))
        )
        out.update({r.merchant_id: _decision(r) for r in session.execute(q).scalars()})
    return out


def decision_terms(
    session: Session, merchant_ids: Sequence[str]
) -> dict[str, tuple[int, int, int, dict[str, int]]]:
    """``merchant → (decision id, line_f, line_with, attribution)`` of the latest decisions.

    One grouped query (all merchants, filtered here) when many are asked for, chunked
    ``IN`` queries otherwise: the bulk import's path, with no ORM objects.
    """
    t = LineDecisionRow.__table__
    wanted = set(merchant_ids)
    out: dict[str, tuple[int, int, int, dict[str, int]]] = {}

    def fetch(cond: Any) -> None:
        latest = select(t.c.merchant_id, func.max(t.c.id).label("mid")).group_by(t.c.merchant_id)
        if cond is not None:
            latest = latest.where(cond)
        sub = latest.subquery()
        q = select(t.c.merchant_id, t.c.id, t.c.line_f, t.c.line_with, t.c.attribution).join(
            sub, sub.c.mid == t.c.id
        )
        for m, i, lf, lw, attr in session.execute(q):
            if m in wanted:
                out[m] = (int(i), int(lf), int(lw), {str(k): int(v) for k, v in attr.items()})

    if len(wanted) > 20_000:
        fetch(None)
        return out
    ids = sorted(wanted)
    for start in range(0, len(ids), 5000):
        fetch(t.c.merchant_id.in_(ids[start : start + 5000]))
    return out


def _yuan(fen: int) -> str:
    return f"{fen / 100:,.0f} yuan" if fen % 100 == 0 else f"{fen / 100:,.2f} yuan"


def _pct(p: float | None) -> str:
    return "n/a" if p is None else f"{100 * p:.2f} %"


def explain(session: Session, merchant_id: str) -> str:
    """The merchant's latest line decision in words a risk analyst reads."""
    d = latest_decisions(session, [merchant_id]).get(merchant_id)
    if d is None:
        raise NotFound(f"no line decision for merchant {merchant_id!r}", code="UNKNOWN_MERCHANT")
    models = d.inputs.get("models", {})
    if d.basis == "off-platform":
        return "\n".join(_explain_off_platform(d, models))
    lines = [
        f"Merchant {d.merchant_id} ({d.basis} merchant), decision #{d.id} of "
        f"{d.decided_at:%Y-%m-%d %H:%M} UTC under credit policy v{d.policy_version}.",
        f"Trailing three-month sales: {_yuan(int(d.inputs.get('sales_3m', 0)))}.",
        f"Platform data only (f {models.get('f', '?')}): PD {_pct(d.pd_f)} "
        f"-> line {_yuan(d.line_f)}.",
    ]
    if d.pd_with is None:
        lines.append("No consented ERP score: the line stays the platform-only line.")
    else:
        lines.append(
            f"With ISV data from {_isvs(d)} (g {models.get('g', '?')}, combiner "
            f"{models.get('combiner', '?')}): PD {_pct(d.pd_with)} -> line {_yuan(d.line_with)}."
        )
    if d.uplift > 0:
        split = ", ".join(f"{k} weight {w}" for k, w in d.attribution.items())
        lines.append(f"Uplift +{_yuan(d.uplift)}: the ISV share of its interest goes to {split}.")
    elif d.uplift < 0:
        lines.append(
            f"ISV data lowered the line by {_yuan(-d.uplift)} (stricter); "
            "no interest share is owed."
        )
    else:
        lines.append("ISV data did not change the line; no interest share is owed.")
    return "\n".join(lines)


def _isvs(d: LineDecision) -> str:
    consents = d.inputs.get("consents", {})
    return ", ".join(f"{k} (consent {consents.get(k, '?')})" for k in d.inputs.get("isvs", []))


_NO_LINE = {
    "no_turnover": "no ISV whose score a consent covers reported its revenue_3m",
    "no_consented_score": "no live credit_scoring consent covers its ERP-only score",
}


def _explain_off_platform(d: LineDecision, models: Mapping[str, Any]) -> list[str]:
    """An off-platform decision: ERP-only PD, ERP-reported turnover, the whole line uplift."""
    off = d.inputs.get("off_platform", {})
    model = models.get("g_only", "?")
    lines = [
        f"Merchant {d.merchant_id} (off-platform merchant: ERP data, no platform sales), "
        f"decision #{d.id} of {d.decided_at:%Y-%m-%d %H:%M} UTC under credit policy "
        f"v{d.policy_version}.",
        "No platform sales: without ISV data the merchant gets no line.",
    ]
    if d.pd_with is None:
        why = _NO_LINE.get(str(off.get("no_line")), "no consented ERP-only score")
        lines.append(f"No line: {why} (model {model}).")
        return lines
    calibrated = (
        ", its g mapped to a PD on platform merchants' labels"
        if str(model).endswith("+calibration") else ""
    )
    source = off.get("turnover_isv")
    sha = str(off.get("turnover_sha256", ""))[:16]
    origin = (
        f" ({off.get('turnover_signal', 'revenue_3m')} reported by {source}'s ERP, signals "
        f"file sha256 {sha}…)" if source else ""
    )
    lines += [
        f"ERP-reported trailing three-month revenue{origin}: "
        f"{_yuan(int(d.inputs.get('sales_3m', 0)))}.",
        f"With ISV data from {_isvs(d)}: PD {_pct(d.pd_with)} from the ERP-only model "
        f"{model}{calibrated} (no platform score, no combiner) on that turnover -> line "
        f"{_yuan(d.line_with)}.",
    ]
    if d.uplift > 0:
        split = ", ".join(f"{k} weight {w}" for k, w in d.attribution.items())
        lines.append(
            f"Uplift +{_yuan(d.uplift)}: the whole line is the ISVs' uplift; the ISV share "
            f"of its interest goes to {split}."
        )
    else:
        lines.append("The PD or the turnover gives no line under the policy; nothing is owed.")
    return lines
