"""``fedgate node …``: what an ISV runs — key generation, a pre-flight check, the SuperNode.

Everything comes from the node's own ``node.toml`` (see
:mod:`federation.deploy._nodeconf`); nothing from the platform is a setting.
Failures print ``error[CODE]: …`` and exit non-zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._common import console, fail

app = typer.Typer(no_args_is_help=True)

ConfigOpt = Annotated[Path, typer.Option("--config", help="The node's node.toml.")]


def _settings(config: Path):  # noqa: ANN202 - NodeSettings, imported lazily
    from federation.deploy import DeploymentError, load_node_settings

    try:
        return load_node_settings(config)
    except DeploymentError as exc:
        fail(exc.code, str(exc))


@app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Key directory of this node.")] = Path("keys"),
) -> None:
    """Create the node's auth key pair (for the SuperLink) and its receipt-signing key.

    Hand ``node_auth.pub`` to the platform at onboarding; private keys stay here (0600).
    """
    from federation.deploy import node_keygen

    from ..keys import load_or_create_key, public_key_pem

    pub = node_keygen(out / "node_auth")
    receipt = load_or_create_key(out, "receipt")
    (out / "receipt.pub.pem").write_text(public_key_pem(receipt), "utf-8")
    console.print(f"auth key: {out / 'node_auth'} (0600); public key for onboarding: {pub}")
    console.print(f"receipt key: {out / 'receipt.pem'}; public: {out / 'receipt.pub.pem'}")
    console.print(pub.read_text("utf-8").strip(), soft_wrap=True, highlight=False)


@app.command("check")
def check(
    config: ConfigOpt,
    connect: Annotated[
        bool, typer.Option("--connect/--no-connect", help="Also open a TLS connection.")
    ] = True,
) -> None:
    """Validate the config, keys, data (schema + mapping) and the connection; train nothing."""
    from federation.deploy import check_node

    settings = _settings(config)
    findings = check_node(settings, connect=connect)
    table = Table("check", "ok", "detail", title=f"node {settings.isv_id}")
    for f in findings:
        table.add_row(f.check, "✔" if f.ok else "✘", f.detail)
    console.print(table)
    bad = [f.check for f in findings if not f.ok]
    if bad:
        fail("NODE_CHECK_FAILED", f"failed: {', '.join(bad)}")


def _approval_nodes(config: Path | None, job: Path | None, isv: str | None) -> list:  # noqa: ANN401
    """The node(s) whose own register ``approve`` writes: a node.toml's, or a job's ISVs'."""
    if (config is None) == (job is None):
        fail("BAD_ARGUMENT", "give exactly one of --config (node.toml) or --job (job TOML)")
    if config is not None:
        if isv is not None:
            fail("BAD_ARGUMENT", "--isv goes with --job; a node.toml names its own ISV")
        return [_settings(config).node]  # its policy is node.toml's own [policy] table
    from federation import DataError
    from federation.jobconfig import load_job_config
    from gateway import jobs

    from ._common import settings as gateway_settings

    try:
        cfg = load_job_config(job)  # type: ignore[arg-type]
    except DataError as exc:
        fail(exc.code, str(exc))
    nodes, _ = jobs.job_node_configs(gateway_settings(), cfg)
    if isv is not None:
        nodes = tuple(n for n in nodes if n.isv_id == isv)
        if not nodes:
            fail("BAD_ARGUMENT", f"the job config names no ISV {isv!r}")
    return list(nodes)


@app.command("approve")
def approve(
    file: Annotated[Path, typer.Argument(help="JSON Lines: terms, merchant_signature, "
                                               "merchant_key (as consent import).")],
    config: Annotated[
        Path | None, typer.Option("--config", help="The node's node.toml (deployment).")
    ] = None,
    job: Annotated[
        Path | None, typer.Option("--job", help="A job TOML: its ISVs' simulated nodes.")
    ] = None,
    isv: Annotated[
        str | None, typer.Option("--isv", help="With --job: only this ISV's node.")
    ] = None,
) -> None:
    """Register the merchants' signed approvals in the node's own approval register.

    Every merchant signature is verified before anything is written; one bad line
    refuses the file. Each node registers only the lines whose terms name its ISV as
    data provider; the node checks every manifest entry against this register.
    """
    from federation import FederationError
    from federation.node import approve_lines

    nodes = _approval_nodes(config, job, isv)
    try:
        lines = file.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        fail("UNREADABLE_FILE", f"cannot read {file}: {exc}")
    try:
        for node in nodes:
            register = node.approvals(node.node_policy())
            done = approve_lines(lines, register, isv_id=node.isv_id)
            console.print(
                f"node {node.isv_id}: {done.registered} approval(s) registered in "
                f"{register.path}; {done.other_isv} line(s) for other ISVs skipped",
                highlight=False,
            )
    except FederationError as exc:
        fail(exc.code, f"{file}: {exc}")


@app.command("import-approvals")
def import_approvals(
    legacy: Annotated[Path, typer.Argument(help="The JSON-lines register of an earlier version.")],
    config: ConfigOpt,
) -> None:
    """Import a JSON-lines approval register (earlier versions) into the node's SQLite one.

    Each line counts only if its HMAC verifies under this node's secret key, as it did
    when the node read the old file; failing lines are skipped and counted. Only into an
    empty register (``REGISTER_NOT_EMPTY`` otherwise: a second import would bring back
    approvals revoked since). The old file is left in place for the operator to archive.
    """
    from federation import FederationError

    node = _settings(config).node
    if not legacy.is_file():
        fail("UNREADABLE_FILE", f"no file {legacy}")
    register = node.approvals(node.node_policy(), check_legacy=False)
    if register.path.resolve() == legacy.resolve():
        fail("BAD_ARGUMENT", f"the node's register ({register.path}) is the JSON-lines file "
             "itself: set [policy] approvals to a new file (e.g. approvals.sqlite) first")
    try:
        imported, skipped = register.import_jsonl(legacy)
    except (FederationError, OSError, UnicodeDecodeError) as exc:
        fail(getattr(exc, "code", "UNREADABLE_FILE"), f"{legacy}: {exc}")
    console.print(
        f"node {node.isv_id}: {imported} approval record(s) imported into {register.path}; "
        f"{skipped} line(s) failed the node's HMAC or did not parse and were skipped",
        highlight=False,
    )


@app.command("run")
def run(config: ConfigOpt) -> None:
    """Run the node's SuperNode until it exits or this command is stopped (SIGINT/SIGTERM)."""
    from federation.deploy import DeploymentError, serve_until_signal, start_supernode

    settings = _settings(config)
    log = settings.node.state_dir / "supernode.log"
    try:
        procs = start_supernode(settings, log)
    except DeploymentError as exc:
        fail(exc.code, str(exc))
    console.print(
        f"node {settings.isv_id}: SuperNode pid {procs[0].pid} → {settings.superlink} "
        f"(isolation {settings.isolation}); log {log}"
    )
    if not serve_until_signal(procs):
        fail("NODE_EXITED", f"the SuperNode exited; see {log}:\n{procs[0].log_tail(10)}")
