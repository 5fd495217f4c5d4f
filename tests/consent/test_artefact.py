"""The signed artefact: canonical body, JWS round trip, forged and truncated signatures."""

from __future__ import annotations

import hashlib
import warnings
from datetime import UTC, datetime
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry

import consent
from consent import (
    InvalidConsentRequest,
    approve_artefact,
    parse_terms,
    sign_artefact,
    verify_approval,
    verify_artefact,
)
from consent._artefact import artefact_body
from consent._vocab import add_years

from .factories import CM_KEY, make_terms, terms_dict

OTHER = Ed25519PrivateKey.generate()


def test_round_trip_and_hash() -> None:
    """sign → verify returns the same terms; the hash is SHA-256 of the compact JWS."""
    terms = make_terms()

    signed = sign_artefact(terms, CM_KEY)
    again = verify_artefact(signed.token, CM_KEY.public_key())

    assert again.artefact == terms
    assert again.hash == signed.hash == hashlib.sha256(signed.token.encode()).hexdigest()
    assert jws.extract_compact(signed.token.encode()).headers() == {
        "alg": "EdDSA",
        "typ": "fedgate-consent+jws",
    }


def test_signed_payload_is_rfc8785_with_dpv_purposes() -> None:
    """The JWS payload is the RFC 8785 form of the body and names W3C DPV purpose IRIs."""
    signed = sign_artefact(make_terms(), CM_KEY)

    payload = jws.extract_compact(signed.token.encode()).payload

    assert payload == rfc8785.dumps(artefact_body(signed.artefact))
    assert b'"dpv":"https://w3id.org/dpv#CreditChecking"' in payload


def test_terms_normalise_offsets_and_order() -> None:
    """Offsets become UTC and code lists are sorted, so equal terms sign to equal bytes."""
    a = make_terms(
        consent_start="2026-06-01T08:00:00+08:00", purposes=["model_training", "credit_scoring"]
    )
    b = make_terms(consent_start="2026-06-01T00:00:00Z")

    assert a == b
    assert sign_artefact(a, CM_KEY).token == sign_artefact(b, CM_KEY).token


def _mutations() -> list[tuple[str, Any]]:
    def flip(token: str, at: int) -> str:
        return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]

    return [
        ("flipped_payload", lambda t: flip(t, t.index(".") + 10)),
        ("flipped_signature", lambda t: flip(t, len(t) - 5)),
        ("truncated", lambda t: t[:-12]),
        ("no_signature", lambda t: t.rsplit(".", 1)[0] + "."),
        ("two_parts", lambda t: t.rsplit(".", 1)[0]),
        ("garbage", lambda t: "not.a.jws"),
        ("non_ascii", lambda t: t + "é"),
        ("empty", lambda t: ""),
        ("wrong_key", lambda t: sign_artefact(make_terms(), OTHER).token),
        ("approval_as_artefact", lambda t: _attached_approval()),
        ("alg_ed25519", lambda t: _signed_with_alg("Ed25519")),
        ("alg_none", lambda t: _signed_with_alg("none")),
    ]


def _signed_with_alg(alg: str) -> str:
    """The right body, key and type, but a JWS ``alg`` other than EdDSA."""
    registry = JWSRegistry(algorithms=[alg])
    key = None if alg == "none" else OKPKey.import_key(CM_KEY)
    with warnings.catch_warnings():  # joserfc warns that "none" is deprecated: the point here
        warnings.simplefilter("ignore")
        return jws.serialize_compact(
            {"alg": alg, "typ": "fedgate-consent+jws"},
            rfc8785.dumps(artefact_body(make_terms())),
            key,
            registry=registry,
        )


def _attached_approval() -> str:
    """A merchant approval JWS with its payload attached: right key family, wrong type."""
    return jws.serialize_compact(
        {"alg": "EdDSA", "typ": "fedgate-consent-approval+jws"},
        rfc8785.dumps(artefact_body(make_terms())),
        consent._artefact.OKPKey.import_key(CM_KEY),
        registry=consent._artefact._REGISTRY,
    )


