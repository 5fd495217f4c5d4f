r"""A synthetic merchant world: one platform table and one ERP table per ISV.

Generative model (all draws independent unless stated; :math:`\varepsilon` is a
fresh standard normal in every equation, :math:`\sigma(x) = 1/(1+e^{-x})`).

Latent merchant state, per merchant *i*::

    sector   s_i ~ Categorical(SECTOR_SHARES)
    size     z_i ~ N(0, 1)
    health   h_i ~ N(0, 1)          drives platform AND ERP features and the default
    leverage l_i ~ N(0, 1)          balance-sheet stress: visible only in the ERP
    fake     F_i ~ Bernoulli(sigma(a_F - 0.4 h_i))     a_F set so E[F] = fake_rate
    default  D_i ~ Bernoulli(sigma(a_D - 1.3 h_i + 0.9 l_i + 0.8 F_i - 0.15 z_i))

``a_D`` comes from a probit approximation of ``default_rate``; the realised rate
runs a little under it (4.3 % for the default 5 %), within the 3-8 % band.

Platform (monthly, 12-month averages; money in fen)::

    real orders   O_i = exp(log 300 + z_i + 0.25 h_i + 0.3 eps)
    order value   A_i = exp(AOV_LOG[s_i] + 0.3 eps)                      (yuan)
    fake share    u_i = F_i * Uniform(0.3, 1.5)         fake orders per real order
    orders        = round(O_i (1 + u_i))
    sales         = round(100 O_i A_i (1 + u_i))
    conversion c  = sigma(-3.3 + 0.25 h_i + 0.3 eps);  visitors = round(O_i (1 + 0.8 u_i) / c)
    return_rate   = sigma(-2.6 - 0.35 h_i + 0.3 eps) / (1 + 0.3 u_i)      (fake orders never return)
    rating        = clip(4.6 + 0.12 h_i + 0.15 eps + 0.03 F_i, 1, 5)     (fake reviews)
    online hours  = exp(log 8 + 0.15 h_i + 0.3 eps)
    tenure_months = clip(ceil(exp(log 30 + 0.3 h_i + 0.8 eps)), 1, 240)

ERP at the merchant's ISV (same period; fen)::

    revenue        R_i = 100 O_i A_i (exp(0.15 + 0.1 eps) + 0.8 u_i)  (brushing cash as sales)
    gross_margin   g_i = clip(MARGIN[s_i] + 0.06 h_i - 0.04 l_i + 0.03 eps, -0.5, 0.9)
    cost_of_goods  = R_i (1 - g_i)
    labour_cost    = R_i exp(log 0.08 - 0.15 h_i + 0.2 eps)
    orders_shipped = round(O_i exp(0.05 eps) + 0.25 u_i O_i)      (only a few empty parcels)
    shipping/order = 100 exp(SHIP_LOG[s_i] + 0.2 eps) (1 - 0.7 * 0.25 u_i O_i / orders_shipped)
    operating_margin = g_i - labour/R - shipping total/R - 0.08 - 0.03 l_i + 0.02 eps
    inventory_days = exp(log 45 - 0.25 h_i + 0.2 l_i + 0.3 eps)
    receivable_days= exp(log 15 - 0.2 h_i + 0.3 l_i + 0.4 eps)
    payable_days   = exp(log 35 - 0.2 h_i + 0.4 l_i + 0.3 eps)   (stretching suppliers)
    refunds        = R_i * return_rate * 0.9 + 0.6 u_i * 100 O_i A_i   (brushers paid back)
    cash           = R_i exp(log 1.2 + 0.5 h_i - 0.4 l_i + 0.5 eps)
    debt           = R_i exp(log 1.5 - 0.2 h_i + 0.8 l_i + 0.5 eps)
    months_of_history = ceil(Uniform(0.3, 1) tenure_months)
    as_of          = world as_of - Uniform{0..89} days

So a fake-trade merchant's platform sales and orders are inflated by ``1 + u``
while its ERP ships about ``1 + 0.25 u`` times its real orders at a lower cost
per parcel, books revenue that is high for the parcels it ships, and refunds
the brushers: visible only with ERP data (on the platform the fake orders
look like real ones, apart from a slightly higher conversion).

Off-platform merchants (phase 2 of the business: ERP data, no platform sales): with
``off_platform_share = x`` each merchant that uses an ISV is, with probability ``x``
(its own random stream, so ``x = 0`` leaves every table byte for byte as before),
dropped from the platform table and keeps only its ERP rows. Its ground truth (ISV,
``default_12m``, ``fake_trade``) goes to :data:`OFF_PLATFORM_TRUTH_FILE`, which only
simulations and benchmarks read: the platform has no label for these merchants.

ISVs are non-IID. ISV *k* has a sector mix ``p_k ~ Dirichlet(0.7)``, a market
share ``w_k ~ Dirichlet(2)`` and a size tilt ``b_k ~ Uniform(-0.8, 0.8)``; a
merchant uses no ISV with probability ``no_isv_share`` and otherwise ISV *k*
with probability proportional to ``w_k p_k[s_i] exp(b_k z_i)``.

Generation runs in fixed-size chunks of vectorised numpy (one random stream
per chunk, so the output depends only on the seed), streaming to one file per
table: 10^6 merchants x 10 ISVs take seconds and a few hundred MB.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .schema import AS_OF, ERP_FIELDS, FAKE_LABEL, LABEL, MERCHANT_ID, SECTOR, SECTORS

__all__ = [
    "DEFAULT_AS_OF",
    "ISV_COLUMN",
    "NO_ISV",
    "OFF_PLATFORM_TRUTH_FILE",
    "SynthParams",
    "SynthWorld",
    "generate_world",
    "write_world",
    "isv_ids",
]

DEFAULT_AS_OF = date(2026, 6, 30)
ISV_COLUMN = "isv"
"""Platform-table column naming the merchant's ISV (ground truth; :data:`NO_ISV` if none)."""
NO_ISV = ""
OFF_PLATFORM_TRUTH_FILE = "ground-truth-off-platform"
"""Stem of the world file (``.parquet``/``.csv``) holding off-platform merchants' ground truth
(``merchant_id``, ``isv``, ``sector``, ``default_12m``, ``fake_trade``): for simulations and
benches only, never for training or decisions."""
_OFF_PLATFORM_STREAM = 2**32 - 2  # the off-platform draw's own stream: x = 0 changes nothing
_CHUNK = 131_072  # fixed so that the output depends on the seed only
_SNAPSHOT_SPREAD_DAYS = 90
_ERP_INT = [f.name for f in ERP_FIELDS if f.dtype == "int64"]

