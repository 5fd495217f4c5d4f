"""Signed app bundles: Flower's signature format, refused when unsigned or signed by another key."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

from flwr.supernode.start_client_internal import _verify_fab

from federation.deploy import build_fab, fab_pyproject, release_keygen, sign_fab, verify_fab
from federation.deploy._keys import release_key_id


def _trusted(pub: Path) -> dict[str, str]:
    line = pub.read_text().strip()
    return {release_key_id(line): line}


def test_bundle_points_at_fedgate_apps_and_is_deterministic() -> None:
    """The FAB names fedgate's ServerApp entry and ClientApp; the same bytes every build."""
    fab = build_fab()
    assert fab == build_fab()
    with zipfile.ZipFile(io.BytesIO(fab)) as z:
        text = z.read("pyproject.toml").decode()
    assert 'serverapp = "federation.deploy.apps:server_app"' in text
    assert 'clientapp = "federation.apps.client_app:app"' in text


def test_flower_accepts_our_signature_and_refuses_others(tmp_path: Path) -> None:
    """Flower's own SuperNode check passes for the pinned key only, and for this FAB only."""
    from flwr.supercore.fab import Fab

    pub = release_keygen(tmp_path / "release.key")
    other = release_keygen(tmp_path / "other.key")
    fab = build_fab()
    ver = sign_fab(fab, tmp_path / "release.key")
    digest = hashlib.sha256(fab).hexdigest()
    assert _verify_fab(Fab(digest, fab, ver), _trusted(pub))
    assert verify_fab(fab, ver, _trusted(pub))
    # Signed by a key the node does not pin.
    assert not _verify_fab(Fab(digest, fab, ver), _trusted(other))
    forged = sign_fab(fab, tmp_path / "other.key")
    assert not _verify_fab(Fab(digest, fab, forged), _trusted(pub))
    # A signature over another bundle does not carry over; no signature verifies nothing.
    evil = build_fab(fab_pyproject(clientapp="evil:app"))
    assert not _verify_fab(Fab(hashlib.sha256(evil).hexdigest(), evil, ver), _trusted(pub))
    assert not verify_fab(evil, ver, _trusted(pub))
    assert not verify_fab(fab, {}, _trusted(pub))
    # A tampered signature fails.
    key_id = next(k for k in ver if k != "valid_license")
    rec = json.loads(ver[key_id])
    rec["signed_at"] += 1
    assert not verify_fab(fab, {**ver, key_id: json.dumps(rec)}, _trusted(pub))
