"""`fedgate fl score --merchants`: the merchant list and the narrowed cohort source."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway import jobs


class _Inner:
    """A consent cohort that allows m1, m2, m3 (stands in for the consent store's answer)."""

    def entries(self, use: Any) -> list[Any]:
        return [SimpleNamespace(merchant_id=m) for m in ("m1", "m2", "m3")]


def test_listed_cohort_keeps_only_listed_and_consented() -> None:
    """A listed merchant without consent stays out; a consented one not listed stays out."""
    source = jobs.ListedCohort(_Inner(), ["m2", "m3", "m9"])

    assert [e.merchant_id for e in source.entries(None)] == ["m2", "m3"]


def test_read_merchant_list(tmp_path: Path) -> None:
    """One id per line or a CSV with a merchant_id header; empty lists are refused."""
    (tmp_path / "a.txt").write_text("m2\nm1\n\nm2\n", "utf-8")
    (tmp_path / "b.csv").write_text("merchant_id,isv\nm5,isv01\n", "utf-8")
    (tmp_path / "c.csv").write_text("merchant_id\n", "utf-8")

    assert jobs.read_merchant_list(tmp_path / "a.txt") == ["m1", "m2"]
    assert jobs.read_merchant_list(tmp_path / "b.csv") == ["m5"]
    with pytest.raises(jobs.JobSetupError) as info:
        jobs.read_merchant_list(tmp_path / "c.csv")
    assert info.value.code == "BAD_MERCHANTS"
