"""fedgate's Flower app bundle (FAB): build, sign, verify, and store it in the SuperLink.

The bundle holds no code of its own: its ``pyproject.toml`` points Flower at
fedgate's ServerApp entry (:mod:`federation.deploy.apps`) and ClientApp
(``federation.apps.client_app:app``), which come from the fedgate version each
side installed. What a node must refuse is a bundle pointing anywhere else, so
bundles are signed:

- **the platform signs a release**: :func:`sign_fab` signs ``SHA-256(fab)`` with
  its Ed25519 release key in Flower's own format (8-byte big-endian
  ``signed_at`` ‖ digest, base64url signature, keyed by the trusted-entity id);
- **it stores the signed bundle in its SuperLink** (:func:`store_signed_fab`),
  where Flower keeps FABs with their verification records; runs then reference
  the stored app by id and hash, so nodes receive the signatures with the FAB;
- **an ISV reviews and pins**: ``fedgate node check`` prints the release key id
  its config trusts; the node's SuperNode runs with ``--trusted-entities``
  listing only those keys, and Flower refuses (error reply, nothing executed)
  any FAB without a valid signature by one of them — an unsigned bundle (``flwr
  run`` of a local directory) included.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ._keys import load_release_key, release_key_id

__all__ = [
    "APP_ID",
    "FAB_PUBLISHER",
    "FAB_NAME",
    "fab_pyproject",
    "build_fab",
    "sign_fab",
    "verify_fab",
    "store_signed_fab",
]

FAB_PUBLISHER = "fedgate"
FAB_NAME = "fedgate-apps"
APP_ID = f"@{FAB_PUBLISHER}/{FAB_NAME}"
SERVER_COMPONENT = "federation.deploy.apps:server_app"
CLIENT_COMPONENT = "federation.apps.client_app:app"


def fab_pyproject(
    *,
    version: str = "0.1.0",
    serverapp: str = SERVER_COMPONENT,
    clientapp: str = CLIENT_COMPONENT,
    name: str = FAB_NAME,
    config: dict[str, str] | None = None,
) -> str:
    """The bundle's ``pyproject.toml`` (one run-config key, ``job-file``, by default)."""
    cfg = config if config is not None else {"job-file": ""}
    lines = [
        "[project]",
        f'name = "{name}"',
        f'version = "{version}"',
        'description = "fedgate ServerApp and ClientApp (code installed with fedgate)"',
        'license = "Apache-2.0"',
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        f'publisher = "{FAB_PUBLISHER}"',
        "",
        "[tool.flwr.app.components]",
        f'serverapp = "{serverapp}"',
        f'clientapp = "{clientapp}"',
        "",
        "[tool.flwr.app.config]",
        *(f'{k} = "{v}"' for k, v in cfg.items()),
        "",
    ]
    return "\n".join(lines)


def build_fab(pyproject: str | None = None) -> bytes:
    """The FAB bytes (Flower's own deterministic builder) for ``pyproject``."""
    from flwr.cli.build import build_fab_from_files

    fab, _ = build_fab_from_files({"pyproject.toml": (pyproject or fab_pyproject()).encode()})
    return fab


def _message(fab: bytes, signed_at: int) -> bytes:
    return signed_at.to_bytes(8, "big") + hashlib.sha256(fab).digest()


def _public_line(key: ed25519.Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def sign_fab(fab: bytes, release_key: Path, *, signed_at: int | None = None) -> dict[str, str]:
    """Flower verification records for ``fab`` signed with the release key at ``release_key``.

    Returns
    -------
    dict[str, str]
        ``{key_id: json({"signature", "signed_at"}), "valid_license": "Valid"}``, the
        shape Flower stores with a FAB and SuperNodes check against their trusted entities.
    """
    key = load_release_key(release_key)
    when = int(time.time()) if signed_at is None else signed_at
    sig = base64.urlsafe_b64encode(key.sign(_message(fab, when))).decode().rstrip("=")
    key_id = release_key_id(_public_line(key))
    return {key_id: json.dumps({"signature": sig, "signed_at": when}), "valid_license": "Valid"}


def verify_fab(fab: bytes, verifications: dict[str, str], trusted: dict[str, str]) -> bool:
    """Whether one trusted key (id → OpenSSH line) signed ``fab`` (same rule as Flower's)."""
    for key_id, raw in verifications.items():
        if key_id == "valid_license" or key_id not in trusted:
            continue
        pub = serialization.load_ssh_public_key(trusted[key_id].encode())
        if not isinstance(pub, ed25519.Ed25519PublicKey):
            continue
        rec = json.loads(raw)
        sig = base64.urlsafe_b64decode(rec["signature"] + "=" * (-len(rec["signature"]) % 4))
        try:
            pub.verify(sig, _message(fab, int(rec["signed_at"])))
            return True
        except InvalidSignature:
            continue
    return False


def store_signed_fab(
    database: Path, fab: bytes, verifications: dict[str, str], *, app_id: str = APP_ID
) -> str:
    """Store ``fab`` with its verification records in the SuperLink's state database.

    Uses Flower's own state layer on the SuperLink's SQLite file (the platform's
    host); the app is associated with the default federation under ``app_id``
    (``@<publisher>/<name>`` of the bundle's pyproject; one bundle per app id — storing
    another bundle under the same id replaces it, as publishing a new release should).

    Returns
    -------
    str
        The FAB's SHA-256 hex digest (what a run references).
    """
    from flwr.common.constant import NOOP_FLWR_AID
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.supercore.constant import NOOP_FEDERATION_ID, TaskType
    from flwr.supercore.fab import Fab
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.superlink.config_loader import get_federation_manager

    db = str(database)
    factory = LinkStateFactory(
        db, get_federation_manager(is_simulation=False), ObjectStoreFactory(db)
    )
    state = factory.state()
    state.federation_manager.ensure_default_federations_exist(flwr_aid=NOOP_FLWR_AID)
    digest = hashlib.sha256(fab).hexdigest()
    return state.store_app(
        Fab(digest, fab, dict(verifications)),
        NOOP_FEDERATION_ID,
        app_id,
        TaskType.SERVER_APP,
        NOOP_FLWR_AID,
    )
