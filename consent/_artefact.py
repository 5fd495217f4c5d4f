"""The consent artefact: immutable, signed terms of one merchant's authorization.

An artefact is never edited. Changing terms means a new artefact whose
``supersedes`` names the old one (and whose ``version`` is one higher).

The signed body is the RFC 8785 canonical JSON of :func:`artefact_body`. The
consent manager signs it as a compact JWS (``alg`` ``EdDSA`` with an Ed25519
key, RFC 8037, and no other algorithm; ``typ`` :data:`ARTEFACT_TYPE`);
a merchant may sign the same body as a detached compact JWS (RFC 7515
appendix F, ``typ`` :data:`APPROVAL_TYPE`) as evidence of approval. The
artefact hash is the hex SHA-256 of the consent manager's compact JWS.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final, Literal, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from ledger import canonical_json, parse_canonical

from ._errors import InvalidConsentRequest
from ._jose import ALGORITHM, make_registry
from ._vocab import (
    CATEGORIES,
    PURPOSES,
    format_time,
    is_valid_id,
    parse_date,
    parse_time,
)

__all__ = [
    "ARTEFACT_TYPE",
    "APPROVAL_TYPE",
    "FREQUENCY_UNITS",
    "FrequencyUnit",
    "Frequency",
    "ConsentArtefact",
    "SignedArtefact",
    "artefact_body",
    "parse_terms",
    "sign_artefact",
    "verify_artefact",
    "approve_artefact",
    "verify_approval",
    "artefact_hash",
    "check_terms",
    "read_artefact_unverified",
]

ARTEFACT_TYPE: Final = "fedgate-consent+jws"
APPROVAL_TYPE: Final = "fedgate-consent-approval+jws"
SCHEMA: Final = "fedgate.consent/1"
FrequencyUnit = Literal["hour", "day", "month", "year"]
FREQUENCY_UNITS: Final[tuple[FrequencyUnit, ...]] = ("hour", "day", "month", "year")
_MAX_INT = 2**53 - 1
_REGISTRY = make_registry()  # artefacts are small: joserfc's default size limits stand


@dataclass(frozen=True, slots=True)
class Frequency:
    """How often the data may be used: at most ``uses`` per calendar ``unit`` (UTC)."""

    uses: int
    unit: FrequencyUnit

    def period_start(self, at: datetime) -> datetime:
        """Start of the calendar period (UTC) that contains ``at``."""
        at = at.astimezone(UTC)
        if self.unit == "hour":
            return at.replace(minute=0, second=0, microsecond=0)
        if self.unit == "day":
            return at.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.unit == "month":
            return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return at.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class ConsentArtefact:
    """Immutable consent terms; see the module docstring.

    Parameters
    ----------
    consent_id, merchant_id, data_provider, data_consumer : str
        Ids (``consent.ID_PATTERN``); provider is the ISV, consumer the lender.
    purposes : tuple[str, ...]
        Sorted, distinct purpose codes from ``consent.PURPOSES``.
    categories : tuple[str, ...]
        Sorted, distinct ERP field groups from ``consent.CATEGORIES``.
    data_from, data_to : date
        The data range a use may read (inclusive).
    frequency : Frequency
        Use limit per calendar period.
    data_life_days : int
        How long data derived from a use may be kept.
    consent_start, consent_expiry : datetime
        The window in which uses are allowed (``start`` may be in the future).
    created_at : datetime
        When the artefact was created.
    version : int, default 1
        1 for a first grant; one more than the artefact it supersedes.
    supersedes : str | None, default None
        The consent id this artefact replaces.
    """

    consent_id: str
    merchant_id: str
    data_provider: str
    data_consumer: str
    purposes: tuple[str, ...]
    categories: tuple[str, ...]
    data_from: date
    data_to: date
    frequency: Frequency
    data_life_days: int
    consent_start: datetime
    consent_expiry: datetime
    created_at: datetime
    version: int = 1
    supersedes: str | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body that is signed (see :func:`artefact_body`)."""
        return artefact_body(self)


@dataclass(frozen=True, slots=True)
class SignedArtefact:
    """An artefact with the consent manager's JWS and, optionally, the merchant's approval."""

    artefact: ConsentArtefact
    token: str
    hash: str
    merchant_signature: str | None = field(default=None)


