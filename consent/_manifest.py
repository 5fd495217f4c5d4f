"""Signed cohort manifests: which merchants a node may read for one job round.

Wire format (what :func:`sign_manifest` returns and :func:`verify_manifest` reads)::

    <JWS compact serialisation, Ed25519>            one ASCII line
    \\n<entry 0 canonical JSON>                      one line per entry, sorted by merchant id
    \\n<entry 1 canonical JSON>
    ...

The JWS payload is the RFC 8785 canonical JSON of the manifest header: job,
round, provider, consumer, purpose, categories, issued-at, valid-until, the
entry count and ``root``, the RFC 9162 Merkle root over the entry lines (each
line is a leaf). The signature therefore covers every entry through the root,
while the entries themselves travel unencoded beside the JWS: base64-wrapping
and double-hashing tens of megabytes for a 100,000-merchant cohort would cost
more than everything else together.

Entry lines are RFC 8785 canonical JSON objects with the keys ``artefact_hash``,
``consent_expiry``, ``consent_id``, ``consent_start``, ``data_from``,
``data_to``, ``label`` and ``merchant_id``. Because ids, hashes, times and
dates are restricted to characters that JSON never escapes, a format string
produces exactly the RFC 8785 bytes (a test pins this against ``rfc8785``);
the verifier re-encodes every parsed entry and refuses any line that differs,
so one entry has exactly one byte form.
"""

from __future__ import annotations

import gc
import json
import operator
import os
import re
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from hashlib import sha256
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry

from ledger import EMPTY_ROOT, canonical_json, parse_canonical

from ._errors import ConsentIntegrityError, InvalidConsentRequest, ManifestRejected
from ._vocab import CATEGORIES, ID_PATTERN, PURPOSES, format_time, is_valid_id, parse_time

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
"""The longest validity window :func:`build_manifest` accepts; manifests are short-lived."""

MANIFEST_TYPE = "fedgate-cohort-manifest+jws"
"""The JWS ``typ`` header; a token of any other type (a consent artefact, say) is refused."""

ALGORITHM = "Ed25519"
"""RFC 9864's fully specified name for EdDSA over Ed25519 (joserfc deprecates bare ``EdDSA``)."""

_VERSION = 1
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_LABEL = 2**53 - 1  # the largest integer RFC 8785 carries exactly
_ENTRY_KEYS = frozenset(
    {
        "artefact_hash",
        "consent_expiry",
        "consent_id",
        "consent_start",
        "data_from",
        "data_to",
        "label",
        "merchant_id",
    }
)
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


class _Registry(JWSRegistry):
    """Ed25519 only, and room for a large header payload; entries are outside the JWS."""

    max_payload_length = 1 << 20


