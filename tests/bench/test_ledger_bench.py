"""Smoke run of ``bench.ledger`` at a small size: every correctness check inside it holds."""

from __future__ import annotations

import os

import pytest

from bench.ledger import DEFAULT_PG_URL, render, run


def test_bench_runs_small() -> None:
    """The benchmark completes at 1,000 entries and reports every metric with a fedgate value."""
    pg_url = os.environ.get(
        "FEDGATE_BENCH_POSTGRES_URL", os.environ.get("FEDGATE_TEST_POSTGRES_URL", DEFAULT_PG_URL)
    )

    result = run(1_000, singles=5, proofs=50, pg_entries=500, pg_url=pg_url)
    table = render(result)

    metrics = [row.metric for row in result.rows]
    assert result.entries == 1_000
    assert any("batched" in m and "SQLite" in m for m in metrics)
    assert any("offline audit" in m for m in metrics)
    assert all(row.fedgate > 0 for row in result.rows if row.unit != "skipped")
    assert "| metric |" in table
    assert any("PostgreSQL" in m and "batched" in m for m in metrics)


@pytest.mark.parametrize("argv", [["--entries", "1"], ["--proofs", "0"]])
def test_bench_rejects_bad_arguments(argv: list[str]) -> None:
    """Nonsense sizes are refused by the argument parser before anything runs."""
    from bench.ledger import main

    with pytest.raises(SystemExit) as info:
        main(argv)

    assert info.value.code == 2
