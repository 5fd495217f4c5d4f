"""Merchant-signed consent lines (the JSON Lines ``consent import`` and ``node approve`` read)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consent import approve_artefact, parse_terms


def signed_consent_line(
    merchant: str, isv: str, key: Ed25519PrivateKey, signer: Ed25519PrivateKey
) -> str:
    """One ``node approve`` line: ``key`` is the merchant's key, ``signer`` signs the terms."""
    now = datetime.now(UTC).replace(microsecond=0)
    terms = {"consent_id": f"c-{merchant}", "merchant_id": merchant, "data_provider": isv,
             "data_consumer": "platform", "purposes": ["model_training"],
             "categories": ["cash_and_debt"], "data_from": "2026-01-01",
             "data_to": "2026-12-31", "frequency": {"uses": 30, "per": "day"},
             "data_life_days": 90, "consent_start": (now - timedelta(hours=1)).isoformat(),
             "consent_expiry": (now + timedelta(days=30)).isoformat(),
             "created_at": now.isoformat()}
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return json.dumps({"terms": terms, "merchant_key": pem,
                       "merchant_signature": approve_artefact(parse_terms(terms), signer)})