SECTOR_SHARES = np.array([0.22, 0.12, 0.16, 0.14, 0.12, 0.09, 0.08, 0.07])
AOV_LOG = np.log([120, 600, 60, 200, 150, 250, 90, 45])
MARGIN = np.array([0.45, 0.18, 0.25, 0.35, 0.55, 0.35, 0.40, 0.30])
SHIP_LOG = np.log([8, 12, 10, 15, 6, 11, 9, 7])


@dataclass(frozen=True, slots=True, kw_only=True)
class SynthParams:
    """Knobs of the synthetic world.

    Parameters
    ----------
    merchants : int
        Merchants on the platform.
    isvs : int
        ERP vendors (ISVs), 1-99.
    seed : int, default 0
    fake_rate : float, default 0.05
        Share of fake-trade merchants.
    default_rate : float, default 0.05
        Target 12-month default rate (the realised rate is within about 1 point).
    no_isv_share : float, default 0.2
        Share of merchants that use no ISV.
    off_platform_share : float, default 0.0
        Share of the ISV merchants that have no platform row (ERP data only); their
        ground truth goes to :data:`OFF_PLATFORM_TRUTH_FILE`.
    even_isvs : bool, default False
        Deal the merchants out to ISVs round-robin by merchant number, so with
        ``no_isv_share=0`` every ISV holds the same number (±1) — for scale benchmarks
        that mean "N merchants per node".
        The default draws each merchant's ISV from the non-IID market mix (ISVs differ
        in size, sector and merchant size).
    as_of : datetime.date, default DEFAULT_AS_OF
        Latest ERP snapshot date; snapshots spread over the 90 days before it.
    """

    merchants: int
    isvs: int
    seed: int = 0
    fake_rate: float = 0.05
    default_rate: float = 0.05
    no_isv_share: float = 0.2
    off_platform_share: float = 0.0
    even_isvs: bool = False
    as_of: date = DEFAULT_AS_OF

    def __post_init__(self) -> None:
        if self.merchants < 1:
            raise ValueError(f"merchants must be >= 1, got {self.merchants}")
        if not 1 <= self.isvs <= 99:
            raise ValueError(f"isvs must be in 1..99, got {self.isvs}")
        for name in ("fake_rate", "default_rate"):
            if not 0.0 < getattr(self, name) < 0.5:
                raise ValueError(f"{name} must be in (0, 0.5), got {getattr(self, name)}")
        if not 0.0 <= self.no_isv_share < 1.0:
            raise ValueError(f"no_isv_share must be in [0, 1), got {self.no_isv_share}")
        if not 0.0 <= self.off_platform_share < 1.0:
            raise ValueError(
                f"off_platform_share must be in [0, 1), got {self.off_platform_share}"
            )

    @property
    def data_from(self) -> date:
        """Earliest snapshot date the world can contain."""
        return self.as_of - timedelta(days=_SNAPSHOT_SPREAD_DAYS - 1)


