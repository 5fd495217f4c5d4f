"""A small private PKI for the federation: one CA, the SuperLink's TLS certificate, key files.

``make_ca`` creates the platform's CA (ECDSA P-256, 10 years); ``issue_server_cert``
issues the SuperLink's (or the proxy's) certificate signed by it, with DNS and IP
subject alternative names — nodes verify the name they dial, so every address a
node uses must be listed. Private keys are written with mode ``0600`` (the file is
created with that mode, never widened), public material ``0644``. ISV nodes receive
only ``ca.pem``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .._errors import FederationError

__all__ = ["CertPaths", "make_ca", "issue_server_cert", "write_private", "write_public"]

CA_DAYS = 3650
SERVER_DAYS = 825


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file created with mode 0600 (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def write_public(path: Path, data: bytes) -> None:
    """Write a public file with mode 0644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True, slots=True)
class CertPaths:
    """Where the CA and a server certificate live."""

    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path


def make_ca(out_dir: Path, *, name: str = "fedgate federation CA") -> tuple[Path, Path]:
    """Create a CA in ``out_dir`` (``ca.pem``, ``ca.key`` 0600); keeps an existing one.

    Returns
    -------
    tuple[Path, Path]
        The CA certificate and key paths.
    """
    cert_path, key_path = out_dir / "ca.pem", out_dir / "ca.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, _key_pem(key))
    write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def issue_server_cert(
    out_dir: Path, names: Sequence[str], *, stem: str = "superlink"
) -> CertPaths:
    """Issue ``<stem>.pem``/``<stem>.key`` (0600) for ``names`` from the CA in ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Holds the CA (created if absent) and receives the certificate.
    names : Sequence[str]
        DNS names and IP addresses the server is reached by (the SANs); the first
        is the common name. At least one.
    stem : str, default "superlink"
    """
    if not names:
        raise ValueError("names must list at least one DNS name or IP address")
    ca_cert_path, ca_key_path = make_ca(out_dir)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise FederationError(f"{ca_key_path} is not an EC private key", code="BAD_CONFIG")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = out_dir / f"{stem}.pem", out_dir / f"{stem}.key"
    write_private(key_path, _key_pem(key))
    write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return CertPaths(ca_cert=ca_cert_path, ca_key=ca_key_path, cert=cert_path, key=key_path)
