"""The ServerApp's key files: the gateway's signing key and the registered node keys.

Every key is read from a PEM file named in the run config; anything that is not
an Ed25519 key of the expected kind is ``BAD_CONFIG``.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .._errors import FederationError

__all__ = ["load_public_key", "load_private_key", "same_key", "load_node_keys"]


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; ``FederationError`` (``BAD_CONFIG``) otherwise."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise FederationError(f"cannot read public key {path}: {exc}", code="BAD_CONFIG") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise FederationError(f"{path} is not an Ed25519 public key", code="BAD_CONFIG")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise FederationError(f"{path} is not an Ed25519 private key", code="BAD_CONFIG")
    return key


def same_key(private: Ed25519PrivateKey, public_pem: Path) -> bool:
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    mine = private.public_key().public_bytes(*raw)
    return load_public_key(public_pem).public_bytes(*raw) == mine


def load_node_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    out: dict[str, Ed25519PublicKey] = {}
    for isv, pem_path in json.loads(path.read_text("utf-8")).items():
        key = serialization.load_pem_public_key(Path(pem_path).read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise FederationError(f"node key of {isv} is not Ed25519", code="BAD_CONFIG")
        out[str(isv)] = key
    return out
