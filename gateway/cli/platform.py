"""``fedgate federation …`` and ``fedgate certs …``: the platform's side of the deployment.

``certs init`` makes the federation CA and the SuperLink's and proxy's
certificates; ``federation up`` starts the SuperLink (TLS, SuperNode auth, no
runtime dependency installation, state under the data directory) and the
Fleet-only proxy and publishes the signed app release; ``onboard``/``offboard``
add or remove an ISV node's public key on the SuperLink's allow-list; ``nodes``
lists it; ``status`` shows a run. Files live under ``<data-dir>/federation``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._common import console, fail, settings

app = typer.Typer(no_args_is_help=True)
certs_app = typer.Typer(no_args_is_help=True)

SuperlinkOpt = Annotated[
    str, typer.Option("--superlink", help="The SuperLink's Control address (platform side).")
]
DEFAULT_SUPERLINK = "127.0.0.1:9093"


def _layout():  # noqa: ANN202 - PlatformLayout, imported lazily
    from federation.deploy import PlatformLayout

    return PlatformLayout(settings().data_dir.resolve() / "federation")


def _control(address: str):  # noqa: ANN202
    from federation.deploy import ControlClient

    ca = _layout().ca_cert
    if not ca.exists():
        fail("NO_CERTS", f"{ca} missing: run `fedgate certs init` first")
    return ControlClient(address, ca)


@certs_app.command("init")
def certs_init(
    name: Annotated[
        list[str], typer.Option("--name", help="SuperLink DNS name or IP (repeat).")
    ] = ["localhost", "127.0.0.1"],  # noqa: B006 - Typer reads list defaults
    proxy_name: Annotated[
        list[str], typer.Option("--proxy-name", help="Proxy DNS name or IP nodes dial (repeat).")
    ] = ["localhost", "127.0.0.1"],  # noqa: B006
) -> None:
    """Create the CA (kept if present) and the SuperLink's and proxy's certificates.

    Private keys are written 0600; give ISV nodes ``ca.pem`` only.
    """
    from federation.deploy import make_certs

    layout = _layout()
    make_certs(layout, superlink_names=list(name), proxy_names=list(proxy_name))
    console.print(f"CA: {layout.ca_cert} (give this file to every ISV node)")
    for stem, names in (("superlink", name), ("proxy", proxy_name)):
        c = layout.server_cert(stem)
        console.print(f"{stem}: {c.cert} (SANs {', '.join(names)}), key {c.key} (0600)")


@app.command("up")
def up(
    host: Annotated[str, typer.Option("--host", help="SuperLink bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 9093,
    proxy_listen: Annotated[
        str, typer.Option("--proxy-listen", help="Where ISV nodes connect (Fleet API only).")
    ] = "0.0.0.0:9443",
    proxy: Annotated[bool, typer.Option("--proxy/--no-proxy")] = True,
    superlink_name: Annotated[
        str,
        typer.Option("--superlink-name", help="Name the proxy verifies (a SAN of the cert)."),
    ] = "localhost",
) -> None:
    """Start the SuperLink and the Fleet-only proxy, publish the signed release, and wait."""
    from federation.deploy import (
        DeploymentError,
        publish_release,
        serve_until_signal,
        start_proxy,
        start_superlink,
    )

    layout = _layout()
    procs = []
    try:
        procs.append(start_superlink(layout, host=host, port=port))
        if proxy:
            procs.append(
                start_proxy(
                    layout,
                    listen=proxy_listen,
                    upstream=f"{host}:{port}",
                    upstream_name=superlink_name,
                )
            )
        release = publish_release(layout)
    except DeploymentError as exc:
        for p in reversed(procs):
            p.stop()
        fail(exc.code, str(exc))
    console.print(f"SuperLink on {host}:{port} (TLS, node auth, state {layout.database})")
    if proxy:
        console.print(f"Fleet-only proxy on {proxy_listen}")
    console.print(f"release {release['fab_hash'][:12]} signed by {release['key_id']}; nodes pin:")
    console.print(release["public_key"], soft_wrap=True, highlight=False)
    if not serve_until_signal(procs):
        fail("PROCESS_FAILED", "a platform process exited; see " + str(layout.logs))


@app.command("publish")
def publish() -> None:
    """Build fedgate's app bundle, sign it with the release key and store it in the SuperLink."""
    from federation.deploy import publish_release

    release = publish_release(_layout())
    typer.echo(json.dumps(release, indent=2))


@app.command("release-key")
def release_key() -> None:
    """Create (or show) the platform's Ed25519 release-signing key; nodes pin its public line."""
    from federation.deploy import release_key_id, release_keygen

    layout = _layout()
    pub = release_keygen(layout.release_key).read_text("utf-8").strip()
    console.print(f"{release_key_id(pub)}: {layout.release_key} (0600)")
    console.print(pub, soft_wrap=True, highlight=False)


