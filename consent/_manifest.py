"""Signed cohort manifests: which merchants a node may read for one job round.

Wire format (what :func:`sign_manifest` returns and :func:`verify_manifest` reads)::

    <JWS compact serialisation, alg EdDSA (Ed25519)>   one ASCII line
    \\n<entry 0 line>                                    one line per entry, sorted by merchant id
    \\n<entry 1 line>
    ...

The JWS payload is the RFC 8785 canonical JSON of the manifest header: ``v``
(2), job, round, provider, consumer, purpose, categories, issued-at,
valid-until, the entry count and ``root``, the RFC 9162 Merkle root over the
entry lines (each line is a leaf). The signature therefore covers every entry
through the root, while the entries themselves travel unencoded beside the
JWS: base64-wrapping and double-hashing tens of megabytes for a
100,000-merchant cohort would cost more than everything else together.

The streamed form (:mod:`consent._stream`) signs the same header with ``v`` 3 and a
``chunk_size``, and sends the entry lines in chunks that each carry an inclusion proof
against ``root``; :func:`open_header` is the header check both forms share.

Each entry line is the canonical JSON array ``[merchant_id, consent_id,
artefact_hash, consent_start, consent_expiry, data_from, data_to, label,
data_life_days]``; see :mod:`consent._entries` for its exact grammar, which
the verifier enforces, so one entry has exactly one byte form.

Validity: ``valid_until - issued_at`` is at most :data:`MAX_MANIFEST_TTL`, on
both sides. A manifest never outlives a consent it lists: :func:`build_manifest`
sets ``valid_until`` to ``issued_at + ttl`` or to the earliest
``consent_expiry`` among its entries, whichever comes first. Every entry is
therefore in force for the manifest's whole stated window, and a node that
verifies it inside that window never finds a lapsed consent in it (it would
otherwise refuse the whole manifest mid-round, since consent expiry gets no
clock-skew allowance). The gateway sees the shortened window in
``manifest.valid_until`` before it sends anything; the entries are exactly the
ones it passed, so whatever it counts or charges for them stays true.
Leaving lapsing consents out instead would keep the round's full window but
change the cohort behind the back of a caller that has already charged
privacy budget and counted uses for it.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import OKPKey

from ledger import canonical_json, parse_canonical

from ._entries import (
    ManifestEntry,
    encode_entries,
    entry_line,
    leaf_hashes,
    merkle_root,
    parse_entries,
)
from ._entry_line import MAX_INT
from ._errors import InvalidConsentRequest, ManifestRejected
from ._jose import ALGORITHM, make_registry
from ._replay import ManifestReplayGuard
from ._vocab import CATEGORIES, PURPOSES, format_time, is_valid_id, parse_time

__all__ = [
    "DEFAULT_CLOCK_SKEW",
    "MAX_MANIFEST_TTL",
    "MANIFEST_TYPE",
    "ManifestEntry",
    "CohortManifest",
    "ManifestReplayGuard",
    "build_manifest",
    "sign_manifest",
    "verify_manifest",
    "merkle_root",
    "entry_line",
]

DEFAULT_CLOCK_SKEW = timedelta(seconds=60)
"""How far the node's clock may be from the gateway's before a manifest is refused.

