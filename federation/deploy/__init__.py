"""fedgate on Flower's deployment runtime: SuperLink, SuperNodes, proxy, certificates, releases.

Platform side: :func:`start_superlink` (TLS, node auth, no runtime dependency
installation, state on disk), :func:`start_proxy` (nginx, Fleet API only),
:func:`publish_release` (signed app bundle), :class:`ControlClient` (onboarding,
runs), :class:`DeploymentRuntime` and :func:`submit_job` / :func:`job_status`
(what :func:`federation.run_job` uses on this runtime). Node side:
:func:`load_node_settings` (``node.toml``), :func:`start_supernode`,
:func:`check_node`, :func:`node_keygen`.
"""

from ._control import ControlClient, NodeEntry, RunState
from ._errors import ConfigError, ControlError, DeploymentError, ProcessError
from ._fab import APP_ID, build_fab, fab_pyproject, sign_fab, store_signed_fab, verify_fab
from ._keys import node_keygen, release_key_id, release_keygen
from ._local import LocalFederation, write_node_toml
from ._nodeconf import NODE_POLICY_KEY, NodeSettings, load_node_settings
from ._pki import issue_server_cert, make_ca
from ._platform import PlatformLayout, make_certs, publish_release, start_proxy, start_superlink
from ._procs import ManagedProcess, descendants, free_port, serve_until_signal
from ._runtime import DeploymentRuntime, job_status, run_deployed, run_job_deployed, submit_job
from ._supernode import Finding, check_node, start_supernode

__all__ = [
    "APP_ID",
    "ConfigError",
    "ControlClient",
    "ControlError",
    "DeploymentError",
    "DeploymentRuntime",
    "Finding",
    "LocalFederation",
    "ManagedProcess",
    "NODE_POLICY_KEY",
    "NodeEntry",
    "NodeSettings",
    "PlatformLayout",
    "ProcessError",
    "RunState",
    "build_fab",
    "check_node",
    "descendants",
    "fab_pyproject",
    "free_port",
    "issue_server_cert",
    "job_status",
    "load_node_settings",
    "make_ca",
    "make_certs",
    "node_keygen",
    "publish_release",
    "release_key_id",
    "release_keygen",
    "run_deployed",
    "run_job_deployed",
    "serve_until_signal",
    "sign_fab",
    "start_proxy",
    "start_superlink",
    "start_supernode",
    "store_signed_fab",
    "submit_job",
    "verify_fab",
    "write_node_toml",
]