_REGISTRY = _Registry(algorithms=[ALGORITHM])


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One merchant a node may read in this round, with the consent that allows it."""

    merchant_id: str
    consent_id: str
    artefact_hash: str  # hex SHA-256 of the signed consent artefact
    consent_start: datetime  # tz-aware UTC; the node re-checks the window before reading
    consent_expiry: datetime
    data_from: date  # the data range the consent lets this use read
    data_to: date
    label: int | None = None  # optional training label (e.g. default_12m) from the platform


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
    entries: tuple[ManifestEntry, ...]
    root: str  # hex Merkle root over the canonical entry lines (RFC 9162 hashing)


def entry_line(entry: ManifestEntry) -> bytes:
    """The canonical (RFC 8785) bytes of one entry: a leaf of the manifest's Merkle tree.

    Raises ``ValueError`` when the entry is not well formed (see :func:`_entry_problem`).
    """
    try:
        if not all(isinstance(v, str) for v in (entry.merchant_id, entry.consent_id)):
            raise TypeError("merchant_id and consent_id must be strings")
        if not isinstance(entry.artefact_hash, str):
            raise TypeError("artefact_hash must be a string")
        if type(entry.label) is bool:  # an int to Python, not a label
            raise ValueError("label must be an integer or None, not a bool")
        label = "null" if entry.label is None else str(operator.index(entry.label))
        line = (
            f'{{"artefact_hash":"{entry.artefact_hash}",'
            f'"consent_expiry":"{format_time(entry.consent_expiry)}",'
            f'"consent_id":"{entry.consent_id}",'
            f'"consent_start":"{format_time(entry.consent_start)}",'
            f'"data_from":"{entry.data_from.isoformat()}",'
            f'"data_to":"{entry.data_to.isoformat()}",'
            f'"label":{label},'
            f'"merchant_id":"{entry.merchant_id}"}}'
        ).encode("ascii")
    except (AttributeError, TypeError, ValueError, OverflowError, UnicodeEncodeError) as exc:
        raise ValueError(f"entry fields have the wrong types: {exc}") from exc
    if _ENTRY_LINE.fullmatch(line) is None:
        raise ValueError(
            "ids must match ID_PATTERN, artefact_hash be 64 lowercase hex digits, times be "
            "timezone-aware datetimes, data_from/data_to dates and label an integer or None"
        )
    problem = _entry_problem(entry)
    if problem is not None:
        raise ValueError(problem)
    return line


_ID = r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}"  # consent.ID_PATTERN, needs no JSON escaping
# [0-9] rather than \\d: the same on ASCII text, and fewer regex steps per character.
_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z"
_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_ENTRY_GRAMMAR = (
    rf'\{{"artefact_hash":"([0-9a-f]{{64}})",'
    rf'"consent_expiry":"({_TIME})",'
    rf'"consent_id":"({_ID})",'
    rf'"consent_start":"({_TIME})",'
    rf'"data_from":"({_DATE})",'
    rf'"data_to":"({_DATE})",'
    rf'"label":(null|0|-?[1-9][0-9]{{0,15}}),'
    rf'"merchant_id":"({_ID})"\}}'
)
_ENTRY_LINE = re.compile(_ENTRY_GRAMMAR.encode("ascii"))
_ENTRY_TEXT = re.compile(_ENTRY_GRAMMAR)
"""The whole grammar of a canonical entry line.

Every field is fixed-width or drawn from an alphabet JSON never escapes, keys
are in RFC 8785 order and there is no whitespace, so a line matches exactly
when it is the canonical form of some entry. Matching it is the strict parser:
one C call per entry instead of a JSON parse and a re-encode.
"""

_LEAF = b"\x00"  # RFC 9162 prefixes, the same as ledger's hasher (a test pins it)
_NODE = b"\x01"


def _leaf_hashes(lines: Sequence[bytes]) -> list[bytes]:
    return [sha256(_LEAF + line).digest() for line in lines]


def merkle_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """RFC 9162 Merkle tree hash over leaf hashes, level by level.

    Pairing neighbours and carrying an odd last node up unchanged gives the
    same root as the RFC's recursive split at the largest power of two.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        odd = level[-1] if len(level) % 2 else None
        pairs = zip(level[::2], level[1::2], strict=False)  # an odd last node has no pair
        level = [sha256(_NODE + left + right).digest() for left, right in pairs]
        if odd is not None:
            level.append(odd)
    return level[0]


def _entry_problem(entry: ManifestEntry) -> str | None:
    """What is wrong with an entry whose fields have the right form, or ``None``."""
    if entry.consent_expiry <= entry.consent_start:
        return "consent_expiry must be after consent_start"
    if entry.data_to < entry.data_from:
        return "data_to must not be before data_from"
    if entry.label is not None and not -_MAX_LABEL <= entry.label <= _MAX_LABEL:
        return "label must be within ±(2**53 - 1)"
    return None


def _refuse_build(message: str, code: str = "MALFORMED") -> InvalidConsentRequest:
    return InvalidConsentRequest(f"cannot build manifest: {message}", code=code)


# --- encoding a whole cohort, column by column ------------------------------------
#
# entry_line() is the definition of an entry's bytes and of a well-formed entry;
# _encode_entries() produces the same bytes for 10^5 entries without a Python
# loop per entry: each field becomes a column, each column is checked with one
# C-level pass (map/all/min/max, numpy, one regex call per id column) and the
# lines come from one f-string per entry. Whenever a column check fails, the
# entries are walked again one by one with entry_line(), which decides: it
# names the first bad entry, or returns the lines. The column path therefore
# only ever accepts what entry_line() accepts, with the same bytes (a property
# test pins both), and never words a refusal itself.

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_MIN_US = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _US
_MAX_US = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _US
_DATE_TEXT = re.compile(_DATE)


