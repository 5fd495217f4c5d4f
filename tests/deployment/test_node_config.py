"""node.toml: parsed into the node's settings, refused with a clear error when wrong."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from federation.apps._node import NodeConfig
from federation.deploy import (
    NODE_POLICY_KEY,
    ConfigError,
    PlatformLayout,
    load_node_settings,
    make_certs,
    write_node_toml,
)
from federation.deploy._platform import nginx_conf
from federation.deploy._supernode import supernode_argv, write_trusted_entities

RELEASE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOgwc/NoUdfY4QXSrVuML4JYemLbndG+AXY5/4xhWWay rel"


def _node(tmp_path: Path) -> NodeConfig:
    return NodeConfig(
        isv_id="isv-a",
        erp_path=tmp_path / "erp.parquet",
        node_key=tmp_path / "receipt.pem",
        gateway_key=tmp_path / "gateway.pub.pem",
        state_dir=tmp_path / "state",
    )


def test_node_toml_round_trip_and_node_config(tmp_path: Path) -> None:
    """Written and read back; the SuperNode gets NodeConfig keys plus node-policy."""
    node = _node(tmp_path)
    toml = write_node_toml(
        tmp_path / "node.toml", node, auth_key=tmp_path / "auth", superlink="proxy:9443",
        ca_cert=tmp_path / "ca.pem", trusted_release_keys=[RELEASE], runtime_port=9100,
        policy={"min-cohort": 50},
    )
    s = load_node_settings(toml)
    assert s.node == replace(node, policy=toml.resolve())  # its policy: node.toml's [policy]
    assert s.superlink == "proxy:9443" and s.isolation == "process"
    assert s.policy == {"min-cohort": 50}
    cfg = s.node_config()
    assert cfg[NODE_POLICY_KEY] == str(toml.resolve())
    assert NodeConfig.from_mapping(cfg) == s.node
    argv = supernode_argv(s, trusted_entities=write_trusted_entities(s))
    assert argv[argv.index("--superlink") + 1] == "proxy:9443"
    assert "--insecure" not in argv and "--root-certificates" in argv
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    te = (node.state_dir / "trusted-entities.yaml").read_text()
    assert RELEASE in te and te.startswith("fpk_")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[node]\nisv-id = 'a'\n", "receipt-key"),
        ("not toml [", "not valid TOML"),
        ("[nodes]\n", "unknown table"),
        ("[node]\nisv-id='a'\nreceipt-key='r'\nauth-key='k'\nisolation='thread'\n[platform]\n"
         "superlink='x:1'\nca-cert='c'\ngateway-key='g'\ntrusted-release-keys=['k']\n"
         "[data]\npath='e.parquet'\n", "isolation"),
        ("[node]\nisv-id='a'\nreceipt-key='r'\nauth-key='k'\n[platform]\nsuperlink='x:1'\n"
         "ca-cert='c'\ngateway-key='g'\ntrusted-release-keys=[]\n[data]\npath='e.parquet'\n",
         "trusted-release-keys"),
        ("[node]\nisv-id='a'\nreceipt-key='r'\nauth-key='k'\n[platform]\nsuperlink='x:1'\n"
         "ca-cert='c'\ngateway-key='g'\ntrusted-release-keys=['k']\n[data]\nconnector='sql'\n",
         "[data]"),
    ],
)
def test_bad_node_toml_is_refused_with_the_key_named(
    tmp_path: Path, text: str, needle: str
) -> None:
    """Each mistake gives a ConfigError whose message names what to fix."""
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_node_settings(path)
    assert needle in str(exc.value)


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed")
def test_generated_proxy_config_is_valid_nginx(tmp_path: Path) -> None:
    """nginx itself accepts the config `fedgate federation up` writes; only /v1/fleet/ forwards."""
    layout = PlatformLayout(tmp_path)
    make_certs(layout, superlink_names=["localhost"], proxy_names=["localhost"])
    conf = nginx_conf(layout, listen="127.0.0.1:9443", upstream="127.0.0.1:9093")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "proxy" / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    path = tmp_path / "proxy" / "nginx.conf"
    path.write_text(conf)
    res = subprocess.run(
        ["nginx", "-t", "-c", str(path), "-p", str(tmp_path / "proxy"), "-e", "/dev/stderr"],
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 0, res.stderr
    assert conf.count("proxy_pass") == 1 and "location ^~ /v1/fleet/" in conf