@app.command("node-toml")
def node_toml(
    isv: Annotated[str, typer.Option("--isv", help="The ISV id.")],
    out: Annotated[Path, typer.Option("--out", help="The node's directory (gets node.toml).")],
    superlink: Annotated[
        str, typer.Option("--superlink", help="Address nodes dial: the Fleet-only proxy.")
    ],
    erp: Annotated[str, typer.Option("--erp", help="ERP file, relative to --out or absolute.")],
    mapping: Annotated[str, typer.Option("--mapping", help="Column-mapping TOML.")] = "",
) -> None:
    """Write a starting ``node.toml`` for an ISV: CA, gateway key and the pinned release key.

    The ISV reviews it (and adds its ``[policy]``) before ``fedgate node run``; the
    node trusts only what this file says.
    """
    import shutil

    from federation.deploy import release_keygen

    from ..keys import load_or_create_key, public_key_pem

    layout = _layout()
    if not layout.ca_cert.exists():
        fail("NO_CERTS", f"{layout.ca_cert} missing: run `fedgate certs init` first")
    (out / "certs").mkdir(parents=True, exist_ok=True)
    (out / "keys").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(layout.ca_cert, out / "certs" / "ca.pem")
    gateway = load_or_create_key(settings().resolved_key_dir, "gateway")
    (out / "keys" / "gateway.pub.pem").write_text(public_key_pem(gateway), "utf-8")
    release = release_keygen(layout.release_key).read_text("utf-8").strip()
    lines = [
        "[node]",
        f'isv-id = "{isv}"',
        'state-dir = "state"',
        'receipt-key = "keys/receipt.pem"',
        'auth-key = "keys/node_auth"',
        'isolation = "process"',
        "",
        "[platform]",
        f'superlink = "{superlink}"',
        'ca-cert = "certs/ca.pem"',
        'gateway-key = "keys/gateway.pub.pem"',
        f'trusted-release-keys = ["{release}"]',
        "",
        "[data]",
        f'path = "{erp}"',
        *([f'mapping = "{mapping}"'] if mapping else []),
        "",
        "[policy]",
        "# The node's own privacy policy (keys: federation/node/_policy.py). Empty: the safe",
        "# defaults (DP required, merchant approvals required: fedgate node approve).",
        "",
    ]
    (out / "node.toml").write_text("\n".join(lines), "utf-8")
    console.print(f"wrote {out / 'node.toml'}")


@app.command("onboard")
def onboard(
    key: Annotated[Path, typer.Option("--key", help="The node's node_auth.pub.")],
    isv: Annotated[str, typer.Option("--isv", help="The ISV id (a label for the node).")],
    superlink: SuperlinkOpt = DEFAULT_SUPERLINK,
) -> None:
    """Add an ISV node's public key to the SuperLink's allow-list."""
    from federation.deploy import DeploymentError

    try:
        with _control(superlink) as c:
            node_id = c.register_node(key, name=isv)
    except DeploymentError as exc:
        fail(exc.code, str(exc))
    console.print(f"{isv}: node {node_id} admitted")


@app.command("offboard")
def offboard(
    key: Annotated[Path, typer.Option("--key", help="The node's node_auth.pub.")],
    superlink: SuperlinkOpt = DEFAULT_SUPERLINK,
) -> None:
    """Remove a node's public key from the allow-list (its SuperNode is refused from now on)."""
    from federation.deploy import DeploymentError

    try:
        with _control(superlink) as c:
            node_id = c.unregister_node(key)
    except DeploymentError as exc:
        fail(exc.code, str(exc))
    if node_id is None:
        fail("UNKNOWN_NODE", f"{key} is not on the allow-list")
    console.print(f"node {node_id} removed")


@app.command("nodes")
def nodes(superlink: SuperlinkOpt = DEFAULT_SUPERLINK) -> None:
    """List the allow-listed nodes and their status."""
    from federation.deploy import DeploymentError

    try:
        with _control(superlink) as c:
            entries = c.list_nodes()
    except DeploymentError as exc:
        fail(exc.code, str(exc))
    table = Table("node id", "status")
    for n in entries:
        table.add_row(str(n.node_id), n.status)
    console.print(table)


@app.command("status")
def status(run_id: int, superlink: SuperlinkOpt = DEFAULT_SUPERLINK) -> None:
    """A run's status and, for a failed run, Flower's reason (exit 1 unless it completed)."""
    from federation.deploy import DeploymentError

    try:
        with _control(superlink) as c:
            st = c.run_state(run_id)
    except DeploymentError as exc:
        fail(exc.code, str(exc))
    console.print(f"run {run_id}: {st.status}:{st.sub_status} {st.details}".rstrip())
    if st.finished and not st.succeeded:
        raise typer.Exit(1)
