"""A streamed cohort on the deployment runtime: chunk messages through the proxy and SuperLink.

Two SuperNodes with warm executors, one DP training round with ``manifest-stream-above = 0``:
every manifest (statistics, training) reaches the nodes as ``query.manifest`` chunk
messages, the work messages carry only the signed header, and the job trains both nodes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from federation import run_job
from federation.apps._stream import SPOOL_DIR, STREAM_ABOVE_KEY
from federation.deploy import LocalFederation, load_node_settings

from ..federation._flworld import grant_consents, make_world

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]


def test_streamed_job_trains_on_supernodes(
    tmp_path: Path, db_url: str, sessions: sessionmaker[Session], fed: LocalFederation
) -> None:
    """Both nodes verify and finish their streams and train; no round has a failure."""
    world = make_world(tmp_path / "world", n_isvs=2)
    grant_consents(world, sessions)
    for node in world.nodes:
        toml = fed.node_toml(node, policy={"min-cohort": 5, "min-score-cohort": 5})
        fed.onboard(load_node_settings(toml))
        fed.start_node(toml)
    config = world.run_config(
        job_id="streamed", db_url=db_url, out="streamed", categories="cash_and_debt,margins",
        rounds=1, **{"timeout-s": 120, "min-nodes": 2, STREAM_ABOVE_KEY: 0},
    )  # fmt: skip

    result = run_job(config, world.nodes, deployment=fed.runtime(timeout=300))

    assert result.nodes == ("isv0", "isv1")
    assert result.rounds[0].failures == () and set(result.rounds[0].train) == {"isv0", "isv1"}
    for node in world.nodes:
        states = [json.loads(p.read_text()) for p in (node.state_dir / SPOOL_DIR).glob("*.json")]
        assert [s["round"] for s in states if s["job_id"] == "streamed"] == [1]
        assert all(s["done"] for s in states)
