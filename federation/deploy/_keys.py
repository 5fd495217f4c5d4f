"""Key pairs of the deployment: SuperNode auth keys and app-release signing keys.

- **Node auth key** (one per ISV node): ECDSA P-384, private key in OpenSSH format
  (mode 0600), public key as an OpenSSH line. Flower's SuperNode signs every Fleet
  request with it; the SuperLink admits only public keys registered through its
  Control API (``--enable-supernode-auth``), so the public key is what an ISV hands
  over at onboarding.
- **Release key** (the platform's, for app bundles): Ed25519. Its public key goes
  into each node's ``trusted-entities`` under a key id (``fpk_…``); a node then runs
  only FABs carrying a valid signature by a key it lists.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ._errors import ConfigError
from ._pki import write_private, write_public

__all__ = [
    "node_keygen",
    "load_node_public_key",
    "node_public_pem",
    "release_keygen",
    "load_release_key",
    "release_key_id",
]


def _write_pair(
    private_path: Path,
    pub_path: Path,
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
    comment: bytes,
) -> None:
    """The private key in OpenSSH format (0600) and its public OpenSSH line."""
    write_private(
        private_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    write_public(pub_path, public + comment + b"\n")


def node_keygen(private_path: Path) -> Path:
    """Create a node auth key pair (``private_path`` 0600, ``private_path.pub``); keeps one.

    Returns
    -------
    Path
        The public key file (one OpenSSH line).
    """
    pub_path = private_path.with_name(private_path.name + ".pub")
    if private_path.exists() and pub_path.exists():
        return pub_path
    _write_pair(private_path, pub_path, ec.generate_private_key(ec.SECP384R1()), b"")
    return pub_path


def load_node_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """A node's public auth key from its OpenSSH line (``ConfigError`` if not NIST EC)."""
    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read node public key {path}: {exc}", code="BAD_NODE_KEY"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in (
        "secp256r1",
        "secp384r1",
        "secp521r1",
    ):
        raise ConfigError(f"{path} is not a NIST EC public key", code="BAD_NODE_KEY")
    return key


def node_public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    """The bytes the SuperLink stores for a node (PEM SubjectPublicKeyInfo)."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def release_keygen(private_path: Path) -> Path:
    """Create the platform's Ed25519 release-signing key (0600) and ``.pub``; keeps one."""
    pub_path = private_path.with_name(private_path.name + ".pub")
    if private_path.exists() and pub_path.exists():
        return pub_path
    _write_pair(
        private_path, pub_path, ed25519.Ed25519PrivateKey.generate(), b" fedgate-release"
    )
    return pub_path


def load_release_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """The release-signing private key (``ConfigError`` if it is not Ed25519)."""
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read release key {path}: {exc}", code="BAD_RELEASE_KEY"
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key", code="BAD_RELEASE_KEY")
    return key


def release_key_id(public_line: str) -> str:
    """The trusted-entity id of a release public key: ``fpk_`` + 16 hex of its SHA-256."""
    body = public_line.split()[1] if len(public_line.split()) > 1 else public_line
    return "fpk_" + hashlib.sha256(body.encode()).hexdigest()[:16]