class _BadColumn(Exception):
    """A column check failed; the per-entry walk finds and words the first bad entry."""


def _every(pattern: re.Pattern[str]) -> re.Pattern[str]:
    return re.compile(rf"(?:{pattern.pattern}\n)*{pattern.pattern}")


_EVERY_ID = _every(ID_PATTERN)
_EVERY_HEX64 = _every(_HEX64)


def _check_every(values: Sequence[object], every: re.Pattern[str]) -> None:
    """Each value is a string matching the item pattern of ``every`` (see :func:`_every`).

    One regex call over the values joined by newlines instead of one call per
    value; the item patterns exclude newlines, so counting them proves that
    the match saw exactly one item per value.
    """
    if not values:
        return
    try:
        joined = "\n".join(values)  # type: ignore[arg-type]
    except TypeError as exc:
        raise _BadColumn from exc
    if joined.count("\n") != len(values) - 1 or every.fullmatch(joined) is None:
        raise _BadColumn


def _utc_micros(times: Sequence[object]) -> npt.NDArray[np.int64]:
    """Exact UTC microseconds since the epoch of timezone-aware datetimes."""
    if not all(map(isinstance, times, repeat(datetime))):
        raise _BadColumn
    try:  # aware - aware is exact (no float); a naive time raises TypeError here
        deltas = map(operator.sub, times, repeat(_EPOCH))
        micros = np.fromiter(map(operator.floordiv, deltas, repeat(_US)), np.int64, len(times))
    except (TypeError, ValueError, OverflowError) as exc:
        raise _BadColumn from exc
    # An aware time whose UTC value leaves years 1-9999 has no 4-digit form.
    if micros.size and (micros.min() < _MIN_US or micros.max() > _MAX_US):
        raise _BadColumn
    return micros


def _time_texts(micros: npt.NDArray[np.int64]) -> list[str]:
    """``format_time`` of each UTC microsecond count, in one numpy call."""
    text = np.datetime_as_string(micros.astype("datetime64[us]"), unit="us")
    texts: list[str] = np.strings.add(text, "Z").tolist()
    return texts


def _date_texts(days: Sequence[object]) -> list[str]:
    """ISO form of each date; a cohort shares a few data ranges, so each is formatted once."""
    try:
        distinct = set(days)
    except TypeError as exc:
        raise _BadColumn from exc
    text: dict[object, str] = {}
    for day in distinct:
        # A datetime is a date too, but its isoformat is not a date (entry_line refuses it).
        if not isinstance(day, date) or isinstance(day, datetime):
            raise _BadColumn
        text[day] = day.isoformat()
        if _DATE_TEXT.fullmatch(text[day]) is None:
            raise _BadColumn
    return list(map(text.__getitem__, days))


def _label_texts(labels: Sequence[int | None]) -> list[str]:
    """JSON form of each label (``null`` or an integer within ±(2**53 - 1))."""
    # Only plain ints and None: True == 1 and 1.0 == 1, so an equality-keyed
    # cache over other types could give a bool or float the text of an int.
    if not set(map(type, labels)) <= {int, type(None)}:
        raise _BadColumn
    numbers = [label for label in set(labels) if label is not None]
    if numbers and (min(numbers) < -_MAX_LABEL or max(numbers) > _MAX_LABEL):
        raise _BadColumn
    text = {label: "null" if label is None else str(label) for label in set(labels)}
    return list(map(text.__getitem__, labels))


