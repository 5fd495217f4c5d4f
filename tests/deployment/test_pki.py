"""The federation PKI and keys: CA, server certificate SANs, key file modes, key types."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from federation.deploy import ConfigError, issue_server_cert, node_keygen, release_keygen
from federation.deploy._keys import load_node_public_key, load_release_key, release_key_id


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_server_cert_has_the_sans_and_chains_to_the_ca(tmp_path: Path) -> None:
    """DNS and IP SANs as given, signed by the CA, server-auth only; private keys 0600."""
    paths = issue_server_cert(tmp_path, ["superlink", "10.0.0.2", "localhost"])
    cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["superlink", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.2")]
    cert.verify_directly_issued_by(ca)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert _mode(paths.key) == _mode(paths.ca_key) == 0o600
    assert _mode(paths.cert) == 0o644


def test_the_ca_is_kept_across_issues(tmp_path: Path) -> None:
    """A second certificate is issued by the same CA (nodes keep their ca.pem)."""
    a = issue_server_cert(tmp_path, ["a"], stem="a")
    before = a.ca_cert.read_bytes()
    b = issue_server_cert(tmp_path, ["b"], stem="b")
    assert b.ca_cert.read_bytes() == before
    with pytest.raises(ValueError, match="names"):
        issue_server_cert(tmp_path, [])


def test_node_key_is_nist_ec_and_private_half_is_0600(tmp_path: Path) -> None:
    """Node auth keys are ECDSA P-384 in OpenSSH form; keygen keeps an existing pair."""
    pub = node_keygen(tmp_path / "node_auth")
    key = load_node_public_key(pub)
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    assert _mode(tmp_path / "node_auth") == 0o600
    first = pub.read_bytes()
    assert node_keygen(tmp_path / "node_auth").read_bytes() == first


def test_a_release_key_is_not_a_node_key(tmp_path: Path) -> None:
    """An Ed25519 line is refused as a node key, and an EC key as a release key."""
    rel = release_keygen(tmp_path / "release.key")
    with pytest.raises(ConfigError) as exc:
        load_node_public_key(rel)
    assert exc.value.code == "BAD_NODE_KEY"
    node_keygen(tmp_path / "node_auth")
    with pytest.raises(ConfigError):
        load_release_key(tmp_path / "node_auth")
    line = rel.read_text()
    assert release_key_id(line).startswith("fpk_") and release_key_id(line) == release_key_id(
        line.strip() + " other-comment"
    )
