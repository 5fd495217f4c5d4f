"""Submit a job to the SuperLink and follow it to the end: the deployment runtime.

:func:`submit_job` writes the job's run config to a job file on the platform host,
starts a run of the published, signed app bundle through the Control API, and
returns the run id; :func:`job_status` reads the run's state; :func:`run_deployed`
does both and waits. :func:`federation.run_job` with a :class:`DeploymentRuntime`
uses them, so the gateway has one entry point for either runtime. Flower reports
a run that failed (the ServerApp raised, a node refused the bundle, …) as
``finished:failed`` with a reason in ``details`` — never as an exit code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._control import ControlClient, RunState
from ._errors import ConfigError
from ._fab import APP_ID
from .apps import JOB_FILE_KEY

__all__ = [
    "DeploymentRuntime",
    "submit_job",
    "job_status",
    "run_deployed",
    "run_job_deployed",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentRuntime:
    """Where and how to run jobs on the deployment runtime.

    Parameters
    ----------
    control : str
        ``host:port`` of the SuperLink on the platform host (not the ISV-facing proxy).
    ca_cert : Path
        The federation CA (verifies the SuperLink's certificate).
    fab_hash : str
        The published, signed bundle (``release.json`` of ``fedgate federation publish``).
    jobs_dir : Path
        Where job files go (readable by the ServerApp process on this host).
    app_id : str, default "@fedgate/fedgate-apps"
    timeout : float, default 3600.0
        Seconds to wait for a run before stopping it.
    poll : float, default 0.5
    min_nodes : int | None, default None
        Nodes the ServerApp waits for; ``None``: ``run_job``'s node count.
    """

    control: str
    ca_cert: Path
    fab_hash: str
    jobs_dir: Path
    app_id: str = APP_ID
    timeout: float = 3600.0
    poll: float = 0.5
    min_nodes: int | None = None

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.poll <= 0:
            raise ValueError("timeout and poll must be positive")
        if len(self.fab_hash) != 64:
            raise ValueError("fab_hash must be a SHA-256 hex digest")

    @classmethod
    def from_release(cls, release_file: Path, **kwargs: Any) -> DeploymentRuntime:
        """Read the bundle's hash and app id from a ``release.json``."""
        try:
            doc = json.loads(release_file.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"no published release at {release_file}: {exc}", code="NO_RELEASE"
            ) from None
        return cls(fab_hash=str(doc["fab_hash"]), app_id=str(doc["app_id"]), **kwargs)

    def client(self) -> ControlClient:
        """A Control API client for this runtime."""
        return ControlClient(self.control, self.ca_cert)


def submit_job(run_config: Mapping[str, Any], runtime: DeploymentRuntime) -> int:
    """Write the job file and start a run; returns Flower's run id."""
    job_id = str(run_config["job-id"])
    runtime.jobs_dir.mkdir(parents=True, exist_ok=True)
    job_file = (runtime.jobs_dir / f"{job_id}.json").resolve()
    job_file.write_text(json.dumps(dict(run_config), indent=2, default=str), "utf-8")
    with runtime.client() as control:
        return control.start_run(
            fab_hash=runtime.fab_hash, app_id=runtime.app_id, config={JOB_FILE_KEY: str(job_file)}
        )


def job_status(run_id: int, runtime: DeploymentRuntime) -> RunState:
    """The run's status as the SuperLink reports it."""
    with runtime.client() as control:
        return control.run_state(run_id)


def run_deployed(run_config: Mapping[str, Any], runtime: DeploymentRuntime) -> RunState:
    """Submit a job and wait until its run finishes (or stop it after ``runtime.timeout``)."""
    run_id = submit_job(run_config, runtime)
    with runtime.client() as control:
        return control.wait_run(run_id, timeout=runtime.timeout, poll=runtime.poll)


def run_job_deployed(
    run_config: Mapping[str, Any], nodes: Sequence[Any], runtime: DeploymentRuntime
) -> Any:
    """:func:`federation.run_job` on the deployment runtime; returns its ``JobResult``.

    Budgets are not pre-checked here: the nodes' privacy ledgers live on the ISVs'
    machines, and each node refuses a job that would overrun its own budget. A run
    counts as succeeded only if Flower reports ``finished:completed`` *and* the
    ServerApp wrote a result document with status ``succeeded``.

    Raises
    ------
    JobFailed
        ``RUN_FAILED`` (Flower's status and reason in ``reasons``) or ``JOB_FAILED``
        (the ServerApp's own failures).
    """
    from .._errors import JobFailed
    from ..apps.server_app import RESULT_FILE
    from ..runner import _read_result  # one reader of result.json for both runtimes
    from ..specs import with_extra_fields

    out_dir = Path(str(run_config["out-dir"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    result_file = out_dir / RESULT_FILE
    result_file.unlink(missing_ok=True)
    min_nodes = runtime.min_nodes or len(nodes) or 1
    config = {"min-nodes": min_nodes, **with_extra_fields(run_config)}
    started = time.perf_counter()
    state = run_deployed(config, runtime)
    seconds = time.perf_counter() - started
    doc = json.loads(result_file.read_text("utf-8")) if result_file.exists() else {}
    flower = f"run {state.run_id} {state.status}:{state.sub_status}: {state.details or '-'}"
    if not state.succeeded:
        reasons = [flower, *doc.get("failures", [])]
        raise JobFailed(
            f"job {run_config.get('job-id')} failed: {'; '.join(reasons)[:2000]}",
            code="RUN_FAILED",
            reasons=reasons,
        )
    if doc.get("status") != "succeeded":
        reasons = list(doc.get("failures", [])) or [f"{flower} but no result document"]
        raise JobFailed(
            f"job {run_config.get('job-id')} failed: {'; '.join(reasons)[:2000]}",
            code="JOB_FAILED",
            reasons=reasons,
        )
    return _read_result(out_dir, seconds, [])
