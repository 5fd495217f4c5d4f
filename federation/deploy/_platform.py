"""The platform side of the deployment: SuperLink, Fleet-only proxy, signed app release.

Layout under the platform's federation directory (``<data-dir>/federation``)::

    certs/      ca.pem, ca.key (0600), superlink.pem/.key, proxy.pem/.key
    superlink/  state.db (Flower's SQLite state: nodes, runs, stored FABs)
    release/    release.key (0600) + .pub, release.json (the published FAB's hash)
    proxy/      nginx.conf, logs, temp
    jobs/       one job file per submitted job
    logs/       process logs

The SuperLink serves Fleet, Control and Runtime APIs on one HTTPS port (flwr 1.42)
and is bound to loopback (or the platform network). ISV nodes reach it only
through the proxy, which forwards ``/v1/fleet/`` and answers everything else with
403 — so a node cannot submit a run (``/v1/control/start-run``), list nodes, or
talk to the Runtime API (``/v1/runtime/``).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from ._errors import ProcessError
from ._fab import APP_ID, build_fab, sign_fab, store_signed_fab
from ._keys import release_keygen
from ._pki import CertPaths, issue_server_cert
from ._procs import ManagedProcess, flower_bin, privacy_env

__all__ = [
    "PlatformLayout",
    "superlink_argv",
    "start_superlink",
    "nginx_conf",
    "start_proxy",
    "publish_release",
    "make_certs",
    "nginx_bin",
]

FLEET_PREFIX = "/v1/fleet/"


@dataclass(frozen=True, slots=True)
class PlatformLayout:
    """Paths under the platform's federation directory."""

    root: Path

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def ca_cert(self) -> Path:
        return self.certs / "ca.pem"

    @property
    def database(self) -> Path:
        return self.root / "superlink" / "state.db"

    @property
    def release_key(self) -> Path:
        return self.root / "release" / "release.key"

    @property
    def release_file(self) -> Path:
        return self.root / "release" / "release.json"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def server_cert(self, stem: str) -> CertPaths:
        """Existing certificate paths for ``stem`` (``superlink`` or ``proxy``)."""
        return CertPaths(
            ca_cert=self.ca_cert,
            ca_key=self.certs / "ca.key",
            cert=self.certs / f"{stem}.pem",
            key=self.certs / f"{stem}.key",
        )


def make_certs(
    layout: PlatformLayout, *, superlink_names: list[str], proxy_names: list[str]
) -> None:
    """CA (kept if present), SuperLink and proxy certificates with their SANs."""
    issue_server_cert(layout.certs, superlink_names, stem="superlink")
    issue_server_cert(layout.certs, proxy_names, stem="proxy")


def superlink_argv(
    layout: PlatformLayout, *, host: str, port: int, isolation: str = "subprocess"
) -> list[str]:
    """``flower-superlink`` with TLS, node auth, no dependency installation, state on disk."""
    c = layout.server_cert("superlink")
    return [
        flower_bin("flower-superlink"),
        "--ssl-certfile", str(c.cert),
        "--ssl-keyfile", str(c.key),
        "--ssl-ca-certfile", str(c.ca_cert),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--database", str(layout.database),
        "--isolation", isolation,
        "--host", host,
        "--port", str(port),
    ]


def start_superlink(
    layout: PlatformLayout, *, host: str = "127.0.0.1", port: int = 9093, timeout: float = 60.0
) -> ManagedProcess:
    """Start the SuperLink and wait until it serves."""
    for p in (layout.server_cert("superlink").cert, layout.server_cert("superlink").key):
        if not p.exists():
            raise ProcessError(f"{p} missing: run `fedgate certs init` first", code="NO_CERTS")
    layout.database.parent.mkdir(parents=True, exist_ok=True)
    proc = ManagedProcess(
        "superlink",
        superlink_argv(layout, host=host, port=port),
        layout.logs / "superlink.log",
        env=privacy_env({"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}),
    ).start()
    proc.wait_serving(host, port, timeout)
    return proc


def nginx_bin() -> str:
    """The nginx executable (Debian's ``/usr/sbin/nginx``); ``ProcessError`` if absent."""
    debian = Path("/usr/sbin/nginx")
    found = shutil.which("nginx") or (str(debian) if debian.exists() else None)
    if not found:
        raise ProcessError("nginx not installed (apt-get install -y nginx)", code="NO_PROXY")
    return found


def nginx_conf(
    layout: PlatformLayout,
    *,
    listen: str,
    upstream: str,
    upstream_name: str = "localhost",
) -> str:
    """An nginx config that forwards only the Fleet API to the SuperLink over verified TLS."""
    run = layout.root / "proxy"
    c = layout.server_cert("proxy")
    user = ""
    if os.geteuid() == 0:  # workers keep root's access to the 0600 key/temp dirs in tests/CI
        user = f"user {pwd.getpwuid(0).pw_name};"
    temp = run / "tmp"
    return f"""# fedgate: ISV nodes reach the Fleet API only (generated by fedgate federation up)
{user}
worker_processes 1;
daemon off;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {run}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    client_max_body_size 512m;
    server_tokens off;
    server {{
        listen {listen} ssl;
        ssl_certificate {c.cert};
        ssl_certificate_key {c.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location ^~ {FLEET_PREFIX} {{
            proxy_pass https://{upstream};
            proxy_http_version 1.1;
            proxy_ssl_trusted_certificate {c.ca_cert};
            proxy_ssl_verify on;
            proxy_ssl_name {upstream_name};
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_request_buffering off;
            proxy_buffering off;
        }}
        location / {{
            default_type application/json;
            return 403 '{{"code":"FLEET_ONLY","detail":"only the Fleet API is served here"}}';
        }}
    }}
}}
"""


def start_proxy(
    layout: PlatformLayout,
    *,
    listen: str,
    upstream: str,
    upstream_name: str = "localhost",
    timeout: float = 30.0,
) -> ManagedProcess:
    """Write the nginx config and start nginx in the foreground (its own process)."""
    run = layout.root / "proxy"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (run / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    conf = run / "nginx.conf"
    conf.write_text(
        nginx_conf(layout, listen=listen, upstream=upstream, upstream_name=upstream_name), "utf-8"
    )
    proc = ManagedProcess(
        "proxy", [nginx_bin(), "-c", str(conf), "-p", str(run), "-e", str(run / "error.log")],
        layout.logs / "proxy.log",
    ).start()
    host, _, port = listen.rpartition(":")
    proc.wait_serving(host or "127.0.0.1", int(port), timeout)
    return proc


def publish_release(layout: PlatformLayout, *, pyproject: str | None = None) -> dict[str, str]:
    """Build fedgate's app bundle, sign it with the release key, store it in the SuperLink.

    Returns
    -------
    dict[str, str]
        ``{"app_id", "fab_hash", "key_id", "public_key"}``, also written to ``release.json``.
    """
    pub = release_keygen(layout.release_key)
    fab = build_fab(pyproject)
    verifications = sign_fab(fab, layout.release_key)
    fab_hash = store_signed_fab(layout.database, fab, verifications)
    key_id = next(k for k in verifications if k != "valid_license")
    doc = {
        "app_id": APP_ID,
        "fab_hash": fab_hash,
        "key_id": key_id,
        "public_key": pub.read_text("utf-8").strip(),
    }
    layout.release_file.write_text(json.dumps(doc, indent=2), "utf-8")
    return doc
