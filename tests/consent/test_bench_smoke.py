"""A tiny run of ``bench.consent``: its own checks pass and its digest is the stored one."""

from __future__ import annotations

import pytest

from bench import consent as bench

SMOKE = (400, 3_000, 200, 7)


def test_bench_smoke_run_matches_stored_digest() -> None:
    """A small decision set, snapshot, cohort and manifest run end to end; nothing drifts."""
    merchants, cohort, manifest, seed = SMOKE

    result = bench.run(
        merchants, cohort, manifest, seed, snapshot=300, single_calls=2_000, single_rounds=2
    )

    assert result.allowed > 0
    assert result.expected_digest == bench.EXPECTED_DIGESTS[SMOKE] == result.digest
    assert {r.metric.split(" (")[0] for r in result.rows} >= {
        "single decision latency",
        "snapshot load, cold",
        "snapshot load, warm",
        "database check latency",
        "cohort check",
        "manifest sign + verify",
    }
    assert "| single decision latency" in bench.render(result)


def test_wrong_answer_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A digest that differs from the stored one is a correctness failure: exit 1, no table."""
    monkeypatch.setitem(bench.EXPECTED_DIGESTS, SMOKE, "0" * 64)

    code = bench.main(
        ["--merchants", "400", "--cohort", "3000", "--manifest", "200", "--snapshot", "50",
         "--single-calls", "200", "--single-rounds", "1", "--bulk", "300"]
    )  # fmt: skip

    assert code == 1


def test_missed_target_is_marked_in_the_table() -> None:
    """A missed target prints ✘ in its row and is listed as missed (the exit policy is
    :mod:`bench._common`'s, tested in ``tests/bench/test_common.py``)."""
    rows = (bench.Row("manifest sign + verify", 2.0, "s", target="≤1 s", met=False),)
    result = bench.BenchResult(1, 1, 1, 1, rows, 0, "d" * 64, None)

    table = bench.render(result)

    assert "| manifest sign + verify | 2.000 s | — | — | ≤1 s | ✘ |" in table
    assert result.missed == ["manifest sign + verify"]