def isv_ids(n: int) -> list[str]:
    """ISV ids ``isv01 … isvNN``."""
    return [f"isv{k + 1:02d}" for k in range(n)]


def _probit_scale(var: float) -> float:
    # E[sigma(a + X)] for X ~ N(0, var) is close to sigma(a / sqrt(1 + pi var / 8)).
    return math.sqrt(1.0 + math.pi * var / 8.0)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@dataclass(frozen=True, slots=True)
class _IsvMix:
    sector_mix: np.ndarray  # (K, S)
    share: np.ndarray  # (K,)
    size_tilt: np.ndarray  # (K,)


def _isv_mix(p: SynthParams) -> _IsvMix:
    rng = np.random.default_rng([p.seed, 2**32 - 1])
    return _IsvMix(
        sector_mix=rng.dirichlet(np.full(len(SECTORS), 0.7), size=p.isvs),
        share=rng.dirichlet(np.full(p.isvs, 2.0)),
        size_tilt=rng.uniform(-0.8, 0.8, size=p.isvs),
    )


def _chunk(p: SynthParams, mix: _IsvMix, index: int, start: int, n: int
           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate merchants ``start … start+n-1``: the platform rows and the ERP rows (with ISV)."""
    rng = np.random.default_rng([p.seed, index])

    def eps() -> np.ndarray:
        return rng.standard_normal(n)

    s = rng.choice(len(SECTORS), size=n, p=SECTOR_SHARES)
    z, h, lev = eps(), eps(), eps()
    a_f = _logit(p.fake_rate) * _probit_scale(0.16)
    fake = rng.random(n) < 1 / (1 + np.exp(-(a_f - 0.4 * h)))
    a_d = _logit(p.default_rate) * _probit_scale(1.69 + 0.81 + 0.0225) - 0.8 * p.fake_rate
    logit_d = a_d - 1.3 * h + 0.9 * lev + 0.8 * fake - 0.15 * z
    default = rng.random(n) < 1 / (1 + np.exp(-logit_d))

    # Platform.
    real_orders = np.exp(np.log(300) + z + 0.25 * h + 0.3 * eps())
    aov = np.exp(AOV_LOG[s] + 0.3 * eps())
    u = np.where(fake, rng.uniform(0.3, 1.5, n), 0.0)
    conv = 1 / (1 + np.exp(-(-3.3 + 0.25 * h + 0.3 * eps())))
    ret = 1 / (1 + np.exp(-(-2.6 - 0.35 * h + 0.3 * eps()))) / (1 + 0.3 * u)
    tenure = np.clip(np.ceil(np.exp(np.log(30) + 0.3 * h + 0.8 * eps())), 1, 240)
    orders_p = np.maximum(np.round(real_orders * (1 + u)), 1)
    visitors = np.maximum(np.round(real_orders * (1 + 0.8 * u) / conv), orders_p)
    ids = np.char.add("m", np.char.zfill(np.arange(start, start + n).astype(str), 7))

    # ISV assignment (non-IID by sector and size).
    w = mix.share[None, :] * mix.sector_mix.T[s] * np.exp(z[:, None] * mix.size_tilt[None, :])
    cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
    pick = np.minimum((rng.random(n)[:, None] > cum).sum(axis=1), p.isvs - 1)
    if p.even_isvs:  # drawn above all the same, so the world's other columns do not move
        pick = np.arange(start, start + n) % p.isvs
    none = rng.random(n) < p.no_isv_share
    names = np.array(isv_ids(p.isvs) + [NO_ISV], dtype=object)
    isv = names[np.where(none, p.isvs, pick)]

    platform = pd.DataFrame({
        MERCHANT_ID: ids,
        SECTOR: np.array(SECTORS, dtype=object)[s],
        "sales": np.round(100 * real_orders * aov * (1 + u)).astype(np.int64),
        "orders": orders_p.astype(np.int64),
        "visitors": visitors.astype(np.int64),
        "conversion": orders_p / visitors,
        "return_rate": ret,
        "rating": np.clip(4.6 + 0.12 * h + 0.15 * eps() + 0.03 * fake, 1, 5),
        "seller_online_hours": np.exp(np.log(8) + 0.15 * h + 0.3 * eps()),
        "tenure_months": tenure.astype(np.int64),
        ISV_COLUMN: isv,
        LABEL: default.astype(np.int8),
        FAKE_LABEL: fake.astype(np.int8),
    })

    # ERP.
    revenue = 100 * real_orders * aov * (np.exp(0.15 + 0.1 * eps()) + 0.8 * u)
    gm = np.clip(MARGIN[s] + 0.06 * h - 0.04 * lev + 0.03 * eps(), -0.5, 0.9)
    labour = revenue * np.exp(np.log(0.08) - 0.15 * h + 0.2 * eps())
    empty = 0.25 * u * real_orders
    shipped = np.maximum(np.round(real_orders * np.exp(0.05 * eps()) + empty), 1)
    ship_per = 100 * np.exp(SHIP_LOG[s] + 0.2 * eps()) * (1 - 0.7 * empty / shipped)
    op = gm - labour / revenue - ship_per * shipped / revenue - 0.08 - 0.03 * lev \
        + 0.02 * eps()
    days = _SNAPSHOT_SPREAD_DAYS
    as_of = (np.datetime64(p.as_of, "D") - rng.integers(0, days, n).astype("timedelta64[D]"))
    erp = pd.DataFrame({
        MERCHANT_ID: ids,
        AS_OF: as_of.astype("datetime64[ms]"),
        "monthly_revenue": np.round(revenue),
        "cost_of_goods": np.round(revenue * (1 - gm)),
        "gross_margin": gm,
        "operating_margin": op,
        "inventory_days": np.exp(np.log(45) - 0.25 * h + 0.2 * lev + 0.3 * eps()),
        "receivable_days": np.exp(np.log(15) - 0.2 * h + 0.3 * lev + 0.4 * eps()),
        "payable_days": np.exp(np.log(35) - 0.2 * h + 0.4 * lev + 0.3 * eps()),
        "labour_cost": np.round(labour),
        "shipping_cost_per_order": np.round(ship_per),
        "orders_shipped": shipped,
        "refunds": np.round(revenue * ret * 0.9 + 0.6 * u * 100 * real_orders * aov),
        "cash": np.round(revenue * np.exp(np.log(1.2) + 0.5 * h - 0.4 * lev + 0.5 * eps())),
        "debt": np.round(revenue * np.exp(np.log(1.5) - 0.2 * h + 0.8 * lev + 0.5 * eps())),
        "months_of_history": np.ceil(rng.uniform(0.3, 1.0, n) * tenure),
    })
    erp[_ERP_INT] = erp[_ERP_INT].astype(np.int64)
    erp[ISV_COLUMN] = isv
    erp = erp[~none]
    return platform, erp


def _chunks(p: SynthParams) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    mix = _isv_mix(p)
    for index, start in enumerate(range(0, p.merchants, _CHUNK)):
        yield _chunk(p, mix, index, start, min(_CHUNK, p.merchants - start))


_TRUTH_COLUMNS = (MERCHANT_ID, ISV_COLUMN, SECTOR, LABEL, FAKE_LABEL)


def _off_platform(p: SynthParams, index: int, platform: pd.DataFrame
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a chunk's platform rows into (on-platform rows, off-platform ground truth).

    Each ISV merchant is off-platform with probability ``off_platform_share``, drawn
    from the chunk's own stream ``[seed, index, 2**32 - 2]`` (not the chunk's feature
    stream, so a world with share 0 is the world it always was).
    """
    if p.off_platform_share <= 0:
        return platform, platform[list(_TRUTH_COLUMNS)].iloc[:0]
    draw = np.random.default_rng([p.seed, index, _OFF_PLATFORM_STREAM]).random(len(platform))
    off = (platform[ISV_COLUMN].to_numpy() != NO_ISV) & (draw < p.off_platform_share)
    truth = platform.loc[off, list(_TRUTH_COLUMNS)].reset_index(drop=True)
    return platform[~off].reset_index(drop=True), truth


@dataclass
class _Tally:
    merchants: int = 0
    defaults: int = 0
    fakes: int = 0
    sectors: dict[str, int] = field(default_factory=dict)

    def add(self, platform: pd.DataFrame) -> None:
        self.merchants += len(platform)
        self.defaults += int(platform[LABEL].sum())
        self.fakes += int(platform[FAKE_LABEL].sum())
        for k, v in platform[SECTOR].value_counts().items():
            self.sectors[str(k)] = self.sectors.get(str(k), 0) + int(v)

    def summary(self) -> dict[str, Any]:
        n = max(self.merchants, 1)
        return {"merchants": self.merchants, "default_rate": round(self.defaults / n, 5),
                "fake_rate": round(self.fakes / n, 5),
                "sector_mix": {k: round(v / n, 4) for k, v in sorted(self.sectors.items())}}


def _manifest(p: SynthParams, total: _Tally, per_isv: dict[str, _Tally], none: _Tally,
              files: dict[str, str], off: _Tally | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"merchants": p.merchants, "isvs": p.isvs, "seed": p.seed,
                              "fake_rate": p.fake_rate, "default_rate": p.default_rate,
                              "no_isv_share": p.no_isv_share}
    extra: dict[str, Any] = {}
    if p.off_platform_share > 0:  # absent otherwise: a share-0 world.json is as it was
        params["off_platform_share"] = p.off_platform_share
        extra["off_platform"] = {**(off or _Tally()).summary(),
                                 "ground_truth_file": files.get(OFF_PLATFORM_TRUTH_FILE)}
    return {
        **extra,
        "version": 1,
        "generator": "federation.synth",
        "params": params,
        "as_of": p.as_of.isoformat(),
        "data_from": p.data_from.isoformat(),
        "data_to": p.as_of.isoformat(),
        "world": total.summary(),
        "no_isv": none.summary(),
        "isvs": {k: {**t.summary(), "file": files.get(k)} for k, t in per_isv.items()},
        "platform_file": files.get("platform"),
    }


@dataclass(frozen=True, slots=True)
class SynthWorld:
    """An in-memory world: the platform table, one ERP table per ISV, and the manifest.

    ``off_platform`` is the ground truth of the merchants without a platform row
    (``merchant_id``, ``isv``, ``sector``, ``default_12m``, ``fake_trade``; empty at share 0).
    """

    platform: pd.DataFrame
    erp: dict[str, pd.DataFrame]
    manifest: dict[str, Any]
    off_platform: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(_TRUTH_COLUMNS))
    )


