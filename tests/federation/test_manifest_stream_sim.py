"""Streamed manifests end to end on Flower's simulation runtime (real messages, real nodes).

With ``manifest-stream-above = 0`` every cohort is streamed: the ServerApp sends each
node its chunks in ``query.manifest`` messages before the work message, which carries
only the signed header. The job must train as it does with whole manifests, under the
same Merkle roots, and each node must have verified and finished its streams itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from federation import run_job
from federation.apps._stream import SPOOL_DIR, STREAM_ABOVE_KEY

from ._flworld import make_world

CATS = "cash_and_debt,margins"


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_streamed_job_trains_under_the_whole_manifests_roots(tmp_path: Path, db_url: str) -> None:
    """One round streamed and one whole: same roots per node, every node trained, streams done."""
    world = make_world(tmp_path / "world", n_isvs=3, per_isv=40)

    def config(job_id: str, **extra: object) -> dict[str, object]:
        cfg = world.run_config(
            job_id=job_id, db_url=db_url, out=job_id, categories=CATS, rounds=1, **extra
        )
        del cfg["consent-key"]  # consents live in world.cohort, not in the store
        return cfg

    streamed = run_job(config("job-streamed", **{STREAM_ABOVE_KEY: 0}), world.nodes,
                       cohort_source=world.cohort)  # fmt: skip
    whole = run_job(config("job-whole"), world.nodes, cohort_source=world.cohort)

    nodes = {"isv0", "isv1", "isv2"}
    for result in (streamed, whole):
        assert [r.round for r in result.rounds] == [1]
        assert result.rounds[0].failures == () and set(result.rounds[0].train) == nodes
    roots = [json.loads((r.out_dir / "lineage.json").read_text()) for r in (streamed, whole)]
    assert roots[0]["manifest_roots"] == roots[1]["manifest_roots"]
    assert roots[0]["statistics_manifest_roots"] == roots[1]["statistics_manifest_roots"]
    for node in world.nodes:  # each node finished the streamed job's streams on its own
        states = [json.loads(p.read_text()) for p in (node.state_dir / SPOOL_DIR).glob("*.json")]
        mine = [s for s in states if s["job_id"] == "job-streamed"]
        assert mine and all(s["done"] for s in mine)
        assert not [s for s in states if s["job_id"] == "job-whole"]
