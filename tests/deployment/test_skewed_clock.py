"""A SuperNode whose clock runs behind beyond the allowance refuses its manifests and says why.

A real deployment (SuperLink with TLS and node auth, the proxy, two SuperNodes with warm
executors); isv1's clock runs :data:`SKEW_S` seconds behind the platform through the
node's test-only clock hook (``federation.apps._mods.TEST_CLOCK_SKEW_ENV``, set in that
node's own environment). libfaketime, the real mechanism, was tried first: under a
negative offset it breaks Python 3.11 itself (``time.sleep`` fails with EINVAL when the
monotonic clock is left alone; ``threading.Event.wait`` hangs when it is shifted), so the
executor hung. A skew of 150 s is one Flower itself would admit (its node authentication
accepts a signed timestamp up to 305 s old), so fedgate's manifest check decides: the node
refuses every manifest as not yet valid (allowance 60 s), reads no row, is paid nothing,
and its log names its clock as the cause. A second node on the right clock serves the same
job, so the refusal is the clock's doing and nothing else's.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from federation import JobFailed, run_job
from federation.apps._mods import TEST_CLOCK_SKEW_ENV
from federation.deploy import LocalFederation, load_node_settings
from ledger import parse_canonical
from ledger._models import LogEntryRow

from ..federation._flworld import grant_consents, make_world

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]

SKEW_S = 150
POLICY = {"min-cohort": 5, "min-score-cohort": 5}
WARM = "fedgate warm ClientApp executor on"


def _logs(fed: LocalFederation, isv: str) -> str:
    d = fed.root / "nodes" / isv
    return "".join(p.read_text() for p in sorted(d.glob("supernode*.log")))


def test_node_behind_the_allowance_refuses_manifests_with_a_clear_log_line(
    tmp_path: Path, db_url: str, sessions: sessionmaker[Session], fed: LocalFederation
) -> None:
    """isv1 runs 150 s behind: it refuses (NOT_YET_VALID, its clock named), isv0 serves."""
    world = make_world(tmp_path / "world", n_isvs=2)
    grant_consents(world, sessions)
    skewed = {TEST_CLOCK_SKEW_ENV: f"-{SKEW_S}"}
    for node in world.nodes:
        toml = fed.node_toml(node, policy=POLICY)
        fed.onboard(load_node_settings(toml))
        fed.start_node(toml, env=skewed if node.isv_id == "isv1" else None)
    deadline = time.monotonic() + 240
    while not all(WARM in _logs(fed, n.isv_id) for n in world.nodes):  # executors imported
        assert time.monotonic() < deadline, "node executors did not start"
        time.sleep(0.5)

    config = world.run_config(
        job_id="skew", db_url=db_url, out="skew", categories="cash_and_debt,margins", rounds=1,
        **{"timeout-s": 60, "min-nodes": 2},
    )  # fmt: skip
    try:
        result = run_job(config, world.nodes, deployment=fed.runtime(timeout=240))
        reasons = [f for r in result.rounds for f in r.failures]
        assert result.nodes == ("isv0", "isv1")  # it proved its identity: no manifest there
        assert all("isv1" not in r.train for r in result.rounds)
        assert all(set(r.train) == {"isv0"} for r in result.rounds)
    except JobFailed as exc:  # the job fails on its nodes' failures: cleanly, with reasons
        reasons = list(exc.reasons)
    # The platform sees the refusal's code (the node's guard keeps the details home).
    assert any(r.startswith("sketch@isv1: [4002] NOT_YET_VALID") for r in reasons), reasons
    assert not any("isv0" in r for r in reasons), reasons

    logs = _logs(fed, "isv1")
    refusals = [line for line in logs.splitlines() if "NOT_YET_VALID" in line]
    assert refusals, f"no NOT_YET_VALID line in isv1's log:\n{logs[-3000:]}"
    assert "on this node's clock" in refusals[0] and "is this node's clock behind?" in refusals[0]
    assert "NOT_YET_VALID" not in _logs(fed, "isv0")
    with sessions() as s:
        paid = {
            parse_canonical(row.leaf_data)["body"]["data_provider"]
            for row in s.scalars(select(LogEntryRow).where(LogEntryRow.kind == "data.used"))
        }
    assert "isv1" not in paid and "isv0" in paid
