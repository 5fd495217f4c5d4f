"""Smoke run of ``bench.federation`` at its quick size: every section reports every row."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.federation import SECTIONS, BenchConfig, main, render, run, tree_memory

# Split ids, merged bin edges and label counts of the quick run: a change in the data, the
# splits or the federated sketches shows here even when every score still looks plausible.
QUICK_DIGEST = "9009c2bebe2c2f70d298a24e2a66c44cec4dc3203cc74ff5004a6a7f829d15b8"


@pytest.mark.slow
def test_quick_bench_reports_every_section(tmp_path: Path) -> None:
    """The quick run fills every section; each federated row comes from a real Flower job."""
    cfg = BenchConfig.quick_config()

    result = run(cfg, workdir=tmp_path)
    table = render(result)

    assert set(result.section_seconds) == set(SECTIONS)
    metrics = {(r.section, r.metric.split(" (")[0]) for r in result.rows}
    assert {("GMSC", "centralized pooled logistic"), ("GMSC", "federated logistic"),
            ("GMSC", "federated DP logistic"), ("PAKDD", "pooled logistic"),
            ("PAKDD", "federated logistic"), ("synthetic", "platform-only PD"),
            ("synthetic", "platform + ERP combiner")} <= metrics
    assert sum(" alone " in r.metric for r in result.rows if r.section == "GMSC") == 4
    assert sum(" alone " in r.metric for r in result.rows if r.section == "PAKDD") == 5
    assert all(0.0 < r.value <= 1.0 for r in result.rows if r.unit == "AUC"), result.rows
    assert result.row("GMSC", "centralized pooled logistic").value > 0.75
    assert [j.name for j in result.jobs] == [
        "gmsc-fed-logistic", "gmsc-dp-logistic", "pakdd-fed-logistic", "synth-pd-erp",
        "synth-fake-trade", "scale",
    ]  # fmt: skip
    rounds = (2, 2, 2, 2, 2, 1)
    assert all(len(j.round_seconds) == r for j, r in zip(result.jobs, rounds, strict=True))
    dp = result.jobs[1]
    assert len(dp.epsilon) == 4 and all(0 < e <= 3.0 + 1e-6 for e in dp.epsilon.values())
    peak = next(r for r in result.rows if r.metric.startswith("peak RSS"))
    assert peak.peer_value is not None and peak.value > peak.peer_value > 0
    assert next(r for r in result.rows if r.section == "DP cost").peer_value > 0  # type: ignore[operator]
    assert "| section | metric |" in table and result.digest in table
    assert result.digest == QUICK_DIGEST


def test_tree_memory_counts_this_process() -> None:
    """The /proc sampler sees at least this interpreter's own resident memory."""
    rss, pss = tree_memory()

    assert rss > 10 * 2**20 and 0 < pss <= rss + 2**20
    assert not math.isnan(rss)


@pytest.mark.parametrize("argv", [["--sections", "nope"], ["--rounds", "0"], ["--sections", ""]])
def test_bench_rejects_bad_arguments(argv: list[str]) -> None:
    """Unknown sections and non-positive sizes are refused before anything runs."""
    with pytest.raises(SystemExit) as info:
        main(argv)

    assert info.value.code == 2