def generate_world(params: SynthParams) -> SynthWorld:
    """Generate a world in memory (tests, benchmarks at modest size).

    Returns
    -------
    SynthWorld
        ``erp[isv_id]`` holds ``merchant_id``, ``as_of`` and the ERP fields; the
        platform table has the platform fields, ``isv``, ``default_12m`` and ``fake_trade``
        (only the merchants on the platform); ``off_platform`` the others' ground truth.
    """
    plats, erps, truths = [], [], []
    total, none, off = _Tally(), _Tally(), _Tally()
    per_isv = {k: _Tally() for k in isv_ids(params.isvs)}
    for index, (plat, erp) in enumerate(_chunks(params)):
        total.add(plat)
        none.add(plat[plat[ISV_COLUMN] == NO_ISV])
        for k, t in per_isv.items():
            t.add(plat[plat[ISV_COLUMN] == k])
        on, truth = _off_platform(params, index, plat)
        off.add(truth)
        plats.append(on)
        truths.append(truth)
        erps.append(erp)
    platform = pd.concat(plats, ignore_index=True)
    erp_all = pd.concat(erps, ignore_index=True)
    erp = {k: g.drop(columns=ISV_COLUMN).reset_index(drop=True)
           for k, g in erp_all.groupby(ISV_COLUMN, sort=True)}
    manifest = _manifest(params, total, per_isv, none, {}, off)
    return SynthWorld(platform, erp, manifest, pd.concat(truths, ignore_index=True))