def artefact_body(artefact: ConsentArtefact) -> dict[str, Any]:
    """The JSON body that is signed (before canonicalisation)."""
    return {
        "schema": SCHEMA,
        "consent_id": artefact.consent_id,
        "merchant_id": artefact.merchant_id,
        "data_provider": artefact.data_provider,
        "data_consumer": artefact.data_consumer,
        "purposes": [{"code": p, "dpv": PURPOSES[p].dpv_iri} for p in artefact.purposes],
        "categories": list(artefact.categories),
        "data_range": {"from": artefact.data_from.isoformat(), "to": artefact.data_to.isoformat()},
        "frequency": {"uses": artefact.frequency.uses, "per": artefact.frequency.unit},
        "data_life_days": artefact.data_life_days,
        "consent_start": format_time(artefact.consent_start),
        "consent_expiry": format_time(artefact.consent_expiry),
        "created_at": format_time(artefact.created_at),
        "version": artefact.version,
        "supersedes": artefact.supersedes,
    }


def _refuse(code: str, message: str) -> InvalidConsentRequest:
    return InvalidConsentRequest(message, code=code)


def _as_time(value: object, name: str, *, strict: bool) -> datetime:
    """An aware datetime from a ``datetime`` or an RFC 3339 string (exact form when strict)."""
    try:
        if isinstance(value, datetime):
            parsed = value
        elif strict:
            parsed = parse_time(value)
        elif isinstance(value, str):
            parsed = datetime.fromisoformat(value)
        else:
            raise ValueError(f"expected a time, got {type(value).__name__}")
    except ValueError as exc:
        raise _refuse("MALFORMED", f"{name}: {exc}") from exc
    if parsed.tzinfo is None:
        raise _refuse("MALFORMED", f"{name} must carry a UTC offset")
    return parsed.astimezone(UTC)


def _as_date(value: object, name: str) -> date:
    if type(value) is date:
        return value
    try:
        return parse_date(value)
    except ValueError as exc:
        raise _refuse("MALFORMED", f"{name}: {exc}") from exc


