"""The one exit policy and row comparison every benchmark shares (``bench/_common.py``)."""

from __future__ import annotations

import argparse
import math

import pytest

from bench._common import Row, add_exit_option, best_of, finish, missed


def test_a_missed_target_exits_one_unless_no_fail(capsys: pytest.CaptureFixture[str]) -> None:
    """Missed → 1 and listed on stderr; ``--no-fail`` → 0, still listed; all met → 0."""
    rows = [Row("fast", 1.0, "s", target="≤ 2 s", met=True),
            Row("slow", 3.0, "s", target="≤ 2 s", met=False),
            Row("context", 5.0, "s")]  # fmt: skip

    strict, lenient = finish(rows), finish(rows, no_fail=True)
    err = capsys.readouterr().err

    assert (strict, lenient) == (1, 0)
    assert err.count("targets missed: slow") == 2
    assert finish(rows[:1] + rows[2:]) == 0
    assert missed(rows) == ["slow"]


def test_no_fail_is_one_flag_on_every_parser() -> None:
    """``add_exit_option`` gives a parser ``--no-fail``, off by default."""
    parser = argparse.ArgumentParser()
    add_exit_option(parser)

    assert parser.parse_args([]).no_fail is False
    assert parser.parse_args(["--no-fail"]).no_fail is True


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (Row("time", 2.0, "s", "peer", 8.0), 4.0),  # a cost: peer ÷ fedgate
        (Row("rate", 8.0, "/s", "peer", 2.0), 4.0),  # a rate: fedgate ÷ peer
        (Row("cost", 3.0, "s", "peer", 2.0, compare="ratio"), 1.5),
        (Row("auc", 0.8, "AUC", "peer", 0.75, compare="diff"), 0.05),
        (Row("override", 1.0, "µs", "peer", 5.0, ratio_override=7.0), 7.0),
        (Row("no peer", 1.0, "s"), None),
        (Row("nan peer", 0.8, "AUC", "—", float("nan"), compare="diff"), None),
    ],
)
def test_versus_compares_as_the_row_says(row: Row, expected: float | None) -> None:
    """Each comparison mode gives the figure the tables print."""
    got = row.versus

    assert (got is None and expected is None) or math.isclose(got or 0.0, expected or 0.0)


def test_best_of_keeps_the_fastest_and_the_result() -> None:
    """``best_of`` runs ``repeat`` times and returns the minimum and the last result."""
    calls: list[int] = []

    seconds, out = best_of(lambda: calls.append(1) or len(calls), 3, no_gc=True)

    assert len(calls) == 3 and out == 3 and seconds >= 0.0
