"""JWS for consent: ``alg`` ``EdDSA`` over Ed25519 keys, and no other algorithm.

Artefacts, merchant approvals and cohort manifests are all compact JWS signed
with Ed25519. Their header says ``"alg": "EdDSA"`` (RFC 8037), the name every
JOSE library verifies. joserfc 1.8 warns on each use of ``EdDSA`` because
RFC 9864 deprecates it in favour of the fully specified ``Ed25519``, and its
``EdDSA`` also admits Ed448 keys; the model below is joserfc's own algorithm
limited to Ed25519 keys and without that warning. A registry built here knows
only this algorithm, so a token with any other ``alg`` (``Ed25519``, ``none``,
``HS256``, ...) fails to deserialise.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc.errors import InvalidKeyTypeError
from joserfc.jwa import EdDSAAlgorithm
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry

__all__ = ["ALGORITHM", "make_registry"]

ALGORITHM: Final = "EdDSA"
"""The JWS ``alg`` of every consent token (RFC 8037 EdDSA, Ed25519 keys only)."""


class _Ed25519EdDSA(EdDSAAlgorithm):
    """joserfc's EdDSA, refusing Ed448 keys; no deprecation warning (the issue mandates EdDSA)."""

    security_warning = None  # type: ignore[assignment]  # the base allows None; its stub says str

    def sign(self, msg: bytes, key: OKPKey) -> bytes:
        """Sign with an Ed25519 private key; any other key type is refused."""
        if not isinstance(key.get_op_key("sign"), Ed25519PrivateKey):
            raise InvalidKeyTypeError("EdDSA here requires an Ed25519 OKP key")
        signature: bytes = super().sign(msg, key)
        return signature

    def verify(self, msg: bytes, sig: bytes, key: OKPKey) -> bool:
        """Verify with an Ed25519 public key; any other key type is refused."""
        if not isinstance(key.get_op_key("verify"), Ed25519PublicKey):
            raise InvalidKeyTypeError("EdDSA here requires an Ed25519 OKP key")
        ok: bool = super().verify(msg, sig, key)
        return ok


_EDDSA: Final = _Ed25519EdDSA()


def make_registry(*, max_payload_length: int | None = None) -> JWSRegistry:
    """A joserfc registry that accepts only :data:`ALGORITHM` over Ed25519.

    Parameters
    ----------
    max_payload_length : int | None, default None
        Largest JWS payload in bytes; ``None`` keeps joserfc's default.
    """

    class _Registry(JWSRegistry):
        # A class attribute of our own, so joserfc's shared table (and its other
        # algorithms) is never consulted or changed.
        algorithms = {ALGORITHM: _EDDSA}
        recommended = [ALGORITHM]

    registry = _Registry(algorithms=[ALGORITHM])
    if max_payload_length is not None:
        registry.max_payload_length = max_payload_length
    return registry
