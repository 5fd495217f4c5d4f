"""docker/ without a Docker engine: compose parses, its files exist, entrypoints are real."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import pytest
import typer
import yaml

from gateway.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _fedgate_argv(service: dict, dockerfile_entry: list[str] | None) -> list[str] | None:
    """The fedgate argv a service runs (entrypoint + command), or None if not fedgate."""
    entry = service.get("entrypoint", dockerfile_entry)
    command = service.get("command", [])
    if isinstance(command, str):
        command = shlex.split(command)
    argv = list(entry or []) + list(command)
    return argv[1:] if argv and argv[0] == "fedgate" else None


def _resolve(argv: list[str]) -> None:
    """Parse ``argv`` with fedgate's own CLI (no execution); raises on an unknown command."""
    group: click.Command = typer.main.get_command(app)
    ctx = group.make_context("fedgate", list(argv), resilient_parsing=False)
    args = list(argv)
    while isinstance(group, click.Group):
        name, cmd, args = group.resolve_command(ctx, args)
        assert cmd is not None, f"fedgate has no command {name!r}"
        ctx = cmd.make_context(name, list(args), parent=ctx)
        group = cmd


def _dockerfile_entry(path: Path) -> list[str] | None:
    import json

    for line in path.read_text().splitlines():
        if line.startswith("ENTRYPOINT"):
            return json.loads(line.removeprefix("ENTRYPOINT").strip())
    return None


def test_compose_services_and_networks() -> None:
    """Postgres, a marked gateway placeholder, SuperLink, proxy, init, 3 nodes with own volumes."""
    doc = _compose()
    services = doc["services"]
    assert {"postgres", "gateway", "superlink", "proxy", "init", "onboard"} <= set(services)
    nodes = [s for s in services if s.startswith("isv")]
    assert len(nodes) == 3
    volumes = [services[n]["volumes"][0].split(":")[0] for n in nodes]
    assert len(set(volumes)) == 3 and all(v in doc["volumes"] for v in volumes)
    text = (DOCKER / "compose.yaml").read_text()
    assert "PLACEHOLDER" in text.split("gateway:")[1].splitlines()[0]
    # Nodes share a network with the proxy only; the SuperLink is not on it.
    assert "isv" not in services["superlink"]["networks"]
    assert set(services["proxy"]["networks"]) == {"platform", "isv"}
    assert all(services[n]["networks"] == ["isv"] for n in nodes)


def test_every_referenced_file_and_context_exists() -> None:
    """Build contexts, Dockerfiles, bind-mounted files and files the Dockerfiles COPY exist."""
    doc = _compose()
    for name, svc in doc["services"].items():
        build = svc.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context.is_dir(), name
            dockerfile = context / build["dockerfile"]
            assert dockerfile.is_file(), name
            for line in dockerfile.read_text().splitlines():
                if line.startswith("COPY "):
                    for src in line.split()[1:-1]:
                        assert (context / src).exists(), f"{dockerfile.name}: {src}"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DOCKER / src).exists(), f"{name}: {src}"
            else:
                assert src in doc["volumes"], f"{name}: volume {src} not declared"


def test_entrypoints_are_real_fedgate_commands() -> None:
    """Every fedgate command the images and services run parses with fedgate's CLI."""
    doc = _compose()
    ran = 0
    for svc in doc["services"].values():
        dockerfile = None
        if "build" in svc:
            build = svc["build"]
            dockerfile = _dockerfile_entry(DOCKER / build["context"] / build["dockerfile"])
        argv = _fedgate_argv(svc, dockerfile)
        if argv is not None:
            _resolve(argv)
            ran += 1
    for line in (DOCKER / "init.sh").read_text().replace("\\\n", " ").splitlines() + [
        ln for svc in doc["services"].values() for ln in
        (svc.get("command", []) if isinstance(svc.get("command"), list) else [])
    ]:
        for part in line.split(";"):
            words = shlex.split(part.replace("$$", "").strip(), comments=True)
            words = [w for w in words if w not in ("do", "||", "exit", "1", "done")]
            if "fedgate" in words:
                _resolve(words[words.index("fedgate") + 1 :])
                ran += 1
    assert ran >= 8
    with pytest.raises(click.UsageError):
        _resolve(["node", "serve"])  # the check can fail


def test_proxy_config_forwards_only_the_fleet_api() -> None:
    """The compose proxy forwards /v1/fleet/ only and refuses everything else."""
    conf = (DOCKER / "nginx" / "fleet-proxy.conf").read_text()
    locations = [ln.strip() for ln in conf.splitlines() if ln.strip().startswith("location")]
    assert locations == ["location ^~ /v1/fleet/ {", "location / {"]
    assert "return 403" in conf.split("location / {")[1]
    assert "proxy_ssl_verify on;" in conf and "/v1/control" not in conf.replace("# ", "").split(
        "http {"
    )[1]
