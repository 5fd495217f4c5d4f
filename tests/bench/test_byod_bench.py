"""Smoke run of ``bench.federation``'s bring-your-own-data rows (credit_data, quick size)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.federation import BYOD, BenchConfig, render, run


@pytest.mark.slow
def test_quick_byod_rows_come_from_real_jobs(tmp_path: Path) -> None:
    """Peer, federated g with and without DP, f and gated f + g, each with its target."""
    result = run(BenchConfig.quick_config((BYOD,)), workdir=tmp_path)

    metrics = [r.metric.split(" (")[0].split(",")[0] for r in result.rows]
    assert metrics == ["centralized logistic", "federated g", "federated g",
                       "f_platform logistic", "f + g"]
    assert [j.name for j in result.jobs] == ["byod-credit-fed", "byod-credit-dp"]
    assert all(0.5 < r.value <= 1.0 for r in result.rows), result.rows
    assert [r.target for r in result.rows if r.target] == ["≥ peer − 0.01", "≥ peer − 0.03",
                                                          "≥ f"]
    dp = result.jobs[1]
    assert dp.epsilon and all(0 < e <= 3.0 + 1e-6 for e in dp.epsilon.values())
    assert "| credit |" in render(result)
