"""The platform's client for the SuperLink's Control API: nodes, runs, run status.

Control API calls go to the SuperLink directly on the platform host (loopback),
never through the ISV-facing proxy, which forwards Fleet API paths only.

Flower's ``flwr run`` exits 0 even when the run later fails; :func:`wait_run`
reads the run's status (``finished:completed|failed|stopped``) and its
``details`` so that a failed run is reported with Flower's reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ._errors import ControlError
from ._keys import load_node_public_key, node_public_pem

__all__ = ["ControlClient", "RunState", "NodeEntry"]


@dataclass(frozen=True, slots=True)
class RunState:
    """One run as the SuperLink reports it."""

    run_id: int
    status: str
    sub_status: str
    details: str

    @property
    def finished(self) -> bool:
        """Whether the run reached ``finished`` (completed, failed or stopped)."""
        return self.status == "finished"

    @property
    def succeeded(self) -> bool:
        """``finished:completed``."""
        return self.finished and self.sub_status == "completed"


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """A registered SuperNode: Flower's node id, its public key (PEM), its status."""

    node_id: int
    public_key: bytes
    status: str


class ControlClient:
    """Control API over HTTPS, verified against the federation CA.

    Parameters
    ----------
    address : str
        ``host:port`` of the SuperLink (platform side, e.g. ``127.0.0.1:9093``).
    ca_cert : Path | None
        The CA that issued the SuperLink's certificate; ``None`` with ``insecure``.
    insecure : bool, default False
        Plain HTTP (tests of the refusal paths only).
    timeout : float, default 30.0
    """

    def __init__(
        self, address: str, ca_cert: Path | None, *, insecure: bool = False, timeout: float = 30.0
    ) -> None:
        from flwr.supercore.control.control_http_client import ControlHttpClient
        from flwr.supercore.interceptors.http.runtime_version import (
            RuntimeVersionHttpInterceptor,
        )

        if not insecure and ca_cert is None:
            raise ValueError("ca_cert is required unless insecure is set")
        self.address = address
        self._timeout = timeout
        self._client = ControlHttpClient.from_server_address(
            server_address=address,
            insecure=insecure,
            root_certificates=None if insecure else ca_cert.read_bytes(),  # type: ignore[union-attr]
            interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
        )

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, name: str, request: object, code: str) -> object:
        try:
            return getattr(self._client, name)(request)
        except Exception as exc:  # noqa: BLE001 - Flower raises several transport/API types
            raise ControlError(f"{name} failed at {self.address}: {exc}", code=code) from exc

    # -- nodes ------------------------------------------------------------------------------
    def register_node(self, public_key_file: Path, *, name: str | None = None) -> int:
        """Admit a node's public key (allow-list); returns Flower's node id."""
        from flwr.proto.control_pb2 import RegisterNodeRequest

        pem = node_public_pem(load_node_public_key(public_key_file))
        for node in self.list_nodes():
            if node.public_key == pem:
                return node.node_id
        req = RegisterNodeRequest(public_key=pem)
        if name:
            req.name = name
        res = self._call("RegisterNode", req, "REGISTER_FAILED")
        return int(res.node_id)  # type: ignore[attr-defined]

    def unregister_node(self, public_key_file: Path) -> int | None:
        """Revoke a node's key; returns the node id removed, ``None`` if it was not listed."""
        from flwr.proto.control_pb2 import UnregisterNodeRequest

        pem = node_public_pem(load_node_public_key(public_key_file))
        for node in self.list_nodes():
            if node.public_key == pem:
                self._call(
                    "UnregisterNode", UnregisterNodeRequest(node_id=node.node_id), "UNKNOWN_NODE"
                )
                return node.node_id
        return None

    def list_nodes(self) -> list[NodeEntry]:
        """Every registered node (including ones not connected now)."""
        from flwr.proto.control_pb2 import ListNodesRequest

        res = self._call("ListNodes", ListNodesRequest(), "LIST_FAILED")
        return [
            NodeEntry(int(n.node_id), bytes(n.public_key), str(n.status))
            for n in res.nodes_info  # type: ignore[attr-defined]
        ]

    # -- runs -------------------------------------------------------------------------------
    def start_run(self, *, fab_hash: str, app_id: str, config: dict[str, str]) -> int:
        """Start a run of the stored (signed) app ``app_id`` at ``fab_hash``; returns its id."""
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest
        from flwr.supercore.fab import Fab

        req = StartRunRequest(
            fab=fab_to_proto(Fab(fab_hash, b"", {})),
            override_config=user_config_to_proto(dict(config)),
            app_spec=app_id,
        )
        res = self._call("StartRun", req, "START_RUN_FAILED")
        if not res.HasField("run_id"):  # type: ignore[attr-defined]
            raise ControlError("the SuperLink started no run", code="START_RUN_FAILED")
        return int(res.run_id)  # type: ignore[attr-defined]

    def start_local_run(self, fab: bytes, config: dict[str, str]) -> int:
        """Start a run of an unsigned FAB sent inline (what ``flwr run <dir>`` does)."""
        import hashlib

        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest
        from flwr.supercore.fab import Fab

        req = StartRunRequest(
            fab=fab_to_proto(Fab(hashlib.sha256(fab).hexdigest(), fab, {})),
            override_config=user_config_to_proto(dict(config)),
        )
        res = self._call("StartRun", req, "START_RUN_FAILED")
        if not res.HasField("run_id"):  # type: ignore[attr-defined]
            raise ControlError("the SuperLink started no run", code="START_RUN_FAILED")
        return int(res.run_id)  # type: ignore[attr-defined]

    def run_state(self, run_id: int) -> RunState:
        """The run's current status."""
        from flwr.proto.control_pb2 import ListRunsRequest

        res = self._call("ListRuns", ListRunsRequest(run_id=run_id), "UNKNOWN_RUN")
        runs = res.run_dict  # type: ignore[attr-defined]
        if run_id not in runs:
            raise ControlError(f"run {run_id} unknown to the SuperLink", code="UNKNOWN_RUN")
        st = runs[run_id].status
        return RunState(run_id, str(st.status), str(st.sub_status), str(st.details))

    def stop_run(self, run_id: int) -> None:
        """Ask the SuperLink to stop a run."""
        from flwr.proto.control_pb2 import StopRunRequest

        self._call("StopRun", StopRunRequest(run_id=run_id), "STOP_FAILED")

    def wait_run(self, run_id: int, *, timeout: float, poll: float = 0.5) -> RunState:
        """Poll until the run finishes or ``timeout`` seconds pass (then stop it)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.run_state(run_id)
            if state.finished:
                return state
            if time.monotonic() > deadline:
                self.stop_run(run_id)
                return RunState(run_id, state.status, "timeout", f"not finished in {timeout} s")
            time.sleep(poll)
