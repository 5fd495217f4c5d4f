"""The credit policy: versioned TOML (lines, pricing, monitoring), each version on the ledger.

Line rule (all integer fen, every step floors)::

    sales_3m   = trailing three months of sales (platform) or ERP-reported revenue (off-platform)
    base       = sales_3m × k_bp // 10 000
    h_ppm      = floor(10^6 × (1 − PD / pd_cutoff)), 0 when PD ≥ pd_cutoff
    raw        = min(cap, base × h_ppm // 10^6)
    line       = raw − raw mod 100            (whole yuan, rounded down)
    line       = 0 if line < min               (no line below the minimum)

A policy version takes effect with :func:`activate_policy`, which writes a
``credit.policy`` ledger entry holding the whole text and its SHA-256 in the
same transaction as the ``credit_policy_versions`` row; activating the same
text again is a no-op.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

import ledger

from ._errors import PolicyError
from ._models import PolicyVersionRow

__all__ = [
    "DEFAULT_POLICY_TOML",
    "POLICY_ENTRY",
    "LinePolicy",
    "Pricing",
    "MonitoringRules",
    "CreditPolicy",
    "parse_policy",
    "activate_policy",
    "current_policy",
    "policy_version",
    "line_amounts",
]

POLICY_ENTRY = "credit.policy"
PPM = 1_000_000
BP = 10_000

DEFAULT_POLICY_TOML = """\
# fedgate default credit policy. Amounts in whole yuan unless named _fen; rates in basis points.
currency = "CNY"

[line]
k_bp = 5000            # line base = 50 % of trailing three-month sales
cap_yuan = 500000      # no line above 500,000 yuan
min_yuan = 2000        # a line under 2,000 yuan is not offered
pd_cutoff = 0.12       # h(PD) = 1 - PD / 0.12, zero at or above a 12 % PD

[pricing]
rate_bp = 1800                    # 18 % a year on the drawn balance, accrued daily (/365)
fee_per_merchant_round_fen = 50   # data-usage fee: 0.50 yuan per merchant-round used
share_bp = 2000                   # ISVs get 20 % of the interest earned on the uplift
billed_actions = ["train", "query.score", "query.signals"]  # used for a decision: billed

