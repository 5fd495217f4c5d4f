"""An ISV node's own configuration file (``node.toml``) and what it turns into.

Everything the node trusts comes from this file, never from the platform: its
identity and keys, where its ERP data is, which release keys may sign the code it
runs, the CA it verifies the platform with, and (``[policy]``) its privacy policy,
which the ClientApp reads through the ``node-policy`` node-config key. Relative
paths are relative to the file's directory. Example::

    [node]
    isv-id = "isv-a"
    state-dir = "state"                  # replay guard, privacy ledger, trusted entities
    receipt-key = "keys/receipt.key"     # Ed25519 PEM: signs usage receipts
    auth-key = "keys/node_auth"          # SuperNode auth key (fedgate node keygen)
    runtime-port = 9094                  # the SuperNode's local Runtime API (loopback)
    isolation = "subprocess"             # or "process"

    [platform]
    superlink = "fleet.platform.example:9443"   # the Fleet-only proxy
    ca-cert = "certs/ca.pem"
    gateway-key = "keys/gateway.pub"            # verifies cohort manifests
    trusted-release-keys = ["ssh-ed25519 AAAA… fedgate-release"]

    [data]
    path = "data/erp.parquet"            # or url + table with connector = "sql"
    connector = "parquet"
    mapping = "mapping.toml"

    [policy]                             # the node's privacy policy (see federation/node/)
    min-cohort = 50
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..apps._node import NodeConfig
from ._errors import ConfigError
from ._keys import release_key_id

__all__ = ["NodeSettings", "load_node_settings", "NODE_POLICY_KEY", "ISOLATION_MODES"]

NODE_POLICY_KEY = "node-policy"
"""Node-config key: path of the node's TOML, whose ``[policy]`` table is its privacy policy."""

ISOLATION_MODES = ("subprocess", "process")
DEFAULT_ISOLATION = "process"
DEFAULT_RUNTIME_PORT = 9094


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSettings:
    """A parsed ``node.toml``.

    Parameters
    ----------
    path : Path
        The file itself (passed on as ``node-policy``).
    node : NodeConfig
        What the ClientApp reads (identity, data, receipt key, gateway key, state).
    auth_key : Path
        SuperNode auth private key (OpenSSH, ECDSA).
    superlink : str
        ``host:port`` of the Fleet API (the proxy).
    ca_cert : Path
    trusted_release_keys : tuple[str, ...]
        OpenSSH Ed25519 public-key lines; only FABs signed by one of them run.
    runtime_port : int, default 9094
    isolation : str, default "subprocess"
    policy : dict
        The ``[policy]`` table as written (interpreted by the node's ClientApp).
    """

    path: Path
    node: NodeConfig
    auth_key: Path
    superlink: str
    ca_cert: Path
    trusted_release_keys: tuple[str, ...]
    runtime_port: int = DEFAULT_RUNTIME_PORT
    isolation: str = DEFAULT_ISOLATION
    policy: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.isolation not in ISOLATION_MODES:
            raise ConfigError(f"isolation must be one of {ISOLATION_MODES}, got {self.isolation!r}")
        if not 0 < self.runtime_port < 65536:
            raise ConfigError(f"runtime-port out of range: {self.runtime_port}")
        if not self.trusted_release_keys:
            raise ConfigError(
                "platform.trusted-release-keys is empty: the node would run no app bundle",
                code="NO_TRUSTED_KEYS",
            )

    @property
    def isv_id(self) -> str:
        """This node's ISV id."""
        return self.node.isv_id

    def trusted_entities(self) -> dict[str, str]:
        """``{key id: OpenSSH line}`` for Flower's ``--trusted-entities``."""
        return {release_key_id(line): line.strip() for line in self.trusted_release_keys}

    def node_config(self) -> dict[str, str]:
        """The SuperNode's ``--node-config`` mapping (NodeConfig keys + ``node-policy``)."""
        return {**self.node.to_mapping(), NODE_POLICY_KEY: str(self.path)}


def _table(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return value


def load_node_settings(path: Path) -> NodeSettings:
    """Parse and check ``node.toml`` (``ConfigError`` with a message naming the key)."""
    path = path.resolve()
    try:
        doc = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    base = path.parent
    node, platform, data = _table(doc, "node"), _table(doc, "platform"), _table(doc, "data")
    unknown = set(doc) - {"node", "platform", "data", "policy"}
    if unknown:
        raise ConfigError(f"unknown table(s) in {path.name}: {', '.join(sorted(unknown))}")

    def req(table: dict[str, Any], tname: str, key: str) -> Any:
        if key not in table or table[key] in ("", None):
            raise ConfigError(f"{path.name}: [{tname}] {key} is required")
        return table[key]

    def rel(value: Any) -> Path:
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() else base / p

    def opt(table: dict[str, Any], key: str) -> str | None:
        v = table.get(key)
        return str(v) if v not in (None, "") else None

    keys = platform.get("trusted-release-keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ConfigError("[platform] trusted-release-keys must be a list of OpenSSH key lines")
    connector = str(data.get("connector", ""))
    try:
        cfg = NodeConfig(
            isv_id=str(req(node, "node", "isv-id")),
            erp_path=rel(data["path"]) if opt(data, "path") else None,
            node_key=rel(req(node, "node", "receipt-key")),
            gateway_key=rel(req(platform, "platform", "gateway-key")),
            state_dir=rel(node.get("state-dir", "state")),
            connector=connector,
            mapping=rel(data["mapping"]) if opt(data, "mapping") else None,
            erp_url=opt(data, "url"),
            erp_table=opt(data, "table"),
            policy=path,  # the node's own policy: this file's [policy] table
        )
    except ValueError as exc:
        raise ConfigError(f"{path.name}: [data] {exc}") from None
    try:
        port = int(node.get("runtime-port", DEFAULT_RUNTIME_PORT))
    except (TypeError, ValueError):
        raise ConfigError(f"{path.name}: [node] runtime-port must be an integer") from None
    policy = doc.get("policy", {})
    if not isinstance(policy, dict):
        raise ConfigError("[policy] must be a table")
    return NodeSettings(
        path=path,
        node=cfg,
        auth_key=rel(req(node, "node", "auth-key")),
        superlink=str(req(platform, "platform", "superlink")),
        ca_cert=rel(req(platform, "platform", "ca-cert")),
        trusted_release_keys=tuple(keys),
        runtime_port=port,
        isolation=str(node.get("isolation", DEFAULT_ISOLATION)),
        policy=dict(policy),
    )
