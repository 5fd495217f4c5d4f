"""ERP signals a node releases per merchant: coarse changes and a floored turnover, never rows.

Two kinds of release, each tied to one consent purpose and the categories it reads
(:data:`SIGNAL_KINDS`):

``erp-changes`` (``post_loan_monitoring``; margins, turnover, logistics_cost,
orders_and_shipping)
    Between the merchant's snapshot ``then`` (its latest at or before ``since``) and
    ``now`` (its latest at or before ``as_of``), with ``then.as_of < now.as_of``::

        revenue_change                 = rev_now / rev_then - 1
        shipping_cost_per_order_change = ship_now / ship_then - 1
        orders_shipped_change          = orders_now / orders_then - 1
        gross_margin_change_pt         = 100 · (gm_now - gm_then)

    Each ratio is rounded to the nearest multiple of ``change_step`` and clipped to
    ``[-1, max_change]``; the margin change to the nearest ``margin_step_pt`` and
    ``[-max_margin_pt, max_margin_pt]``. Only changes leave, never a level: a ratio of
    two of a merchant's own values says how it moved, not how big it is. A merchant
    without two distinct snapshots in the window, or with a zero or missing base, is
    left out of the release (the platform sees it absent).

``revenue-3m`` (``credit_scoring``; turnover)
    ``revenue_3m = floor(3 · rev_now / revenue_step) · revenue_step`` in fen, with
    ``rev_now`` the latest snapshot's ``monthly_revenue`` at or before ``as_of`` (the
    schema's monthly values are 12-month averages, so three of them are the trailing
    quarter's turnover at that average). Rounded **down**: the line base of an
    off-platform merchant may only be understated by the coarsening.

The steps, clips and which kinds are released at all are the node's own policy
(:class:`SignalRules` from :class:`federation.node.NodePolicy`); nothing in a
request can change them. :func:`release_problem` checks a reply independently of
the code that built it (the egress guard's view).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType

import numpy as np
import pandas as pd

from .schema import AS_OF, MERCHANT_ID

__all__ = [
    "ERP_CHANGES",
    "REVENUE_3M",
    "SIGNAL_KINDS",
    "SIGNAL_PURPOSE",
    "SIGNAL_CATEGORIES",
    "SIGNAL_NAMES",
    "CHANGE_SIGNALS",
    "REVENUE_SIGNAL",
    "SIGNAL_FIELDS",
    "SignalRules",
    "Release",
    "erp_changes",
    "revenue_3m",
    "release",
    "release_problem",
]

ERP_CHANGES = "erp-changes"
REVENUE_3M = "revenue-3m"
SIGNAL_KINDS: tuple[str, ...] = (ERP_CHANGES, REVENUE_3M)

SIGNAL_PURPOSE: Mapping[str, str] = MappingProxyType(
    {ERP_CHANGES: "post_loan_monitoring", REVENUE_3M: "credit_scoring"}
)
"""The one consent purpose each kind serves (a manifest for another purpose is refused)."""

SIGNAL_CATEGORIES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        ERP_CHANGES: ("margins", "turnover", "logistics_cost", "orders_and_shipping"),
        REVENUE_3M: ("turnover",),
    }
)
"""The consent categories each kind reads (its manifest must name every one)."""

CHANGE_SIGNALS: tuple[str, ...] = (
    "revenue_change",
    "shipping_cost_per_order_change",
    "orders_shipped_change",
    "gross_margin_change_pt",
)
REVENUE_SIGNAL = "revenue_3m"
SIGNAL_NAMES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {ERP_CHANGES: CHANGE_SIGNALS, REVENUE_3M: (REVENUE_SIGNAL,)}
)
"""Exactly the arrays a reply of each kind carries, in this order."""

_RATIOS = {
    "revenue_change": "monthly_revenue",
    "shipping_cost_per_order_change": "shipping_cost_per_order",
    "orders_shipped_change": "orders_shipped",
}
SIGNAL_FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        ERP_CHANGES: ("monthly_revenue", "shipping_cost_per_order", "orders_shipped",
                      "gross_margin"),
        REVENUE_3M: ("monthly_revenue",),
    }
)  # fmt: skip
"""The ERP fields each kind reads."""

_TOL = 1e-6  # how far a released value may sit from its grid point (float representation)


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalRules:
    """The node's coarsening of every release (from its policy, never from a request).

    Parameters
    ----------
    change_step : float, default 0.01
        Grid of the three ratio changes.
    max_change : float, default 2.0
        Ratios are clipped to ``[-1, max_change]`` (a multiple of ``change_step``).
    margin_step_pt : float, default 0.5
        Grid of the gross-margin change, in points.
    max_margin_pt : float, default 50.0
        The margin change is clipped to ``±max_margin_pt`` (a multiple of the step).
    revenue_step : int, default 100_000
        ``revenue_3m`` is rounded down to a multiple of this many fen (1,000 yuan).
    min_cohort : int, default 10
        Fewer released merchants than this: nothing is released.
    """

    change_step: float = 0.01
    max_change: float = 2.0
    margin_step_pt: float = 0.5
    max_margin_pt: float = 50.0
    revenue_step: int = 100_000
    min_cohort: int = 10

    def __post_init__(self) -> None:
        for name in ("change_step", "max_change", "margin_step_pt", "max_margin_pt"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"signal rule {name} must be a positive number")
        if int(self.revenue_step) < 1 or int(self.min_cohort) < 1:
            raise ValueError("signal rules revenue_step and min_cohort must be >= 1")
        for bound, step in (
            (self.max_change, self.change_step),
            (1.0, self.change_step),
            (self.max_margin_pt, self.margin_step_pt),
        ):
            if not _on_grid(bound, step):
                raise ValueError(f"signal clip {bound:g} is not a multiple of its step {step:g}")


def _on_grid(value: float, step: float) -> bool:
    q = value / step
    return abs(q - round(q)) <= _TOL * max(1.0, abs(q))


def _snap(values: np.ndarray, step: float, lo: float, hi: float) -> np.ndarray:
    """Nearest multiple of ``step``, clipped to ``[lo, hi]`` (both on the grid)."""
    q = np.clip(np.round(values / step), round(lo / step), round(hi / step))
    return np.asarray(np.round(q * step, 10), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Release:
    """What one request releases: merchant ids, one array per signal, the rows behind them."""

    merchant_ids: list[str]
    values: dict[str, np.ndarray]
    rows_used: int


def _at_or_before(frame: pd.DataFrame, day: pd.Series | pd.Timestamp) -> pd.DataFrame:
    """Each merchant's latest row with ``as_of <= day`` (``day`` per row or one date)."""
    kept = frame[frame[AS_OF] <= day]
    return kept.drop_duplicates(MERCHANT_ID, keep="last").set_index(MERCHANT_ID)


