"""A tiny run of ``bench.consent``: fedgate and Cedar must agree on every decision."""

from __future__ import annotations

from bench import consent as bench


def test_bench_smoke_run_agrees_with_cedar() -> None:
    """A small decision set, cohort and manifest run end to end; its own checks pass."""
    result = bench.run(merchants=400, cohort_size=3_000, manifest_size=200)

    assert result.allowed > 0
    assert {r.metric.split(" (")[0] for r in result.rows} >= {
        "single decision latency",
        "cohort check",
        "manifest sign + verify",
    }
    assert "| single decision latency |" in bench.render(result)
