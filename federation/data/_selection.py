"""The rows a node may read (:class:`RowSelection`) and the snapshot-date normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

import numpy as np
import pandas as pd


def _day(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value



class RowSelection:
    """The rows a node may read: per merchant id, an inclusive consented date range.

    Parameters
    ----------
    merchant_ids : Sequence[str]
        Distinct ids.
    data_from, data_to : Sequence[datetime.date]
        Aligned with ``merchant_ids``; a row is selected when its merchant is listed
        and its snapshot date lies in ``[data_from, data_to]``.
    """

    __slots__ = ("_index", "_lo", "_hi", "_groups")

    def __init__(
        self, merchant_ids: Sequence[str], data_from: Sequence[date], data_to: Sequence[date]
    ) -> None:
        if not len(merchant_ids) == len(data_from) == len(data_to):
            raise ValueError("merchant_ids, data_from and data_to must have one value each")
        self._index = pd.Index(np.asarray([str(m) for m in merchant_ids], dtype=object))
        if not self._index.is_unique:
            raise ValueError("merchant_ids must be distinct")
        self._lo = np.asarray([_day(d) for d in data_from], dtype="datetime64[D]")
        self._hi = np.asarray([_day(d) for d in data_to], dtype="datetime64[D]")
        self._groups: list[tuple[date, date, list[str]]] | None = None

    def __len__(self) -> int:
        return len(self._index)

    @property
    def merchant_ids(self) -> list[str]:
        """The selected merchants."""
        return list(self._index)

    def groups(self) -> list[tuple[date, date, list[str]]]:
        """``(data_from, data_to, ids)`` per distinct range, in range order."""
        if self._groups is None:
            frame = pd.DataFrame({"id": self._index, "lo": self._lo, "hi": self._hi})
            self._groups = [
                (pd.Timestamp(lo).date(), pd.Timestamp(hi).date(), list(g["id"]))
                for (lo, hi), g in frame.groupby(["lo", "hi"], sort=True)
            ]
        return self._groups

    def mask(self, ids: pd.Series, as_of: pd.Series) -> np.ndarray:
        """Vectorised: which rows (merchant id, normalised ``as_of``) are selected."""
        if len(ids) == 0 or len(self._index) == 0:
            return np.zeros(len(ids), dtype=bool)
        pos = self._index.get_indexer(ids.astype(str).str.strip())
        found = pos >= 0
        safe = np.where(found, pos, 0)
        d = as_of.to_numpy("datetime64[ns]")
        lo = self._lo[safe].astype("datetime64[ns]")
        hi = self._hi[safe].astype("datetime64[ns]")
        valid = ~np.isnat(d)
        return np.asarray(found & valid & (d >= lo) & (d <= hi), dtype=bool)


def _dates(values: pd.Series) -> pd.Series:
    """Snapshot dates as datetime64 at midnight (NaT where unparseable)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        out = values
    else:
        out = pd.to_datetime(values, errors="coerce", format="ISO8601")
    if getattr(out.dt, "tz", None) is not None:
        out = out.dt.tz_localize(None)
    return out.dt.normalize()
