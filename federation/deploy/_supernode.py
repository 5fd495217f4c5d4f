"""Run and check one ISV node: a Flower SuperNode configured from the node's own ``node.toml``.

The SuperNode dials the platform's Fleet-only proxy over TLS (verified with the
node's CA), authenticates with the node's auth key (refused unless the platform
registered its public key), and runs only app bundles signed by a release key the
node lists (``--trusted-entities``). Runtime dependency installation stays off (the
SuperNode's default in flwr 1.42), and the ClientApp gets the node's config —
NodeConfig keys plus ``node-policy`` — through ``--node-config``.
"""

from __future__ import annotations

import json
import socket
import ssl
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ._errors import ConfigError
from ._nodeconf import NodeSettings
from ._procs import ManagedProcess, flower_bin, privacy_env

__all__ = ["supernode_argv", "start_supernode", "check_node", "Finding", "write_trusted_entities"]


def _toml_value(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_trusted_entities(settings: NodeSettings) -> Path:
    """Write ``<state-dir>/trusted-entities.yaml`` from the node's pinned release keys."""
    path = settings.node.state_dir / "trusted-entities.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{k}: {json.dumps(v)}" for k, v in sorted(settings.trusted_entities().items())]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def supernode_argv(settings: NodeSettings, *, trusted_entities: Path) -> list[str]:
    """The ``flower-supernode`` command line for this node."""
    node_config = " ".join(f"{k}={_toml_value(v)}" for k, v in settings.node_config().items())
    return [
        flower_bin("flower-supernode"),
        "--superlink", settings.superlink,
        "--root-certificates", str(settings.ca_cert),
        "--auth-supernode-private-key", str(settings.auth_key),
        "--trusted-entities", str(trusted_entities),
        "--isolation", settings.isolation,
        "--host", "127.0.0.1",
        "--port", str(settings.runtime_port),
        "--node-config", node_config,
    ]


def start_supernode(
    settings: NodeSettings, log_path: Path, *, env: Mapping[str, str] | None = None
) -> list[ManagedProcess]:
    """Start the node's SuperNode (and, with ``process`` isolation, fedgate's warm executor).

    Parameters
    ----------
    settings : NodeSettings
        The node's ``node.toml``.
    log_path : Path
        The SuperNode's log (the executor's is ``<stem>-executor.log`` beside it).
    env : Mapping[str, str] | None, default None
        Extra environment for both processes (e.g. libfaketime's ``LD_PRELOAD`` and
        ``FAKETIME`` to run a node on a skewed clock).

    Returns
    -------
    list[ManagedProcess]
        The SuperNode first; stop them in reverse order.
    """
    te = write_trusted_entities(settings)
    env = privacy_env(env)
    sn = ManagedProcess(
        f"supernode-{settings.isv_id}", supernode_argv(settings, trusted_entities=te), log_path,
        env=env,
    ).start()
    procs = [sn]
    if settings.isolation != "process":
        return procs
    try:
        sn.wait_serving("127.0.0.1", settings.runtime_port, timeout=60)
        procs.append(
            ManagedProcess(
                f"clientapp-executor-{settings.isv_id}",
                [
                    sys.executable, "-m", "federation.deploy.warm_clientapp",
                    "--runtime-api-address", f"127.0.0.1:{settings.runtime_port}",
                    "--parent-pid", str(sn.pid),
                ],
                log_path.with_name(log_path.stem + "-executor.log"),
                env=env,
            ).start()
        )
    except BaseException:
        for proc in reversed(procs):
            proc.stop()
        raise
    return procs


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of ``fedgate node check``: what was checked, whether it holds, details."""

    check: str
    ok: bool
    detail: str


def _secret_ok(path: Path) -> tuple[bool, str]:
    if not path.exists():
        return False, f"{path} missing"
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return False, f"{path} is mode {mode:o}; private keys must be 0600"
    return True, str(path)


def check_node(
    settings: NodeSettings, *, connect: bool = True, timeout: float = 5.0
) -> list[Finding]:
    """Validate keys, data (schema + mapping) and the TLS connection, without training."""
    from cryptography.hazmat.primitives import serialization

    from .._errors import DataError
    from ._keys import load_node_public_key

    out: list[Finding] = []
    for label, path in (("receipt key", settings.node.node_key), ("auth key", settings.auth_key)):
        ok, detail = _secret_ok(path)
        out.append(Finding(label, ok, detail))
    try:
        serialization.load_ssh_private_key(settings.auth_key.read_bytes(), password=None)
        pub = settings.auth_key.with_name(settings.auth_key.name + ".pub")
        if pub.exists():
            load_node_public_key(pub)
        out.append(Finding("auth key type", True, "ECDSA (OpenSSH)"))
    except (OSError, ValueError, ConfigError) as exc:
        out.append(Finding("auth key type", False, str(exc)))
    try:
        settings.node.gateway_public_key()
        out.append(Finding("gateway key", True, str(settings.node.gateway_key)))
    except (OSError, ValueError) as exc:
        out.append(Finding("gateway key", False, str(exc)))
    for key_id in sorted(settings.trusted_entities()):
        out.append(Finding("trusted release key", True, key_id))
    try:
        connector = settings.node.erp_connector()
        df = connector.read(data_from=date(1900, 1, 1), data_to=date(9999, 1, 1))
        out.append(
            Finding(
                "data",
                True,
                f"{len(df)} rows, {df['merchant_id'].nunique()} merchants, "
                f"{len(df.columns) - 2} ERP fields valid against the schema"
                + (f" via {settings.node.mapping.name}" if settings.node.mapping else ""),
            )
        )
    except (DataError, OSError) as exc:
        out.append(Finding("data", False, f"{getattr(exc, 'code', 'DATA')}: {exc}"))
    n = len(settings.policy)
    out.append(
        Finding("policy", True, f"{n} keys in the policy table" if n else
                "no policy table: the node's defaults apply")
    )
    if connect:
        out.append(_check_tls(settings, timeout))
    return out


def _check_tls(settings: NodeSettings, timeout: float) -> Finding:
    host, _, port = settings.superlink.rpartition(":")
    host = host.strip("[]")
    try:
        ctx = ssl.create_default_context(cafile=str(settings.ca_cert))
        with (
            socket.create_connection((host, int(port)), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            version = tls.version()
        return Finding("connection", True, f"TLS ({version}) to {settings.superlink}, CA verified")
    except (OSError, ValueError, ssl.SSLError) as exc:
        return Finding("connection", False, f"{settings.superlink}: {exc}")