class _TableWriter:
    """Appends frames to one Parquet or CSV file, opening it on first write."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self._pq: pq.ParquetWriter | None = None
        self._started = False

    def write(self, df: pd.DataFrame) -> None:
        if self.fmt == "parquet":
            table = pa.Table.from_pandas(df, preserve_index=False)
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.path, table.schema)
            self._pq.write_table(table)
        else:
            df.to_csv(self.path, mode="a" if self._started else "w", header=not self._started,
                      index=False, date_format="%Y-%m-%d")
        self._started = True

    def close(self) -> None:
        if self._pq is not None:
            self._pq.close()


def write_world(params: SynthParams, out_dir: str | Path, *, fmt: str = "parquet"
                ) -> dict[str, Any]:
    """Generate a world chunk by chunk and stream it to ``out_dir``.

    Writes ``platform.<fmt>``, ``isvNN.<fmt>`` per ISV (in ERP schema names, so the
    identity column mapping reads them) and ``world.json`` (the manifest, returned);
    with ``off_platform_share > 0`` also ``ground-truth-off-platform.<fmt>`` (the
    off-platform merchants' labels, for simulations only) and an ``off_platform``
    section in ``world.json``. The manifest's ``world`` and per-ISV tallies count every
    merchant, off-platform ones included; the platform table holds
    ``world.merchants − off_platform.merchants`` rows.

    Parameters
    ----------
    params : SynthParams
    out_dir : str | pathlib.Path
        Created if missing; existing files of the same names are replaced.
    fmt : {"parquet", "csv"}, default "parquet"
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = isv_ids(params.isvs)
    files = {k: f"{k}.{fmt}" for k in ["platform", *ids]}
    if params.off_platform_share > 0:
        files[OFF_PLATFORM_TRUTH_FILE] = f"{OFF_PLATFORM_TRUTH_FILE}.{fmt}"
    writers = {k: _TableWriter(out / f, fmt) for k, f in files.items()}
    total, none, off = _Tally(), _Tally(), _Tally()
    per_isv = {k: _Tally() for k in ids}
    try:
        for index, (plat, erp) in enumerate(_chunks(params)):
            on, truth = _off_platform(params, index, plat)
            writers["platform"].write(on)
            if OFF_PLATFORM_TRUTH_FILE in writers:
                writers[OFF_PLATFORM_TRUTH_FILE].write(truth)
                off.add(truth)
            total.add(plat)
            none.add(plat[plat[ISV_COLUMN] == NO_ISV])
            for k, g in erp.groupby(ISV_COLUMN, sort=True):
                writers[str(k)].write(g.drop(columns=ISV_COLUMN))
                per_isv[str(k)].add(plat[plat[ISV_COLUMN] == k])
    finally:
        for w in writers.values():
            w.close()
    # An ISV that drew no merchant still gets a (header-only) table.
    for k in ids:
        if per_isv[k].merchants == 0:
            empty = _chunk(params, _isv_mix(params), 0, 0, 1)[1].iloc[:0]
            writers[k] = _TableWriter(out / files[k], fmt)
            writers[k].write(empty.drop(columns=ISV_COLUMN))
            writers[k].close()
    manifest = _manifest(params, total, per_isv, none, files, off)
    (out / "world.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
