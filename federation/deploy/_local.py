"""The whole deployment on one machine: SuperLink, proxy and SuperNodes as plain processes.

What ``docker/compose.yaml`` runs as containers, this runs as processes on
loopback — for ``fedgate federation up``, the integration test and the benchmark.
Ports are picked free unless given. :meth:`LocalFederation.down` stops everything
it started and reports any process that outlived it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._errors import FederationError
from ..apps._node import NodeConfig
from ._control import ControlClient
from ._keys import node_keygen
from ._nodeconf import NodeSettings, load_node_settings
from ._platform import PlatformLayout, make_certs, publish_release, start_proxy, start_superlink
from ._procs import ManagedProcess, _alive, free_port
from ._runtime import DeploymentRuntime
from ._supernode import start_supernode

__all__ = ["LocalFederation", "write_node_toml"]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def write_node_toml(
    path: Path,
    node: NodeConfig,
    *,
    auth_key: Path,
    superlink: str,
    ca_cert: Path,
    trusted_release_keys: list[str],
    runtime_port: int,
    isolation: str = "process",
    policy: Mapping[str, Any] | None = None,
) -> Path:
    """Write a ``node.toml`` for ``node`` (absolute paths)."""
    lines = [
        "[node]",
        f"isv-id = {_toml(node.isv_id)}",
        f"state-dir = {_toml(node.state_dir)}",
        f"receipt-key = {_toml(node.node_key)}",
        f"auth-key = {_toml(auth_key)}",
        f"runtime-port = {runtime_port}",
        f"isolation = {_toml(isolation)}",
        "",
        "[platform]",
        f"superlink = {_toml(superlink)}",
        f"ca-cert = {_toml(ca_cert)}",
        f"gateway-key = {_toml(node.gateway_key)}",
        f"trusted-release-keys = {_toml(trusted_release_keys)}",
        "",
        "[data]",
    ]
    if node.erp_path is not None:
        lines.append(f"path = {_toml(node.erp_path)}")
    for key, value in (
        ("connector", node.connector),
        ("mapping", node.mapping or ""),
        ("url", node.erp_url or ""),
        ("table", node.erp_table or ""),
    ):
        if value:
            lines.append(f"{key} = {_toml(value)}")
    lines += ["", "[policy]", *(f"{k} = {_toml(v)}" for k, v in (policy or {}).items()), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), "utf-8")
    return path


class LocalFederation:
    """SuperLink (TLS, node auth) + Fleet-only proxy + signed release, on loopback.

    Parameters
    ----------
    root : Path
        Platform files go to ``root/platform``; node files to ``root/nodes/<isv>``.
    superlink_port, proxy_port : int | None, default a free port each
    isolation : str, default "process"
        The SuperNodes' ClientApp isolation (``process``: fedgate's warm executor).
    """

    def __init__(
        self,
        root: Path,
        *,
        superlink_port: int | None = None,
        proxy_port: int | None = None,
        isolation: str = "process",
    ) -> None:
        self.root = root
        self.layout = PlatformLayout(root / "platform")
        self.host = "127.0.0.1"
        self.superlink_port = superlink_port or free_port()
        self.proxy_port = proxy_port or free_port()
        self.isolation = isolation
        self.superlink: ManagedProcess | None = None
        self.proxy: ManagedProcess | None = None
        self.nodes: dict[str, list[ManagedProcess]] = {}
        self.release: dict[str, str] = {}

    @property
    def control_address(self) -> str:
        """The SuperLink (platform side)."""
        return f"{self.host}:{self.superlink_port}"

    @property
    def fleet_address(self) -> str:
        """The proxy: the only address nodes are given."""
        return f"{self.host}:{self.proxy_port}"

    def up(self) -> LocalFederation:
        """Certificates, SuperLink, proxy, signed release."""
        names = [self.host, "localhost"]
        if not self.layout.server_cert("superlink").cert.exists():
            make_certs(self.layout, superlink_names=names, proxy_names=names)
        try:
            self.superlink = start_superlink(
                self.layout, host=self.host, port=self.superlink_port
            )
            self.proxy = start_proxy(
                self.layout, listen=self.fleet_address, upstream=self.control_address
            )
            self.release = publish_release(self.layout)
        except BaseException:
            self.down()
            raise
        return self

    def restart_superlink(self) -> None:
        """Stop and start the SuperLink on the same state database."""
        if self.superlink is None:
            raise FederationError("the local federation is not up", code="NOT_RUNNING")
        self.superlink.stop()
        self.superlink = start_superlink(self.layout, host=self.host, port=self.superlink_port)

    def control(self) -> ControlClient:
        """A Control API client (platform side)."""
        return ControlClient(self.control_address, self.layout.ca_cert)

    def runtime(self, **kwargs: Any) -> DeploymentRuntime:
        """A :class:`DeploymentRuntime` for the published release."""
        return DeploymentRuntime.from_release(
            self.layout.release_file,
            control=self.control_address,
            ca_cert=self.layout.ca_cert,
            jobs_dir=self.layout.jobs,
            **kwargs,
        )

    def node_toml(
        self, node: NodeConfig, *, policy: Mapping[str, Any] | None = None,
        trusted_release_keys: list[str] | None = None,
    ) -> Path:
        """Keys and ``node.toml`` for ``node`` under ``root/nodes/<isv>``; the public key path
        is ``<dir>/keys/node_auth.pub``."""
        d = self.root / "nodes" / node.isv_id
        auth = d / "keys" / "node_auth"
        node_keygen(auth)
        return write_node_toml(
            d / "node.toml",
            node,
            auth_key=auth,
            superlink=self.fleet_address,
            ca_cert=self.layout.ca_cert,
            trusted_release_keys=(
                trusted_release_keys
                if trusted_release_keys is not None
                else [self.release["public_key"]]
            ),
            runtime_port=free_port(),
            isolation=self.isolation,
            policy=policy,
        )

    def onboard(self, settings: NodeSettings) -> int:
        """Register the node's public auth key on the SuperLink's allow-list."""
        with self.control() as c:
            return c.register_node(
                settings.auth_key.with_name(settings.auth_key.name + ".pub"), name=settings.isv_id
            )

    def start_node(self, toml: Path) -> NodeSettings:
        """Start the SuperNode of a ``node.toml``."""
        settings = load_node_settings(toml)
        log = self.root / "nodes" / settings.isv_id / "supernode.log"
        if settings.isv_id in self.nodes:
            raise ValueError(f"node {settings.isv_id} is already running")
        self.nodes[settings.isv_id] = start_supernode(settings, log)
        return settings

    def stop_node(self, isv: str, *, kill: bool = False) -> None:
        """Stop (or SIGKILL) one node's processes."""
        for proc in reversed(self.nodes.pop(isv, [])):
            proc.kill() if kill else proc.stop()

    def down(self) -> list[int]:
        """Stop nodes, proxy and SuperLink; returns pids that are still alive (should be [])."""
        procs: list[ManagedProcess] = []
        for isv in list(self.nodes):
            procs += self.nodes[isv]
            self.stop_node(isv)
        for proc in (self.proxy, self.superlink):
            if proc is not None:
                proc.stop()
                procs.append(proc)
        return [
            p for proc in procs for p in [*(proc.spawned or []), proc.pid or 0] if p and _alive(p)
        ]

    def __enter__(self) -> LocalFederation:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
