"""The credit policy: parsing, the line rule by hand, versions on the ledger."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway import credit
from ledger import parse_canonical

from .._entries import entries_of_kind


def test_line_rule_by_hand() -> None:
    """k=50 %, cap 500k yuan, min 2k yuan, cut-off 12 %: lines computed on paper."""
    pol = credit.parse_policy(credit.DEFAULT_POLICY_TOML).line
    sales = np.asarray([600_000_00, 600_000_00, 3_000_000_00, 600_000_00, 3_000_00, 600_000_00])
    pd = np.asarray([0.0, 0.06, 0.03, 0.12, 0.0, np.nan])

    lines = credit.line_amounts(pol, sales, pd)

    # 600k × 50 % = 300k yuan at PD 0; × h = 1 - 0.06/0.12 = 0.5 → 150k; 3M × 50 % × 0.75 =
    # 1.125M capped at 500k; PD at the cut-off → 0; 3k × 50 % = 1.5k < 2k minimum → 0; NaN → 0.
    assert lines.tolist() == [30_000_000, 15_000_000, 50_000_000, 0, 0, 0]


def test_line_rounds_down_to_whole_yuan() -> None:
    """A line is floored to whole yuan after the PD taper."""
    pol = credit.parse_policy(credit.DEFAULT_POLICY_TOML).line

    line = credit.line_amounts(pol, np.asarray([1_000_001_01]), np.asarray([0.01]))

    # base = 100000101 × 5000 // 10000 = 50000050; h_ppm = 916666; × // 1e6 = 45833379 → 45833300
    assert line.tolist() == [45_833_300]


@pytest.mark.parametrize(
    ("old", "new", "code"),
    [
        ("k_bp = 5000", "k_bp = -1", "BAD_POLICY"),
        ("pd_cutoff = 0.12", 'pd_cutoff = "x"', "BAD_POLICY"),
        ('currency = "CNY"', 'currency = "cny"', "BAD_POLICY"),
        ("[monitoring]", "[monitorin]", "BAD_POLICY"),
        ("share_bp = 2000", "share_bp = 20000", "BAD_POLICY"),
        ("min_yuan = 2000", "min_yuan = 900000", "BAD_POLICY"),
    ],
)
def test_bad_policy_is_refused(old: str, new: str, code: str) -> None:
    """An out-of-range or malformed policy raises PolicyError with a code."""
    text = credit.DEFAULT_POLICY_TOML.replace(old, new)

    with pytest.raises(credit.PolicyError) as err:
        credit.parse_policy(text)

    assert err.value.code == code


def test_policy_versions_are_ledger_entries(sessions: sessionmaker[Session]) -> None:
    """Each new text is a version with its SHA-256 on the ledger; the same text again is not."""
    other = credit.DEFAULT_POLICY_TOML.replace("share_bp = 2000", "share_bp = 2500")
    with sessions() as s, s.begin():
        v1 = credit.activate_policy(s, credit.DEFAULT_POLICY_TOML)
        again = credit.activate_policy(s, credit.DEFAULT_POLICY_TOML)
        v2 = credit.activate_policy(s, other)
        version, current = credit.current_policy(s)
        entries = entries_of_kind(s, credit.POLICY_ENTRY)

    assert (v1, again, v2, version) == (1, 1, 2, 2)
    assert current.pricing.share_bp == 2500
    bodies = [parse_canonical(e)["body"] for e in entries]
    assert [b["version"] for b in bodies] == [1, 2]
    assert bodies[1]["sha256"] == hashlib.sha256(other.encode()).hexdigest()
    assert bodies[1]["text"] == other
