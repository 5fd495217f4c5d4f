"""SecAgg+ aggregates exactly what plain FedAvg does: the masks cancel, nothing else moves.

The same one-round DP job runs twice on the same world, once with plain FedAvg and
once under SecAgg+ (three nodes, fedgate's full-seed mask generator on both sides).
Every node pins its randomness with its policy's test seed, so both runs train the
same local updates; the saved global models must then agree to the quantisation step.
A mask that did not cancel (say one side still ran Flower's 32-bit generator) puts
values of order 2³²/levels into the weights and fails this by many orders of magnitude.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.db import create_schema, make_engine, make_sessionmaker

from ._flworld import grant_consents, make_world

pytestmark = pytest.mark.slow


def test_secagg_and_plain_fedavg_give_the_same_global_model(tmp_path: Path) -> None:
    from federation.runner import run_job

    world = make_world(tmp_path / "world")
    for node in world.nodes:  # tests only: node-local seeds, so both runs draw alike
        assert node.policy is not None
        node.policy.write_text(node.policy.read_text("utf-8") + "test-seed = 11\n", "utf-8")
    url = f"sqlite:///{tmp_path / 'fedgate.db'}"
    engine = make_engine(url)
    create_schema(engine)
    grant_consents(world, make_sessionmaker(engine))
    engine.dispose()

    models = {}
    for secagg in (False, True):
        job = f"job-{'secagg' if secagg else 'plain'}"
        result = run_job(
            world.run_config(job_id=job, db_url=url, out=job, categories="cash_and_debt,margins",
                             secagg=secagg, rounds=1),
            world.nodes,
        )
        assert dict(result.aggregation)["secure"] == ("secagg+" if secagg else "none")
        assert result.model_path is not None
        with np.load(result.model_path) as saved:
            models[secagg] = {k: saved[k] for k in saved.files}

    assert models[False].keys() == models[True].keys()
    weights = [a.ravel() for a in models[False].values() if a.size]
    assert np.abs(np.concatenate(weights)).max() > 1e-3  # a model that trained, not zeros
    for name, plain in models[False].items():
        # Quantisation: ±8 over 2^29 levels per node, three nodes summed.
        np.testing.assert_allclose(models[True][name], plain, rtol=0, atol=1e-5, err_msg=name)