def _encode_columns(entries: Sequence[ManifestEntry], issued: datetime | None) -> list[bytes]:
    """The lines of ``entries`` (already sorted) or :class:`_BadColumn`; see above."""
    get = operator.attrgetter
    try:
        merchants = list(map(get("merchant_id"), entries))
        consents = list(map(get("consent_id"), entries))
        hashes = list(map(get("artefact_hash"), entries))
        starts = list(map(get("consent_start"), entries))
        expiries = list(map(get("consent_expiry"), entries))
        froms = list(map(get("data_from"), entries))
        tos = list(map(get("data_to"), entries))
        labels = list(map(get("label"), entries))
    except AttributeError as exc:
        raise _BadColumn from exc
    for column, pattern in ((merchants, _EVERY_ID), (consents, _EVERY_ID), (hashes, _EVERY_HEX64)):
        _check_every(column, pattern)
    # Strictly increasing merchant ids: sorted, so this refuses exactly the duplicates.
    if not all(map(operator.lt, merchants, merchants[1:])):
        raise _BadColumn
    start_us, expiry_us = _utc_micros(starts), _utc_micros(expiries)
    if not (start_us < expiry_us).all():
        raise _BadColumn
    if issued is not None and entries:
        at = (issued - _EPOCH) // _US
        if not (start_us.max() <= at < expiry_us.min()):
            raise _BadColumn
    from_texts, to_texts = _date_texts(froms), _date_texts(tos)
    if not all(map(operator.le, froms, tos)):
        raise _BadColumn
    return [
        f'{{"artefact_hash":"{a_hash}","consent_expiry":"{expiry}","consent_id":"{consent}",'
        f'"consent_start":"{start}","data_from":"{lo}","data_to":"{hi}","label":{label},'
        f'"merchant_id":"{merchant}"}}'.encode("ascii")
        for a_hash, expiry, consent, start, lo, hi, label, merchant in zip(
            hashes,
            _time_texts(expiry_us),
            consents,
            _time_texts(start_us),
            from_texts,
            to_texts,
            _label_texts(labels),
            merchants,
            strict=True,
        )
    ]


def _encode_one_by_one(entries: Sequence[ManifestEntry], issued: datetime | None) -> list[bytes]:
    """The per-entry definition behind :func:`_encode_entries`; raises the precise refusal."""
    lines: list[bytes] = []
    previous = ""
    for index, entry in enumerate(entries):
        try:
            lines.append(entry_line(entry))
        except ValueError as exc:
            raise _refuse_build(f"entry {index}: {exc}", "ENTRY_INVALID") from exc
        if entry.merchant_id <= previous:
            raise _refuse_build(
                f"entry {index}: merchant {entry.merchant_id!r} duplicated or out of order",
                "ENTRY_INVALID",
            )
        previous = entry.merchant_id
    if issued is not None:
        for entry in entries:
            if not entry.consent_start <= issued < entry.consent_expiry:
                raise _refuse_build(
                    f"consent {entry.consent_id!r} is not in force at issued_at", "ENTRY_INVALID"
                )
    return lines