def _floats(column: pd.Series) -> np.ndarray:
    """A column as float64 with missing values as NaN (nullable integer columns included)."""
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _history(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out[MERCHANT_ID] = out[MERCHANT_ID].astype(str)
    out[AS_OF] = pd.to_datetime(out[AS_OF]).dt.normalize()
    return out.sort_values([MERCHANT_ID, AS_OF], kind="stable").reset_index(drop=True)


def erp_changes(
    frame: pd.DataFrame,
    *,
    as_of: date,
    since: date | None,
    since_by_merchant: Mapping[str, date],
    rules: SignalRules,
) -> Release:
    """The ``erp-changes`` release of ``frame`` (every snapshot of the cohort; pure).

    Parameters
    ----------
    frame : pandas.DataFrame
        ``merchant_id``, ``as_of`` and :data:`SIGNAL_FIELDS` ``[ERP_CHANGES]``: every
        snapshot the manifest lets the node read.
    as_of : date
        ``now`` is each merchant's latest snapshot at or before this day.
    since : date | None
        ``then`` is the latest snapshot at or before this day (``None``: only merchants
        in ``since_by_merchant`` are released).
    since_by_merchant : Mapping[str, date]
        Per-merchant ``since`` (wins over ``since``); ids outside ``frame`` are ignored.
    rules : SignalRules
    """
    hist = _history(frame)
    if hist.empty:
        return Release([], {k: np.empty(0) for k in CHANGE_SIGNALS}, 0)
    default = pd.Timestamp(since) if since is not None else pd.NaT
    per = hist[MERCHANT_ID].map(
        {m: pd.Timestamp(d) for m, d in since_by_merchant.items()}
    ).fillna(default)
    then = _at_or_before(hist[per.notna()], per[per.notna()])
    now = _at_or_before(hist, pd.Timestamp(as_of))
    ids = sorted(set(then.index) & set(now.index))
    then, now = then.loc[ids], now.loc[ids]
    ok = np.array(then[AS_OF].to_numpy() < now[AS_OF].to_numpy(), dtype=bool)
    raw: dict[str, np.ndarray] = {}
    for name, field in _RATIOS.items():
        a, b = _floats(then[field]), _floats(now[field])
        with np.errstate(divide="ignore", invalid="ignore"):
            raw[name] = b / a - 1.0
        ok &= np.isfinite(a) & np.isfinite(b) & (a > 0)
    gm_a, gm_b = _floats(then["gross_margin"]), _floats(now["gross_margin"])
    raw["gross_margin_change_pt"] = 100.0 * (gm_b - gm_a)
    ok &= np.isfinite(gm_a) & np.isfinite(gm_b)
    keep = [m for m, k in zip(ids, ok.tolist(), strict=True) if k]
    values = {
        name: _snap(raw[name][ok], rules.change_step, -1.0, rules.max_change)
        for name in _RATIOS
    }
    values["gross_margin_change_pt"] = _snap(
        raw["gross_margin_change_pt"][ok],
        rules.margin_step_pt,
        -rules.max_margin_pt,
        rules.max_margin_pt,
    )
    return Release(keep, {k: values[k] for k in CHANGE_SIGNALS}, 2 * len(keep))


def revenue_3m(frame: pd.DataFrame, *, as_of: date, rules: SignalRules) -> Release:
    """The ``revenue-3m`` release: ``3 · monthly_revenue`` of the latest snapshot, floored."""
    hist = _history(frame)
    now = _at_or_before(hist, pd.Timestamp(as_of)) if not hist.empty else hist
    rev = _floats(now["monthly_revenue"]) if len(now) else np.empty(0)
    ok = np.isfinite(rev) & (rev >= 0)
    step = int(rules.revenue_step)
    fen = (3 * rev[ok].astype(np.int64) // step) * step
    ids = [str(m) for m, k in zip(now.index, ok.tolist(), strict=True) if k]
    return Release(ids, {REVENUE_SIGNAL: fen.astype(np.int64)}, len(ids))


def release(
    kind: str,
    frame: pd.DataFrame,
    *,
    as_of: date,
    since: date | None,
    since_by_merchant: Mapping[str, date],
    rules: SignalRules,
) -> Release:
    """:func:`erp_changes` or :func:`revenue_3m` by ``kind``."""
    if kind == ERP_CHANGES:
        return erp_changes(
            frame, as_of=as_of, since=since, since_by_merchant=since_by_merchant, rules=rules
        )
    if kind == REVENUE_3M:
        return revenue_3m(frame, as_of=as_of, rules=rules)
    raise ValueError(f"unknown signal kind {kind!r}")


def release_problem(
    kind: str,
    merchant_ids: Sequence[object],
    values: Mapping[str, np.ndarray],
    rules: SignalRules,
    allowed_ids: set[str],
) -> str | None:
    """Why a reply of ``kind`` may not leave, or ``None`` (the egress guard's check).

    Independent of :func:`release`: exactly the kind's arrays, one value per listed
    merchant, each merchant once and inside ``allowed_ids`` (the manifest), at least
    ``rules.min_cohort`` of them, and every value on the node's grid inside its clip.
    """
    if kind not in SIGNAL_NAMES:
        return f"signal kind {kind!r} is not one the node releases"
    if list(values) != list(SIGNAL_NAMES[kind]):
        return f"a {kind} reply carries exactly {list(SIGNAL_NAMES[kind])}, got {list(values)}"
    ids = [str(m) for m in merchant_ids]
    if len(set(ids)) != len(ids) or not set(ids) <= allowed_ids:
        return "signals name a merchant twice or outside the manifest"
    if len(ids) < rules.min_cohort:
        return f"{len(ids)} merchants released, the policy's minimum is {rules.min_cohort}"
    for name, arr in values.items():
        if arr.shape != (len(ids),):
            return f"signal {name!r} has shape {arr.shape} for {len(ids)} merchants"
        if name == REVENUE_SIGNAL:
            if arr.dtype != np.int64 or (arr < 0).any() or (arr % rules.revenue_step).any():
                return f"{name} must be whole multiples of {rules.revenue_step} fen"
            continue
        if arr.dtype != np.float64 or not np.isfinite(arr).all():
            return f"signal {name!r} must be finite float64"
        step, lo, hi = (
            (rules.margin_step_pt, -rules.max_margin_pt, rules.max_margin_pt)
            if name == "gross_margin_change_pt"
            else (rules.change_step, -1.0, rules.max_change)
        )
        q = arr / step
        if (np.abs(q - np.round(q)) > _TOL * np.maximum(1.0, np.abs(q))).any():
            return f"signal {name!r} has values off the node's {step:g} grid"
        if (arr < lo - _TOL).any() or (arr > hi + _TOL).any():
            return f"signal {name!r} has values outside [{lo:g}, {hi:g}]"
    return None