@pytest.mark.parametrize(("case", "mutate"), _mutations(), ids=[m[0] for m in _mutations()])
def test_bad_artefact_token_is_signature_invalid(case: str, mutate: Any) -> None:
    """Forged, truncated, wrong-key or wrong-type tokens are SIGNATURE_INVALID."""
    token = mutate(sign_artefact(make_terms(), CM_KEY).token)

    with pytest.raises(InvalidConsentRequest) as info:
        verify_artefact(token, CM_KEY.public_key())

    assert info.value.code == "SIGNATURE_INVALID", case


def test_merchant_approval_is_detached_and_bound_to_terms() -> None:
    """The merchant's approval verifies for its terms only, and carries no payload."""
    merchant = Ed25519PrivateKey.generate()
    terms = make_terms()
    signature = approve_artefact(terms, merchant)

    verify_approval(terms, signature, merchant.public_key())
    with pytest.raises(InvalidConsentRequest) as info:
        verify_approval(make_terms(data_life_days=7), signature, merchant.public_key())

    assert signature.split(".")[1] == ""
    assert info.value.code == "SIGNATURE_INVALID"


@pytest.mark.parametrize(
    ("purposes", "start", "expiry", "ok"),
    [
        (["credit_scoring"], "2026-06-01T00:00:00Z", "2027-06-01T00:00:00Z", True),
        # 366 days from 1 June 2026 end on 2 June 2027: a day past one calendar year.
        (["credit_scoring"], "2026-06-01T00:00:00Z", "2027-06-02T00:00:00Z", False),
        (["credit_scoring"], "2026-06-01T00:00:00Z", "2027-06-01T00:00:00.000001Z", False),
        (["credit_scoring"], "2027-06-01T00:00:00Z", "2028-06-01T00:00:00Z", True),  # leap year
        (["credit_scoring"], "2028-02-29T12:00:00Z", "2029-02-28T12:00:00Z", True),
        (["credit_scoring"], "2028-02-29T12:00:00Z", "2029-03-01T12:00:00Z", False),
        (["post_loan_monitoring"], "2026-06-01T00:00:00Z", "2031-06-01T00:00:00Z", True),
        (["post_loan_monitoring", "model_training"], "2026-06-01T00:00:00Z",
         "2027-07-06T00:00:00Z", False),
        (["fraud_detection"], "2026-06-01T00:00:00Z", "2028-06-02T00:00:00Z", False),
    ],
)  # fmt: skip
def test_per_purpose_duration_caps(purposes: list[str], start: str, expiry: str, ok: bool) -> None:
    """Each purpose caps the window in calendar years; the tightest purpose applies."""
    changes = {"purposes": purposes, "consent_start": start, "consent_expiry": expiry}

    if ok:
        assert parse_terms(terms_dict(**changes)).purposes == tuple(sorted(purposes))
    else:
        with pytest.raises(InvalidConsentRequest) as info:
            parse_terms(terms_dict(**changes))
        assert info.value.code == "DURATION_OVER_CAP"


@pytest.mark.parametrize(
    ("at", "years", "expected"),
    [
        (datetime(2026, 6, 1, 9, 30, tzinfo=UTC), 1, datetime(2027, 6, 1, 9, 30, tzinfo=UTC)),
        (datetime(2028, 2, 29, tzinfo=UTC), 1, datetime(2029, 2, 28, tzinfo=UTC)),
        (datetime(2028, 2, 29, tzinfo=UTC), 4, datetime(2032, 2, 29, tzinfo=UTC)),
        (datetime(9998, 1, 1, tzinfo=UTC), 5, datetime.max.replace(tzinfo=UTC)),
    ],
)
def test_add_years_is_calendar_arithmetic(at: datetime, years: int, expected: datetime) -> None:
    """N calendar years on; 29 February clamps to 28 February; past 9999 to the maximum."""
    assert add_years(at, years) == expected