def _encode_entries(
    entries: Sequence[ManifestEntry], issued: datetime | None = None
) -> list[bytes]:
    """Canonical lines of entries sorted by merchant id; refuses bad or duplicate entries.

    With ``issued``, also refuses an entry whose consent window does not contain it.
    """
    try:
        return _encode_columns(entries, issued)
    except _BadColumn:
        # The definition decides: it names the first bad entry, or accepts what the
        # column checks only did not cover (an integer label of another int type).
        return _encode_one_by_one(entries, issued)


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
        Validity, ``0 < ttl <= MAX_MANIFEST_TTL``; ``valid_until = issued_at + ttl``.

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
    if type(round) is not int or round < 0 or round > _MAX_LABEL:
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
        ordered = sorted(entries, key=operator.attrgetter("merchant_id"))
    except (AttributeError, TypeError) as exc:
        raise _refuse_build(
            f"entries must be ManifestEntry values: {exc}", "ENTRY_INVALID"
        ) from exc
    lines = _encode_entries(ordered, issued)
    root = merkle_root(_leaf_hashes(lines))
    manifest = CohortManifest(
        job_id=job_id,
        round=round,
        data_provider=data_provider,
        data_consumer=data_consumer,
        purpose=purpose,
        categories=tuple(sorted(cats)),
        issued_at=issued,
        valid_until=issued + ttl,
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


def _header(manifest: CohortManifest) -> dict[str, Any]:
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
        "count": len(manifest.entries),
        "root": manifest.root,
    }


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
        ``manifest.root`` is not the root of ``manifest.entries``.
    """
    lines = _encoded(manifest)
    if lines is None:  # not from build_manifest: encode, validate and re-derive the root
        lines = _encode_entries(manifest.entries)
        root = merkle_root(_leaf_hashes(lines))
    else:
        root = bytes.fromhex(manifest.root)
    if root.hex() != manifest.root:
        raise _refuse_build(
            f"root {manifest.root} does not match entries (computed {root.hex()})",
            "ROOT_MISMATCH",
        )
    token = jws.serialize_compact(
        {"alg": ALGORITHM, "typ": MANIFEST_TYPE},
        canonical_json(_header(manifest)),
        OKPKey.import_key(key),
        registry=_REGISTRY,
    ).encode("ascii")
    return b"\n".join([token, *lines])


class ManifestReplayGuard:
    """Node-side memory of accepted ``(job_id, round) -> root``.

    The same job and round arriving again with the same root is a harmless
    re-delivery and is accepted; with a different root it is refused as
    ``REPLAYED``. With ``path`` the memory survives restarts: each accepted
    pair is appended as one JSON line and fsynced before the manifest is used.

    Parameters
    ----------
    path : Path | None, default None
        File to persist to (created if missing); ``None`` keeps memory only.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._seen: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()
        if path is not None and path.exists():
            for number, raw in enumerate(path.read_text("utf-8").splitlines(), 1):
                try:
                    job_id, round_, root = json.loads(raw)
                    if not (isinstance(job_id, str) and type(round_) is int):
                        raise ValueError("bad record")
                    if not (isinstance(root, str) and _HEX64.fullmatch(root)):
                        raise ValueError("bad root")
                except ValueError as exc:
                    raise ConsentIntegrityError(
                        f"replay guard file {path} line {number} is corrupt: {exc}"
                    ) from exc
                self._seen[(job_id, round_)] = root

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_record(self, job_id: str, round: int, root: str) -> None:
        """Record ``(job_id, round) -> root``, refusing a different root for a seen pair.

        Raises
        ------
        ManifestRejected
            ``REPLAYED`` when the pair was accepted before with another root.
        """
        with self._lock:
            seen = self._seen.get((job_id, round))
            if seen == root:
                return
            if seen is not None:
                raise ManifestRejected(
                    f"job {job_id!r} round {round} was already accepted with root {seen}; "
                    f"refusing a different manifest (root {root})",
                    code="REPLAYED",
                )
            if self._path is not None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                with self._path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps([job_id, round, root]) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            self._seen[(job_id, round)] = root


def _reject(code: str, message: str) -> ManifestRejected:
    return ManifestRejected(message, code=code)


