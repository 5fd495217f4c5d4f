"""Smoke run of ``bench.ledger`` at a small size: every correctness check inside it holds."""

from __future__ import annotations

import os

import pytest

import bench.ledger
from bench.ledger import DEFAULT_PG_URL, EXPECTED_DIGESTS, main, render, run

_UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"


def test_bench_runs_small() -> None:
    """The benchmark completes at 1,000 entries, reports every metric and matches its digest."""
    pg_url = os.environ.get(
        "FEDGATE_BENCH_POSTGRES_URL", os.environ.get("FEDGATE_TEST_POSTGRES_URL", DEFAULT_PG_URL)
    )

    result = run(1_000, singles=5, proofs=50, pg_entries=500, pg_url=pg_url)
    table = render(result)

    metrics = [row.metric for row in result.rows]
    assert result.entries == 1_000
    assert result.digest == EXPECTED_DIGESTS[(1_000, 50)]
    assert any("batched" in m and "SQLite" in m for m in metrics)
    assert any("offline audit" in m for m in metrics)
    assert all(row.value > 0 for row in result.rows)
    assert "| metric |" in table
    assert any("PostgreSQL" in m and "batched" in m for m in metrics)


def test_unreachable_postgres_fails_the_run() -> None:
    """Without --no-postgres an unreachable PostgreSQL ends the run before anything is timed."""
    with pytest.raises(SystemExit) as info:
        run(200, singles=1, proofs=5, pg_entries=100, pg_url=_UNREACHABLE)

    assert "--no-postgres" in str(info.value.code)


def test_no_postgres_leaves_it_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-postgres runs the SQLite part and records PostgreSQL as skipped, exit 0.

    ``--no-fail``: the targets are set for 10^6 entries, not for this smoke size.
    """
    monkeypatch.setenv("FEDGATE_BENCH_POSTGRES_URL", _UNREACHABLE)

    code = main(
        ["--entries", "200", "--singles", "1", "--proofs", "5", "--no-postgres", "--no-fail"]
    )

    assert code == 0


def test_wrong_digest_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose outputs differ from the stored digest exits instead of reporting times."""
    monkeypatch.setitem(bench.ledger.EXPECTED_DIGESTS, (200, 5), "0" * 64)

    with pytest.raises(SystemExit) as info:
        run(200, singles=1, proofs=5, pg_entries=100, pg_url=None)

    assert "is not the stored" in str(info.value.code)


@pytest.mark.parametrize("argv", [["--entries", "1"], ["--proofs", "0"]])
def test_bench_rejects_bad_arguments(argv: list[str]) -> None:
    """Nonsense sizes are refused by the argument parser before anything runs."""
    with pytest.raises(SystemExit) as info:
        main(argv)

    assert info.value.code == 2