Applied to ``issued_at`` (not-yet-valid) and ``valid_until`` (stale), and to the
start of each entry's consent window. Never to a consent's expiry: a consent
that has ended on the node's clock is refused however close it is.
"""

MAX_MANIFEST_TTL = timedelta(hours=24)
"""The longest validity window a manifest may have; manifests are short-lived."""

MANIFEST_TYPE = "fedgate-cohort-manifest+jws"
"""The JWS ``typ`` header; a token of any other type (a consent artefact, say) is refused."""

_VERSION = 2  # 2: positional entry lines with data_life_days (1 had keyed objects)
STREAM_VERSION = 3  # the streamed form of :mod:`consent._stream`: 2's header plus chunk_size
_HEADER_KEYS = frozenset(
    {
        "v",
        "job_id",
        "round",
        "data_provider",
        "data_consumer",
        "purpose",
        "categories",
        "issued_at",
        "valid_until",
        "count",
        "root",
    }
)

HEADER_KEYS = {_VERSION: _HEADER_KEYS, STREAM_VERSION: _HEADER_KEYS | {"chunk_size"}}

_REGISTRY = make_registry(max_payload_length=1 << 20)  # entries travel outside the JWS


@dataclass(frozen=True, slots=True, weakref_slot=True)
class CohortManifest:
    """What the gateway sends a node for one job round; see the module docstring."""

    job_id: str
    round: int  # >= 0 (0 may be a statistics/sketch round)
    data_provider: str  # the ISV id this manifest is for
    data_consumer: str
    purpose: str
    categories: tuple[str, ...]
    issued_at: datetime
    valid_until: datetime
    # A tuple, or (a node's streamed cohort) an :class:`consent.EntryTable` of columns.
    entries: Sequence[ManifestEntry]
    root: str  # hex Merkle root over the canonical entry lines (RFC 9162 hashing)


def _refuse_build(message: str, code: str = "MALFORMED") -> InvalidConsentRequest:
    return InvalidConsentRequest(f"cannot build manifest: {message}", code=code)


def build_manifest(
    *,
    job_id: str,
    round: int,
    data_provider: str,
    data_consumer: str,
    purpose: str,
    categories: Iterable[str],
    entries: Iterable[ManifestEntry],
    issued_at: datetime,
    ttl: timedelta,
) -> CohortManifest:
    """Assemble a cohort manifest: validate, sort entries by merchant, compute the root.

    Parameters
    ----------
    job_id, data_provider, data_consumer : str
        Ids (see :data:`consent.ID_PATTERN`).
    round : int
        Round number, ``>= 0``.
    purpose : str
        A purpose code from :data:`consent.PURPOSES`.
    categories : Iterable[str]
        Data categories from :data:`consent.CATEGORIES`; stored sorted.
    entries : Iterable[ManifestEntry]
        One per merchant; each consent window must contain ``issued_at``.
    issued_at : datetime
        Timezone-aware issue time (stored in UTC).
    ttl : timedelta
        Validity, ``0 < ttl <= MAX_MANIFEST_TTL``; ``valid_until = issued_at +
        ttl``, or the earliest ``consent_expiry`` of the entries when that is
        sooner (see the module docstring).

    Returns
    -------
    CohortManifest

    Raises
    ------
    InvalidConsentRequest
        ``MALFORMED`` for a bad header field, ``ENTRY_INVALID`` for a bad or
        duplicate entry, or one whose consent window does not cover ``issued_at``.
    """
    for name, value in (
        ("job_id", job_id),
        ("data_provider", data_provider),
        ("data_consumer", data_consumer),
    ):
        if not is_valid_id(value):
            raise _refuse_build(f"{name} {value!r} is not a valid id")
    if type(round) is not int or round < 0 or round > MAX_INT:
        raise _refuse_build(f"round must be a non-negative integer, got {round!r}")
    if purpose not in PURPOSES:
        raise _refuse_build(f"unknown purpose {purpose!r}")
    cats = list(categories)
    if not cats or len(set(cats)) != len(cats) or not set(cats) <= CATEGORIES:
        raise _refuse_build(f"categories must be distinct known codes, got {cats!r}")
    if not isinstance(issued_at, datetime) or issued_at.tzinfo is None:
        raise _refuse_build("issued_at must be a timezone-aware datetime")
    if not timedelta(0) < ttl <= MAX_MANIFEST_TTL:
        raise _refuse_build(f"ttl must be in (0, {MAX_MANIFEST_TTL}], got {ttl}")
    issued = issued_at.astimezone(UTC)
    try:
        listed = list(entries)
        ids = list(map(operator.attrgetter("merchant_id"), listed))
        # A cohort from the snapshot is already in order: check in one pass, sort otherwise.
        in_order = all(map(operator.lt, ids, ids[1:]))
        ordered = listed if in_order else sorted(listed, key=operator.attrgetter("merchant_id"))
    except (AttributeError, TypeError) as exc:
        raise _refuse_build(
            f"entries must be ManifestEntry values: {exc}", "ENTRY_INVALID"
        ) from exc
    lines = encode_entries(ordered, issued)
    valid_until = issued + ttl
    if ordered:  # encode_entries checked every expiry is an aware datetime after issued_at
        earliest = min(map(operator.attrgetter("consent_expiry"), ordered))
        valid_until = min(valid_until, earliest.astimezone(UTC))
    root = merkle_root(leaf_hashes(lines))
    manifest = CohortManifest(
        job_id=job_id,
        round=round,
        data_provider=data_provider,
        data_consumer=data_consumer,
        purpose=purpose,
        categories=tuple(sorted(cats)),
        issued_at=issued,
        valid_until=valid_until,
        entries=tuple(ordered),
        root=root.hex(),
    )
    _remember(manifest, lines)
    return manifest


# Canonical entry lines of manifests that build_manifest returned, by object
# identity, so signing one does not encode 10^5 entries a second time. Both
# types are frozen, so cached lines cannot go stale; the weak reference drops
# the lines with the manifest.
_ENCODED: dict[int, tuple[weakref.ref[CohortManifest], list[bytes]]] = {}


def _remember(manifest: CohortManifest, lines: list[bytes]) -> None:
    key = id(manifest)
    _ENCODED[key] = (weakref.ref(manifest, lambda _: _ENCODED.pop(key, None)), lines)


def _encoded(manifest: CohortManifest) -> list[bytes] | None:
    cached = _ENCODED.get(id(manifest))
    if cached is None or cached[0]() is not manifest:
        return None
    return cached[1]


def header_fields(manifest: CohortManifest, *, count: int | None = None) -> dict[str, Any]:
    """The signed header of ``manifest`` (version 2); ``count`` overrides ``len(entries)``."""
    return {
        "v": _VERSION,
        "job_id": manifest.job_id,
        "round": manifest.round,
        "data_provider": manifest.data_provider,
        "data_consumer": manifest.data_consumer,
        "purpose": manifest.purpose,
        "categories": list(manifest.categories),
        "issued_at": format_time(manifest.issued_at),
        "valid_until": format_time(manifest.valid_until),
        "count": len(manifest.entries) if count is None else count,
        "root": manifest.root,
    }


def sign_header(header: dict[str, Any], key: Ed25519PrivateKey) -> bytes:
    """The JWS compact serialisation (ASCII) of a manifest header, signed with the gateway key."""
    return jws.serialize_compact(
        {"alg": ALGORITHM, "typ": MANIFEST_TYPE},
        canonical_json(header),
        OKPKey.import_key(key),
        registry=_REGISTRY,
    ).encode("ascii")


def sign_manifest(manifest: CohortManifest, key: Ed25519PrivateKey) -> bytes:
    """Sign ``manifest`` with the gateway key; see the module docstring for the bytes.

    For a manifest that :func:`build_manifest` returned, the entry lines and
    root it computed are reused; any other manifest has its entries encoded
    and validated and its root recomputed first, so a hand-built manifest
    whose root does not match its entries is never signed.

    Raises
    ------
    InvalidConsentRequest
        ``ENTRY_INVALID`` for a malformed entry, ``ROOT_MISMATCH`` when
        ``manifest.root`` is not the root of ``manifest.entries``, ``MALFORMED``
        for a validity window longer than :data:`MAX_MANIFEST_TTL`.
    """
    if not timedelta(0) < manifest.valid_until - manifest.issued_at <= MAX_MANIFEST_TTL:
        raise _refuse_build(f"validity window must be in (0, {MAX_MANIFEST_TTL}]")
    lines = _encoded(manifest)
    if lines is None:  # not from build_manifest: encode, validate and re-derive the root
        lines = encode_entries(manifest.entries)
        root = merkle_root(leaf_hashes(lines))
    else:
        root = bytes.fromhex(manifest.root)
    if root.hex() != manifest.root:
        raise _refuse_build(
            f"root {manifest.root} does not match entries (computed {root.hex()})",
            "ROOT_MISMATCH",
        )
    return b"\n".join([sign_header(header_fields(manifest), key), *lines])


def _reject(code: str, message: str) -> ManifestRejected:
    return ManifestRejected(message, code=code)


def _parse_header(payload: bytes, version: int) -> dict[str, Any]:
    try:
        header = parse_canonical(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _reject("MALFORMED", f"manifest header is not canonical JSON: {exc}") from exc
    if not isinstance(header, dict) or "v" not in header:
        raise _reject("MALFORMED", "manifest header has missing or unknown fields")
    if header["v"] != version:
        # A whole manifest (2) where a streamed one (3) is expected, or the other way round.
        raise _reject("MALFORMED", f"manifest version {header['v']!r}, expected {version}")
    if set(header) != HEADER_KEYS[version]:
        raise _reject("MALFORMED", "manifest header has missing or unknown fields")
    for name in ("job_id", "data_provider", "data_consumer"):
        if not is_valid_id(header[name]):
            raise _reject("MALFORMED", f"{name} is not a valid id")
    for name in HEADER_KEYS[version] & {"round", "count", "chunk_size"}:
        if type(header[name]) is not int or header[name] < 0:
            raise _reject("MALFORMED", f"{name} must be a non-negative integer")
    if header["purpose"] not in PURPOSES:
        raise _reject("MALFORMED", f"unknown purpose {header['purpose']!r}")
    cats = header["categories"]
    if (
        not isinstance(cats, list)
        or not cats
        or not all(isinstance(c, str) and c in CATEGORIES for c in cats)
        or cats != sorted(set(cats))
    ):
        raise _reject("MALFORMED", "categories must be a sorted list of distinct known codes")
    if not isinstance(header["root"], str) or not _is_hex64(header["root"]):
        raise _reject("MALFORMED", "root must be 64 lowercase hex digits")
    try:
        header["issued_at"] = parse_time(header["issued_at"])
        header["valid_until"] = parse_time(header["valid_until"])
    except ValueError as exc:
        raise _reject("MALFORMED", str(exc)) from exc
    if header["valid_until"] <= header["issued_at"]:
        raise _reject("MALFORMED", "valid_until must be after issued_at")
    if header["valid_until"] - header["issued_at"] > MAX_MANIFEST_TTL:
        # The gateway never issues one; a longer window would let a leaked or
        # stale manifest be used long after the cohort check that produced it.
        raise _reject("MALFORMED", f"validity window exceeds {MAX_MANIFEST_TTL}")
    return header


def _is_hex64(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def verify_manifest(
    token: bytes,
    *,
    gateway_key: Ed25519PublicKey,
    data_provider: str,
    now: datetime,
    replay_guard: ManifestReplayGuard,
    max_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> CohortManifest:
    """Verify a signed manifest on the node before any row is read.

    Checks, in order: the EdDSA signature and token type, the header's form
    (validity window at most :data:`MAX_MANIFEST_TTL`), that it is addressed
    to ``data_provider``, the validity window against ``now`` with
    ``max_skew`` allowance, the entry count and Merkle root, each entry's
    form, order (no duplicate merchant) and consent window
    (``consent_start - max_skew <= now < consent_expiry``), and finally the
    replay guard (no round below the job's highest, no other payload for a
    round already accepted), which records the manifest only once everything
    else passed.

    Parameters
    ----------
    token : bytes
        What :func:`sign_manifest` produced.
    gateway_key : Ed25519PublicKey
        The gateway's manifest-signing public key.
    data_provider : str
        This node's ISV id.
    now : datetime
        The node's clock, timezone-aware.
    replay_guard : ManifestReplayGuard
        The node's memory of accepted manifests.
    max_skew : timedelta, default ``DEFAULT_CLOCK_SKEW`` (60 s)
        Allowed clock difference between gateway and node.

    Returns
    -------
    CohortManifest
        The verified manifest.

    Raises
    ------
    ManifestRejected
        With ``code`` ``SIGNATURE_INVALID``, ``MALFORMED``, ``WRONG_PROVIDER``,
        ``NOT_YET_VALID``, ``EXPIRED``, ``ROOT_MISMATCH``, ``ENTRY_INVALID``,
        ``STALE_ROUND`` or ``REPLAYED``.
    """
    if not isinstance(token, bytes | bytearray | memoryview):
        raise _reject("MALFORMED", "manifest token must be bytes")
    data = bytes(token)
    jws_part, _, rest = data.partition(b"\n")
    payload, header = open_header(
        jws_part,
        gateway_key=gateway_key,
        data_provider=data_provider,
        now=now,
        max_skew=max_skew,
        version=_VERSION,
    )
    lines = rest.split(b"\n") if rest else []
    if len(lines) != header["count"] or (header["count"] == 0 and b"\n" in data):
        raise _reject(
            "ROOT_MISMATCH", f"manifest declares {header['count']} entries, carries {len(lines)}"
        )
    root = merkle_root(leaf_hashes(lines))
    if root.hex() != header["root"]:
        raise _reject(
            "ROOT_MISMATCH", f"signed root {header['root']} != computed root {root.hex()}"
        )
    entries = parse_entries(rest, header["count"], now, max_skew)
    replay_guard.check_and_record(header["job_id"], header["round"], sha256(payload).hexdigest())
    return manifest_of(header, entries)


def manifest_of(header: dict[str, Any], entries: tuple[ManifestEntry, ...]) -> CohortManifest:
    """The :class:`CohortManifest` of a verified header (from :func:`open_header`) and entries."""
    return CohortManifest(
        job_id=header["job_id"],
        round=header["round"],
        data_provider=header["data_provider"],
        data_consumer=header["data_consumer"],
        purpose=header["purpose"],
        categories=tuple(header["categories"]),
        issued_at=header["issued_at"],
        valid_until=header["valid_until"],
        entries=entries,
        root=header["root"],
    )


def open_header(
    jws_part: bytes,
    *,
    gateway_key: Ed25519PublicKey,
    data_provider: str,
    now: datetime,
    max_skew: timedelta,
    version: int,
) -> tuple[bytes, dict[str, Any]]:
    """Verify a manifest's signed header: signature, type, form, addressee, validity window.

    The part of :func:`verify_manifest` that does not look at entries, shared
    with the streamed form (:mod:`consent._stream`), whose header is version 3.

    Returns
    -------
    tuple[bytes, dict]
        The signed JWS payload (its SHA-256 is what the replay guard records)
        and the parsed header, times as aware datetimes.

    Raises
    ------
    ManifestRejected
        ``SIGNATURE_INVALID``, ``MALFORMED``, ``WRONG_PROVIDER``,
        ``NOT_YET_VALID`` or ``EXPIRED``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if max_skew < timedelta(0):
        raise ValueError("max_skew must not be negative")
    try:
        obj = jws.deserialize_compact(jws_part, OKPKey.import_key(gateway_key), registry=_REGISTRY)
    except BadSignatureError as exc:
        raise _reject("SIGNATURE_INVALID", "manifest signature does not verify") from exc
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        # A truncated or mangled JWS, or another alg, is as untrustworthy as a forged one.
        raise _reject("SIGNATURE_INVALID", f"manifest JWS unreadable: {exc}") from exc
    if obj.headers().get("typ") != MANIFEST_TYPE:
        raise _reject("MALFORMED", "token is not a cohort manifest")
    header = _parse_header(obj.payload, version)
    if header["data_provider"] != data_provider:
        raise _reject(
            "WRONG_PROVIDER",
            f"manifest is for {header['data_provider']!r}, this node is {data_provider!r}",
        )
    if header["issued_at"] > now + max_skew:
        raise _reject(
            "NOT_YET_VALID",
            f"manifest issued at {header['issued_at']}, now {now} on this node's clock "
            f"(allowance {max_skew}): is this node's clock behind?",
        )
    if now > header["valid_until"] + max_skew:
        raise _reject(
            "EXPIRED",
            f"manifest valid until {header['valid_until']}, now {now} on this node's clock "
            f"(allowance {max_skew}): is this node's clock ahead?",
        )
    return obj.payload, header