def _parse_header(payload: bytes) -> dict[str, Any]:
    try:
        header = parse_canonical(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _reject("MALFORMED", f"manifest header is not canonical JSON: {exc}") from exc
    if not isinstance(header, dict) or set(header) != _HEADER_KEYS:
        raise _reject("MALFORMED", "manifest header has missing or unknown fields")
    if header["v"] != _VERSION:
        raise _reject("MALFORMED", f"unsupported manifest version {header['v']!r}")
    for name in ("job_id", "data_provider", "data_consumer"):
        if not is_valid_id(header[name]):
            raise _reject("MALFORMED", f"{name} is not a valid id")
    for name in ("round", "count"):
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
    if not isinstance(header["root"], str) or _HEX64.fullmatch(header["root"]) is None:
        raise _reject("MALFORMED", "root must be 64 lowercase hex digits")
    try:
        header["issued_at"] = parse_time(header["issued_at"])
        header["valid_until"] = parse_time(header["valid_until"])
    except ValueError as exc:
        raise _reject("MALFORMED", str(exc)) from exc
    if header["valid_until"] <= header["issued_at"]:
        raise _reject("MALFORMED", "valid_until must be after issued_at")
    return header


_ENTRY_ROWS = re.compile(rf"^{_ENTRY_GRAMMAR}$", re.MULTILINE)
"""The entry grammar anchored to whole lines, for one ``findall`` over all entries.

Each match is one complete line, so as many matches as lines means every
line is a canonical entry.
"""


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a cohort's objects are built.

    Parsing 10^5 entries allocates some 10^6 objects, none in a reference
    cycle; left on, the collector runs hundreds of times over them (and over
    the caller's heap) for nothing, which costs a quarter of the parse. It is
    switched back on afterwards only if it was on before.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _BadEntries(Exception):
    """A whole-cohort check failed; the per-line walk finds and words the first bad entry."""


def _parse_columns(
    blob: bytes, count: int, now: datetime, max_skew: timedelta
) -> tuple[ManifestEntry, ...]:
    """:func:`_parse_entries` over columns, or :class:`_BadEntries`.

    One regex call parses every line; times and dates are parsed with C-level
    maps (dates once per distinct value: a cohort shares a few data ranges);
    each rule is one pass over a column (``all``/``min``/``max``); the entries
    are built with one ``map``. It accepts exactly what the per-line walk
    accepts, giving equal entries (a property test pins it); anything it
    refuses is walked line by line, and the walk words the refusal.
    """
    try:
        rows = _ENTRY_ROWS.findall(blob.decode("ascii"))
    except UnicodeDecodeError as exc:
        raise _BadEntries from exc
    if len(rows) != count:
        raise _BadEntries
    if not rows:
        return ()
    hashes, expiry_s, consents, start_s, from_s, to_s, label_s, merchants = zip(*rows, strict=True)
    try:  # the grammar fixes the shape; this refuses e.g. month 13 or 25 o'clock
        starts = list(map(datetime.fromisoformat, start_s))
        expiries = list(map(datetime.fromisoformat, expiry_s))
        days = {text: date.fromisoformat(text) for text in {*from_s, *to_s}}
    except ValueError as exc:
        raise _BadEntries from exc
    froms = list(map(days.__getitem__, from_s))
    tos = list(map(days.__getitem__, to_s))
    label_of = {text: None if text == "null" else int(text) for text in set(label_s)}
    numbers = [label for label in label_of.values() if label is not None]
    if (
        # strictly increasing merchant ids: sorted and no duplicate
        not all(map(operator.lt, merchants, merchants[1:]))
        or not all(map(operator.lt, starts, expiries))
        or not all(map(operator.le, froms, tos))
        or max(starts) > now + max_skew
        or min(expiries) <= now
        or (numbers and (min(numbers) < -_MAX_LABEL or max(numbers) > _MAX_LABEL))
    ):
        raise _BadEntries
    labels = map(label_of.__getitem__, label_s)
    return tuple(
        map(ManifestEntry, merchants, consents, hashes, starts, expiries, froms, tos, labels)
    )


def _parse_entries(
    blob: bytes, count: int, now: datetime, max_skew: timedelta
) -> tuple[ManifestEntry, ...]:
    """Parse, validate and window-check ``count`` entry lines (covered by the signed root)."""
    try:
        with _gc_paused():
            return _parse_columns(blob, count, now, max_skew)
    except _BadEntries:
        return tuple(_parse_one_by_one(blob, now, max_skew))  # names the first bad entry


def _parse_one_by_one(blob: bytes, now: datetime, max_skew: timedelta) -> list[ManifestEntry]:
    """The per-line definition behind :func:`_parse_entries`; raises the precise refusal."""
    try:
        lines = blob.decode("ascii").split("\n") if blob else []
    except UnicodeDecodeError as exc:
        raise _reject("ENTRY_INVALID", "entries must be ASCII") from exc
    entries: list[ManifestEntry] = []
    append = entries.append
    previous = ""
    match = _ENTRY_TEXT.fullmatch
    parse_time_ = datetime.fromisoformat
    days: dict[str, date] = {}  # a cohort's data ranges repeat; parse each day once
    latest_start = now + max_skew
    for index, line in enumerate(lines):
        found = match(line)
        if found is None:
            raise _reject("ENTRY_INVALID", f"entry {index} is not a canonical manifest entry")
        a_hash, expiry_s, consent_id, start_s, from_s, to_s, label_s, merchant = found.groups()
        try:
            start, expiry = parse_time_(start_s), parse_time_(expiry_s)
            lo = days.get(from_s)
            if lo is None:
                lo = days[from_s] = date.fromisoformat(from_s)
            hi = days.get(to_s)
            if hi is None:
                hi = days[to_s] = date.fromisoformat(to_s)
        except ValueError as exc:  # e.g. month 13: the right shape, not a real date
            raise _reject("ENTRY_INVALID", f"entry {index}: {exc}") from exc
        label = None if label_s == "null" else int(label_s)
        entry = ManifestEntry(merchant, consent_id, a_hash, start, expiry, lo, hi, label)
        # One combined test on the fast path; the slow path below says what failed.
        if (
            expiry <= start
            or hi < lo
            or merchant <= previous
            or start > latest_start
            or now >= expiry
            or (label is not None and not -_MAX_LABEL <= label <= _MAX_LABEL)
        ):
            problem = _entry_problem(entry)
            if problem is None and merchant <= previous:
                problem = f"merchant {merchant!r} duplicated or out of order"
            if problem is None:
                problem = f"consent {consent_id!r} is not in force at {format_time(now)}"
            raise _reject("ENTRY_INVALID", f"entry {index}: {problem}")
        previous = merchant
        append(entry)
    return entries


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

    Checks, in order: the Ed25519 signature and token type, the header's
    form, that it is addressed to ``data_provider``, the validity window
    against ``now`` with ``max_skew`` allowance, the entry count and Merkle
    root, each entry's form, order (no duplicate merchant) and consent window
    (``consent_start - max_skew <= now < consent_expiry``), and finally the
    replay guard, which records the manifest only once everything else passed.

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
        The node's memory of accepted (job, round) pairs.
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
        ``NOT_YET_VALID``, ``EXPIRED``, ``ROOT_MISMATCH``, ``ENTRY_INVALID`` or
        ``REPLAYED``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if max_skew < timedelta(0):
        raise ValueError("max_skew must not be negative")
    if not isinstance(token, bytes | bytearray | memoryview):
        raise _reject("MALFORMED", "manifest token must be bytes")
    data = bytes(token)
    jws_part, _, rest = data.partition(b"\n")
    try:
        obj = jws.deserialize_compact(jws_part, OKPKey.import_key(gateway_key), registry=_REGISTRY)
    except BadSignatureError as exc:
        raise _reject("SIGNATURE_INVALID", "manifest signature does not verify") from exc
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        # A truncated or mangled JWS is as untrustworthy as a forged one.
        raise _reject("SIGNATURE_INVALID", f"manifest JWS unreadable: {exc}") from exc
    if obj.headers().get("typ") != MANIFEST_TYPE:
        raise _reject("MALFORMED", "token is not a cohort manifest")
    header = _parse_header(obj.payload)
    if header["data_provider"] != data_provider:
        raise _reject(
            "WRONG_PROVIDER",
            f"manifest is for {header['data_provider']!r}, this node is {data_provider!r}",
        )
    if header["issued_at"] > now + max_skew:
        raise _reject("NOT_YET_VALID", f"manifest issued at {header['issued_at']}, now {now}")
    if now > header["valid_until"] + max_skew:
        raise _reject("EXPIRED", f"manifest valid until {header['valid_until']}, now {now}")
    lines = rest.split(b"\n") if rest else []
    if len(lines) != header["count"] or (header["count"] == 0 and b"\n" in data):
        raise _reject(
            "ROOT_MISMATCH", f"manifest declares {header['count']} entries, carries {len(lines)}"
        )
    root = merkle_root(_leaf_hashes(lines))
    if root.hex() != header["root"]:
        raise _reject(
            "ROOT_MISMATCH", f"signed root {header['root']} != computed root {root.hex()}"
        )
    entries = _parse_entries(rest, header["count"], now, max_skew)
    replay_guard.check_and_record(header["job_id"], header["round"], header["root"])
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
