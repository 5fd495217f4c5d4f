"""Smoke run of ``bench.credit`` at a small size: every correctness check inside it holds."""

from __future__ import annotations

import os

import pytest

from bench.credit import DEFAULT_PG_URL, render, run

pytestmark = pytest.mark.slow


def test_credit_bench_runs_small() -> None:
    """Economics and both databases' import/close run; digests agree; the table renders."""
    pg_url = os.environ.get(
        "FEDGATE_BENCH_POSTGRES_URL", os.environ.get("FEDGATE_TEST_POSTGRES_URL", DEFAULT_PG_URL)
    )

    result = run(2_000, 300, seed=0, pg_url=pg_url)
    table = render(result)

    f, w = result.books
    assert f.exposure > 0 and w.exposure <= f.exposure
    assert result.auc["f + ERP"] > result.auc["f only"]
    assert {row.section for row in result.throughput} == {"SQLite", "PostgreSQL"}
    assert len(set(result.digests.values())) == 1
    assert "| at equal exposure |" in table and "| throughput |" in table