def _as_int(value: object, name: str, minimum: int) -> int:
    if type(value) is not int or not minimum <= value <= _MAX_INT:
        raise _refuse("MALFORMED", f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _as_codes(
    value: object, name: str, known: Mapping[str, object] | frozenset[str]
) -> tuple[str, ...]:
    code = "UNKNOWN_PURPOSE" if name == "purposes" else "UNKNOWN_CATEGORY"
    if not isinstance(value, list | tuple) or not value:
        raise _refuse("MALFORMED", f"{name} must be a non-empty list")
    if not all(isinstance(v, str) for v in value):
        raise _refuse("MALFORMED", f"{name} must be strings")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise _refuse(code, f"unknown {name}: {', '.join(unknown)}")
    if len(set(value)) != len(value):
        raise _refuse("MALFORMED", f"{name} must not repeat")
    return tuple(sorted(value))


def _as_id(value: object, name: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not is_valid_id(value):
        raise _refuse("INVALID_ID", f"{name} {value!r} is not a valid id")
    return cast(str, value)


_TERM_KEYS: Final = frozenset(
    {
        "consent_id",
        "merchant_id",
        "data_provider",
        "data_consumer",
        "purposes",
        "categories",
        "data_from",
        "data_to",
        "frequency",
        "data_life_days",
        "consent_start",
        "consent_expiry",
        "created_at",
        "version",
        "supersedes",
    }
)
_REQUIRED_TERMS: Final = _TERM_KEYS - {"created_at", "version", "supersedes"}


def parse_terms(
    data: Mapping[str, Any] | str | bytes, *, now: datetime | None = None
) -> ConsentArtefact:
    """Validate requested terms (a mapping or JSON text) into an artefact.

    Times may carry any UTC offset and are normalised to UTC; ``created_at``
    defaults to ``now`` and ``version`` to 1. The purpose caps in
    ``consent.PURPOSES`` bound ``consent_expiry - consent_start``.

    Parameters
    ----------
    data : Mapping | str | bytes
        The terms; keys as the :class:`ConsentArtefact` fields, ``frequency`` as
        ``{"uses": int, "per": "hour"|"day"|"month"|"year"}``.
    now : datetime | None, default current UTC time
        Used for ``created_at`` when absent.

    Raises
    ------
    InvalidConsentRequest
        ``MALFORMED_JSON``, ``MALFORMED``, ``INVALID_ID``, ``UNKNOWN_PURPOSE``,
        ``UNKNOWN_CATEGORY``, ``EXPIRY_BEFORE_START``, ``DURATION_OVER_CAP`` or
        ``RANGE_INVALID``.
    """
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise _refuse("MALFORMED_JSON", f"terms are not valid JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise _refuse("MALFORMED", "terms must be a JSON object")
    missing = sorted(_REQUIRED_TERMS - set(data))
    unknown = sorted(set(data) - _TERM_KEYS)
    if missing or unknown:
        raise _refuse("MALFORMED", f"missing fields {missing}, unknown fields {unknown}")
    freq = data["frequency"]
    if not isinstance(freq, Mapping) or set(freq) != {"uses", "per"}:
        raise _refuse("MALFORMED", 'frequency must be {"uses": int, "per": unit}')
    if freq["per"] not in FREQUENCY_UNITS:
        raise _refuse("MALFORMED", f"frequency per must be one of {FREQUENCY_UNITS}")
    created = data.get("created_at")
    artefact = ConsentArtefact(
        consent_id=cast(str, _as_id(data["consent_id"], "consent_id")),
        merchant_id=cast(str, _as_id(data["merchant_id"], "merchant_id")),
        data_provider=cast(str, _as_id(data["data_provider"], "data_provider")),
        data_consumer=cast(str, _as_id(data["data_consumer"], "data_consumer")),
        purposes=_as_codes(data["purposes"], "purposes", PURPOSES),
        categories=_as_codes(data["categories"], "categories", CATEGORIES),
        data_from=_as_date(data["data_from"], "data_from"),
        data_to=_as_date(data["data_to"], "data_to"),
        frequency=Frequency(_as_int(freq["uses"], "frequency uses", 1), freq["per"]),
        data_life_days=_as_int(data["data_life_days"], "data_life_days", 0),
        consent_start=_as_time(data["consent_start"], "consent_start", strict=False),
        consent_expiry=_as_time(data["consent_expiry"], "consent_expiry", strict=False),
        created_at=(
            _as_time(created, "created_at", strict=False)
            if created is not None
            else (now or datetime.now(UTC)).astimezone(UTC)
        ),
        version=_as_int(data.get("version", 1), "version", 1),
        supersedes=_as_id(data.get("supersedes"), "supersedes", optional=True),
    )
    check_terms(artefact)
    return artefact


def check_terms(artefact: ConsentArtefact) -> None:
    """Refuse terms that are inconsistent: window, range, purpose caps, version chain."""
    if artefact.consent_expiry <= artefact.consent_start:
        raise _refuse("EXPIRY_BEFORE_START", "consent_expiry must be after consent_start")
    if artefact.data_to < artefact.data_from:
        raise _refuse("RANGE_INVALID", "data_to must not be before data_from")
    for code in artefact.purposes:
        purpose = PURPOSES[code]
        latest = purpose.latest_expiry(artefact.consent_start)
        if artefact.consent_expiry > latest:
            raise _refuse(
                "DURATION_OVER_CAP",
                f"{code} consents may last at most {purpose.max_years} calendar year(s): "
                f"until {format_time(latest)}, not {format_time(artefact.consent_expiry)}",
            )
    if (artefact.version == 1) != (artefact.supersedes is None):
        raise _refuse("MALFORMED", "version 1 supersedes nothing; later versions name one")
    if artefact.supersedes == artefact.consent_id:
        raise _refuse("MALFORMED", "an artefact cannot supersede itself")


def _body_to_artefact(body: object) -> ConsentArtefact:
    """Strict inverse of :func:`artefact_body` (the signed bytes are already canonical)."""
    if not isinstance(body, dict) or body.get("schema") != SCHEMA:
        raise _refuse("MALFORMED", "not a fedgate consent artefact body")
    purposes = body.get("purposes")
    if not isinstance(purposes, list) or not all(
        isinstance(p, dict)
        and set(p) == {"code", "dpv"}
        and p["code"] in PURPOSES
        and p["dpv"] == PURPOSES[p["code"]].dpv_iri
        for p in purposes
    ):
        raise _refuse("MALFORMED", "purposes must be known codes with their DPV IRIs")
    data_range = body.get("data_range")
    if not isinstance(data_range, dict) or set(data_range) != {"from", "to"}:
        raise _refuse("MALFORMED", "data_range must be {from, to}")
    terms = {k: v for k, v in body.items() if k not in {"schema", "purposes", "data_range"}}
    terms.update(
        purposes=[p["code"] for p in purposes],
        data_from=data_range["from"],
        data_to=data_range["to"],
    )
    for name in ("consent_start", "consent_expiry", "created_at"):
        terms[name] = _as_time(body.get(name), name, strict=True)
    artefact = parse_terms(terms)
    if artefact_body(artefact) != body:
        raise _refuse("MALFORMED", "artefact body is not in normal form")
    return artefact


def artefact_hash(token: str) -> str:
    """Hex SHA-256 of a signed artefact's compact JWS (what manifests and decisions cite)."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def sign_artefact(artefact: ConsentArtefact, key: Ed25519PrivateKey) -> SignedArtefact:
    """Sign ``artefact`` with the consent manager's key."""
    check_terms(artefact)
    token = jws.serialize_compact(
        {"alg": ALGORITHM, "typ": ARTEFACT_TYPE},
        canonical_json(artefact_body(artefact)),
        OKPKey.import_key(key),
        registry=_REGISTRY,
    )
    return SignedArtefact(artefact=artefact, token=token, hash=artefact_hash(token))


def verify_artefact(token: str, key: Ed25519PublicKey) -> SignedArtefact:
    """Verify a consent manager JWS and parse its artefact.

    Raises
    ------
    InvalidConsentRequest
        ``SIGNATURE_INVALID`` for a forged, truncated or wrong-key token;
        ``MALFORMED`` for a verified token whose body is not an artefact.
    """
    obj = _verify_jws(token, key, ARTEFACT_TYPE, payload=None)
    try:
        body = parse_canonical(obj.payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refuse("MALFORMED", f"artefact body is not canonical JSON: {exc}") from exc
    return SignedArtefact(artefact=_body_to_artefact(body), token=token, hash=artefact_hash(token))


def read_artefact_unverified(token: str) -> SignedArtefact:
    """Parse a stored artefact token WITHOUT checking its signature.

    Only for reading the terms of an artefact this database already holds
    (lifecycle transitions, listings); every consent check verifies instead.
    """
    try:
        obj = jws.extract_compact(token.encode("ascii"), registry=_REGISTRY)
        body = parse_canonical(obj.payload)
    except (JoseError, ValueError, UnicodeError) as exc:
        raise _refuse("MALFORMED", f"stored artefact is unreadable: {exc}") from exc
    return SignedArtefact(artefact=_body_to_artefact(body), token=token, hash=artefact_hash(token))


def approve_artefact(artefact: ConsentArtefact, merchant_key: Ed25519PrivateKey) -> str:
    """The merchant's detached JWS over the artefact body (evidence of approval)."""
    token = jws.serialize_compact(
        {"alg": ALGORITHM, "typ": APPROVAL_TYPE},
        canonical_json(artefact_body(artefact)),
        OKPKey.import_key(merchant_key),
        registry=_REGISTRY,
    )
    return jws.detach_content(token)


def verify_approval(
    artefact: ConsentArtefact, signature: str, merchant_key: Ed25519PublicKey
) -> None:
    """Check a merchant's detached approval; raises ``SIGNATURE_INVALID`` when it fails."""
    _verify_jws(
        signature, merchant_key, APPROVAL_TYPE, payload=canonical_json(artefact_body(artefact))
    )


def _verify_jws(token: str, key: Ed25519PublicKey, typ: str, payload: bytes | None) -> Any:
    if not isinstance(token, str) or not token.isascii():
        raise _refuse("SIGNATURE_INVALID", "signature must be an ASCII compact JWS")
    try:
        obj = jws.deserialize_compact(
            token, OKPKey.import_key(key), registry=_REGISTRY, payload=payload
        )
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise _refuse("SIGNATURE_INVALID", f"signature does not verify: {exc}") from exc
    if obj.headers().get("typ") != typ:
        raise _refuse("SIGNATURE_INVALID", f"token is not of type {typ}")
    return obj