[monitoring]
pd_rise = 0.05          # re-scored PD above the decision's PD by 5 points: reduce the line
margin_drop = 0.10      # gross margin down 10 points: freeze the undrawn line
turnover_drop = 0.40    # ERP revenue down 40 %: reduce the line
shipping_drop = 0.30    # shipping cost per order down 30 % ...
orders_rise = 0.20      # ... while orders shipped grow 20 %: the fake-trade signature, freeze
overdue_days = 30       # a drawdown unpaid this long past its term: early collection
term_days = 90          # each drawdown is due this many days after it is drawn
reduce_to_bp = 5000     # a reduced line keeps 50 % of its limit
"""


def _num(doc: Mapping[str, Any], key: str, kind: type, lo: float, hi: float) -> Any:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(
        value, kind if kind is not float else (int, float)
    ):
        raise PolicyError(f"policy key {key!r} must be a {kind.__name__}", code="BAD_POLICY")
    if not lo <= value <= hi:
        raise PolicyError(
            f"policy key {key!r} must be in [{lo}, {hi}], got {value}", code="BAD_POLICY"
        )
    return kind(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinePolicy:
    """How a line follows from sales and PD (see the module docstring)."""

    k_bp: int
    cap: int
    minimum: int
    pd_cutoff: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Pricing:
    """Interest rate, data-usage fee and interest share."""

    rate_bp: int
    fee_per_merchant_round: int
    share_bp: int
    billed_actions: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitoringRules:
    """Thresholds of the post-loan rules."""

    pd_rise: float
    margin_drop: float
    turnover_drop: float
    shipping_drop: float
    orders_rise: float
    overdue_days: int
    term_days: int
    reduce_to_bp: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditPolicy:
    """One parsed policy text; ``text_hash`` is the SHA-256 of its UTF-8 bytes."""

    text: str
    text_hash: str
    currency: str
    line: LinePolicy
    pricing: Pricing
    monitoring: MonitoringRules

    def values(self) -> dict[str, Any]:
        """The parsed values as JSON (recorded next to the hash)."""
        return {
            "currency": self.currency,
            "line": {
                "k_bp": self.line.k_bp,
                "cap": self.line.cap,
                "min": self.line.minimum,
                "pd_cutoff": self.line.pd_cutoff,
            },
            "pricing": {
                "rate_bp": self.pricing.rate_bp,
                "fee_per_merchant_round": self.pricing.fee_per_merchant_round,
                "share_bp": self.pricing.share_bp,
                "billed_actions": list(self.pricing.billed_actions),
            },
            "monitoring": {k: getattr(self.monitoring, k) for k in MonitoringRules.__slots__},
        }


def _table(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    t = doc.get(name)
    if not isinstance(t, dict):
        raise PolicyError(f"policy needs a [{name}] table", code="BAD_POLICY")
    return t


def parse_policy(text: str) -> CreditPolicy:
    """Parse and range-check a policy text; :class:`PolicyError` (``BAD_POLICY``) otherwise."""
    try:
        doc = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, TypeError) as exc:
        raise PolicyError(f"policy is not TOML: {exc}", code="BAD_POLICY") from exc
    currency = doc.get("currency")
    try:
        ledger.Money.zero(currency)
    except (ledger.MoneyError, TypeError) as exc:
        raise PolicyError(f"bad policy currency {currency!r}", code="BAD_POLICY") from exc
    ln, pr, mo = _table(doc, "line"), _table(doc, "pricing"), _table(doc, "monitoring")
    actions = pr.get("billed_actions")
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        raise PolicyError("pricing.billed_actions must be a list of strings", code="BAD_POLICY")
    cap = _num(ln, "cap_yuan", int, 0, 10**11) * 100
    minimum = _num(ln, "min_yuan", int, 0, 10**11) * 100
    if minimum > cap:
        raise PolicyError("line.min_yuan must not exceed line.cap_yuan", code="BAD_POLICY")
    return CreditPolicy(
        text=text,
        text_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        currency=str(currency),
        line=LinePolicy(
            k_bp=_num(ln, "k_bp", int, 0, 10 * BP),
            cap=cap,
            minimum=minimum,
            pd_cutoff=_num(ln, "pd_cutoff", float, 1e-6, 1.0),
        ),
        pricing=Pricing(
            rate_bp=_num(pr, "rate_bp", int, 0, 100_000),
            fee_per_merchant_round=_num(pr, "fee_per_merchant_round_fen", int, 0, 10**9),
            share_bp=_num(pr, "share_bp", int, 0, BP),
            billed_actions=tuple(actions),
        ),
        monitoring=MonitoringRules(
            pd_rise=_num(mo, "pd_rise", float, 0.0, 1.0),
            margin_drop=_num(mo, "margin_drop", float, 0.0, 2.0),
            turnover_drop=_num(mo, "turnover_drop", float, 0.0, 1.0),
            shipping_drop=_num(mo, "shipping_drop", float, 0.0, 1.0),
            orders_rise=_num(mo, "orders_rise", float, 0.0, 100.0),
            overdue_days=_num(mo, "overdue_days", int, 0, 3650),
            term_days=_num(mo, "term_days", int, 1, 3650),
            reduce_to_bp=_num(mo, "reduce_to_bp", int, 0, BP),
        ),
    )


def activate_policy(session: Session, text: str, *, at: datetime | None = None) -> int:
    """Make ``text`` the current policy; returns its version (the old one if the text is known).

    Writes ``credit.policy`` (version, SHA-256, whole text, parsed values) to the ledger
    in the caller's transaction.
    """
    policy = parse_policy(text)
    latest = session.execute(
        select(PolicyVersionRow).order_by(PolicyVersionRow.version.desc()).limit(1)
    ).scalar_one_or_none()
    if latest is not None and latest.text_hash == policy.text_hash:
        return latest.version
    now = at or datetime.now(UTC)
    version = (latest.version if latest is not None else 0) + 1
    entry = ledger.append_entry(
        session,
        POLICY_ENTRY,
        {"version": version, "sha256": policy.text_hash, "text": text, "values": policy.values()},
        at=now,
    )
    session.add(
        PolicyVersionRow(
            version=version,
            text=text,
            text_hash=policy.text_hash,
            effective_at=now,
            log_seq=entry.seq,
        )
    )
    session.flush()
    return version


def current_policy(
    session: Session, default_text: str = DEFAULT_POLICY_TOML
) -> tuple[int, CreditPolicy]:
    """The policy in force and its version, activating ``default_text`` if none ever was."""
    row = session.execute(
        select(PolicyVersionRow).order_by(PolicyVersionRow.version.desc()).limit(1)
    ).scalar_one_or_none()
    if row is None:
        version = activate_policy(session, default_text)
        return version, parse_policy(default_text)
    return row.version, parse_policy(row.text)


def policy_version(session: Session, version: int) -> CreditPolicy:
    """The policy of a given version."""
    row = session.get(PolicyVersionRow, version)
    if row is None:
        raise PolicyError(f"no policy version {version}", code="UNKNOWN_POLICY")
    return parse_policy(row.text)


def line_amounts(policy: LinePolicy, sales_3m: np.ndarray, pd: np.ndarray) -> np.ndarray:
    """Lines in fen for each merchant (vectorised; see the module docstring for the rule).

    Parameters
    ----------
    policy : LinePolicy
    sales_3m : numpy.ndarray
        Non-negative integer fen.
    pd : numpy.ndarray
        PD estimates in [0, 1]; NaN gives no line.
    """
    sales = np.maximum(np.asarray(sales_3m, dtype=np.int64), 0)
    p = np.asarray(pd, dtype=np.float64)
    ok = np.isfinite(p) & (p < policy.pd_cutoff)
    h = np.where(ok, np.floor(PPM * (1.0 - np.where(ok, p, 0.0) / policy.pd_cutoff)), 0)
    base = sales * policy.k_bp // BP
    raw = np.minimum(policy.cap, base * h.astype(np.int64) // PPM)
    line = raw - raw % 100
    return np.where(line < policy.minimum, 0, line).astype(np.int64)
