"""The runner's checks that need no runtime: budget refusal, runtime settings, specs, exports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

import federation
import federation.apps
from federation import BudgetExceeded, JobFailed, SpecError, run_job
from federation.dp import PrivacyLedger
from federation.runner import SimulationRuntime, check_budget
from federation.specs import DPBudget, get_spec, spec_from_run_config, spec_to_run_config

from ._flworld import grant_consents, make_world


def test_dp_job_over_a_merchant_budget_is_refused_before_anything_starts(
    tmp_path: Path, db_url: str, sessions: sessionmaker[Session]
) -> None:
    """If one node's merchants have no lifetime ε left, run_job refuses without starting Flower."""
    world = make_world(tmp_path / "world", per_isv=10)
    grant_consents(world, sessions)
    node = world.node("isv1")
    PrivacyLedger(node.privacy_ledger_path).reserve(
        job_id="old-job",
        budget=DPBudget(epsilon=9.0),
        merchant_ids=list(world.erp["isv1"]["merchant_id"]),
    )
    config = world.run_config(job_id="job-refused", db_url=db_url, out="out", categories="margins")

    with pytest.raises(BudgetExceeded) as err:
        run_job(config, world.nodes)

    assert err.value.code == "BUDGET_EXCEEDED"
    assert "isv1" in str(err.value)
    assert not (tmp_path / "world" / "out" / "result.json").exists()
    assert PrivacyLedger(world.node("isv0").privacy_ledger_path).job_history("job-refused") == []
    check_budget({**config, "dp-epsilon": 0.0}, world.nodes)  # without DP nothing is refused


def test_no_nodes_is_a_failed_job(tmp_path: Path) -> None:
    """A job with no nodes fails with NO_NODES instead of running empty."""
    with pytest.raises(JobFailed) as err:
        run_job({"spec": "pd-erp", "out-dir": str(tmp_path)}, [])

    assert err.value.code == "NO_NODES"


def test_simulation_runtime_binds_to_localhost_and_fits_two_cores() -> None:
    """Ray gets 2 CPUs, no GPU, no dashboard, the loopback address; clients 1 CPU each."""
    cfg = SimulationRuntime().backend_config()

    assert cfg["init_args"]["_node_ip_address"] == "127.0.0.1"
    assert cfg["init_args"]["include_dashboard"] is False
    assert (cfg["init_args"]["num_cpus"], cfg["client_resources"]["num_cpus"]) == (2, 1.0)
    with pytest.raises(ValueError, match="client_cpus"):
        SimulationRuntime(client_cpus=3.0)


def test_ray_stays_on_the_loopback() -> None:
    """Importing the apps puts Ray in single-machine mode, so 127.0.0.1 is not rewritten."""
    from ray._private import ray_constants, services

    assert ray_constants.ENABLE_RAY_CLUSTER is False
    assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"


def test_spec_round_trips_through_run_config_with_overrides() -> None:
    """Kebab-case run config rebuilds the named spec; overrides win; ε=0 means no DP."""
    base = get_spec("pd-erp")

    same = spec_from_run_config(spec_to_run_config(base))
    tuned = spec_from_run_config({"spec": "pd-erp", "rounds": 7, "dp-epsilon": 0.0})

    assert same == base
    assert (tuned.rounds, tuned.dp, tuned.categories) == (7, None, base.categories)


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ({"spec": "no-such-model"}, "UNKNOWN_SPEC"),
        ({"spec": "pd-erp", "arch": "transformer"}, "BAD_SPEC"),
        ({"spec": "pd-erp", "rounds": "many"}, "BAD_SPEC"),
        ({"spec": "pd-erp", "strategy": "fedprox", "proximal-mu": 0.0}, "BAD_SPEC"),
        ({"spec": "pd-erp", "dp-epsilon": 5.0, "dp-lifetime-epsilon": 1.0}, "BAD_SPEC"),
    ],
)
def test_bad_specs_are_refused_with_a_code(config: dict[str, object], code: str) -> None:
    """Unknown names and out-of-range values raise SpecError with a code."""
    with pytest.raises(SpecError) as err:
        spec_from_run_config(config)

    assert err.value.code == code


def test_apps_exports_are_pinned() -> None:
    """federation.apps exports exactly these names, and each resolves."""
    expected = {
        "ERR",
        "Cohort",
        "CohortSource",
        "ConsentedStrategy",
        "NodeConfig",
        "RoundLog",
        "ServerSettings",
        "build_client_app",
        "egress_guard_mod",
        "job_record",
        "load_cohort",
        "make_manifest_mod",
        "make_server_app",
        "manifest_mod",
        "usage_receipt_mod",
    }

    assert set(federation.apps.__all__) == expected
    assert all(getattr(federation.apps, n) is not None for n in expected)


def test_federation_exports_the_job_api() -> None:
    """The Flower-side names are exported by federation (lazily where heavy) and resolve."""
    names = {
        "FederationError",
        "SpecError",
        "BudgetExceeded",
        "ReceiptInvalid",
        "JobFailed",
        "SPECS",
        "DPBudget",
        "ModelSpec",
        "get_spec",
        "spec_from_run_config",
        "spec_to_run_config",
        "UsageReceipt",
        "merchant_ids_hash",
        "sign_receipt",
        "verify_receipt",
        "JobResult",
        "RoundMetrics",
        "SimulationRuntime",
        "check_budget",
        "run_job",
        "run_jobs",
        "PrivacyLedger",
        "check_job_budget",
    }

    assert names <= set(federation.__all__)
    assert all(getattr(federation, n) is not None for n in names)


def test_ray_starts_on_the_loopback_with_no_runtime_installs_and_no_telemetry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What Flower's Ray backend passes to ray.init: loopback, no dashboard, env vars only."""
    import ray
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # Flower rewrites it
    config = SimulationRuntime().backend_config()

    RayBackend(backend_config=config)  # initialises Ray as run_simulation's backend does

    (init,) = calls
    runtime_env = init.pop("runtime_env")
    assert set(runtime_env) == {"env_vars"}  # no pip/uv/conda/py_modules/working_dir
    assert set(runtime_env["env_vars"]) == {"PYTHONPATH"}  # type: ignore[arg-type]
    assert not {"runtime_env", "pip", "conda", "uv"} & set(config["init_args"])
    assert init["_node_ip_address"] == "127.0.0.1" and init["include_dashboard"] is False
    assert os.environ["FLWR_TELEMETRY_ENABLED"] == "0"
    assert os.environ["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
