"""A scoring job names the consent purpose it serves (``score-purpose``): two are allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation import FederationError
from federation.apps._settings import SCORE_PURPOSES, ServerSettings


def _rc(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "job-id": "job-s",
        "mode": "score",
        "spec": "pd-erp",
        "db-url": f"sqlite:///{tmp_path / 'x.db'}",
        "gateway-key": str(tmp_path / "gw.pem"),
        "node-keys": str(tmp_path / "nodes.json"),
        "data-consumer": "platform",
        "out-dir": str(tmp_path / "out"),
        "model-dir": str(tmp_path / "model"),
        **extra,
    }


def test_default_is_credit_scoring_and_monitoring_is_accepted(tmp_path: Path) -> None:
    """No key: credit_scoring (origination); post_loan_monitoring: the re-scoring of loans."""
    plain = ServerSettings.from_run_config(_rc(tmp_path))
    monitoring = ServerSettings.from_run_config(
        _rc(tmp_path, **{"score-purpose": "post_loan_monitoring"})
    )

    assert plain.score_purpose == "credit_scoring"
    assert monitoring.score_purpose == "post_loan_monitoring"
    assert SCORE_PURPOSES == ("credit_scoring", "post_loan_monitoring")


@pytest.mark.parametrize("purpose", ["model_training", "marketing", ""])
def test_any_other_purpose_is_a_bad_config(tmp_path: Path, purpose: str) -> None:
    """A scoring job cannot name training or any purpose outside the two."""
    with pytest.raises(FederationError) as info:
        ServerSettings.from_run_config(_rc(tmp_path, **{"score-purpose": purpose}))

    assert info.value.code == "BAD_CONFIG"
