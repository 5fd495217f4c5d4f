"""Cohort-manifest entries: one canonical line per entry, encoded and parsed in bulk.

An entry's line is the RFC 8785 canonical JSON of a positional array::

    ["<merchant_id>","<consent_id>","<artefact_hash>","<consent_start>",
     "<consent_expiry>","<data_from>","<data_to>",<label>,<data_life_days>]

(one line, no whitespace). Ids match :data:`consent.ID_PATTERN`, the hash is 64
lowercase hex digits, times are ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC), dates
``YYYY-MM-DD``, ``label`` an integer within ±(2**53 - 1) or ``null`` and
``data_life_days`` (how long data derived from the use may be kept) an integer
in [0, 2**53 - 1] or ``null``. None of these characters is ever escaped by
JSON, so a format string produces exactly the RFC 8785 bytes (a test pins this
against ``rfc8785``), and one regular expression is the whole grammar: a line
matches it exactly when it is the canonical form of some entry, so parsing is
strict (one entry has exactly one byte form). Positions instead of key names
make the line 180 bytes rather than 290, which is what parsing and hashing
10^5 of them cost.

:func:`entry_line` is the definition of an entry's bytes and of a well-formed
entry. The bulk paths produce or read the same bytes for 10^5 entries without
a Python loop per field: each field becomes a column, each column is checked
with one C-level pass (``map``/``all``/``set``, numpy tables, one regular
expression), and whenever a column check fails the entries are walked again
one by one, and that walk words the refusal. The bulk paths therefore accept
exactly what the walks accept, with the same bytes and values (property tests
pin both), and never word a refusal themselves.
"""

from __future__ import annotations

import gc
import operator
import re
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from hashlib import sha256
from itertools import repeat
from typing import Any

import numpy as np

from ledger import EMPTY_ROOT

from ._errors import InvalidConsentRequest, ManifestRejected
from ._vocab import format_time

__all__ = [
    "ManifestEntry",
    "entry_line",
    "merkle_root",
    "leaf_hashes",
    "encode_entries",
    "parse_entries",
]

MAX_INT = 2**53 - 1  # the largest integer RFC 8785 carries exactly


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
    data_life_days: int | None = None  # days derived data may be kept (the consent's term)


_FIELDS = tuple(f.name for f in fields(ManifestEntry))

_ID = r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}"  # consent.ID_PATTERN, needs no JSON escaping
# [0-9] rather than \d: the same on ASCII text, and fewer regex steps per character.
_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z"
_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_LABEL = r"null|0|-?[1-9][0-9]{0,15}"
_LIFE = r"null|0|[1-9][0-9]{0,15}"
_GRAMMAR = (
    rf'\["({_ID})","({_ID})","([0-9a-f]{{64}})","({_TIME})","({_TIME})",'
    rf'"({_DATE})","({_DATE})",({_LABEL}),({_LIFE})\]'
)
_LINE = re.compile(_GRAMMAR)
_LINES = re.compile(rf"^{_GRAMMAR}$", re.MULTILINE)
"""The grammar anchored to whole lines, for one ``findall`` over every entry.

Each match is one complete line (the grammar has no newline), so as many
matches as lines means every line is a canonical entry.
"""

_LEAF = b"\x00"  # RFC 9162 prefixes, the same as ledger's hasher (a test pins it)
_NODE = b"\x01"


def leaf_hashes(lines: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 leaf hash of each line."""
    return [sha256(_LEAF + line).digest() for line in lines]


def merkle_root(hashes: Sequence[bytes]) -> bytes:
    """RFC 9162 Merkle tree hash over leaf hashes, level by level.

    Pairing neighbours and carrying an odd last node up unchanged gives the
    same root as the RFC's recursive split at the largest power of two.
    """
    if not hashes:
        return EMPTY_ROOT
    level = list(hashes)
    while len(level) > 1:
        odd = level[-1] if len(level) % 2 else None
        pairs = zip(level[::2], level[1::2], strict=False)  # an odd last node has no pair
        level = [sha256(_NODE + left + right).digest() for left, right in pairs]
        if odd is not None:
            level.append(odd)
    return level[0]


def _int_text(value: object, name: str) -> str:
    """JSON text of an optional integer field; a bool is not an integer here."""
    if type(value) is bool:  # an int to Python, not a number in a manifest
        raise ValueError(f"{name} must be an integer or None, not a bool")
    return "null" if value is None else str(operator.index(value))  # type: ignore[arg-type]


def entry_line(entry: ManifestEntry) -> bytes:
    """The canonical (RFC 8785) bytes of one entry: a leaf of the manifest's Merkle tree.

    Raises ``ValueError`` when the entry is not well formed (see :func:`entry_problem`).
    """
    try:
        ids = (entry.merchant_id, entry.consent_id, entry.artefact_hash)
        if not all(type(v) is str for v in ids):
            raise TypeError("merchant_id, consent_id and artefact_hash must be strings")
        label = _int_text(entry.label, "label")
        life = _int_text(entry.data_life_days, "data_life_days")
        line = (
            f'["{entry.merchant_id}","{entry.consent_id}","{entry.artefact_hash}",'
            f'"{format_time(entry.consent_start)}","{format_time(entry.consent_expiry)}",'
            f'"{entry.data_from.isoformat()}","{entry.data_to.isoformat()}",{label},{life}]'
        ).encode("ascii")
    except (AttributeError, TypeError, ValueError, OverflowError, UnicodeEncodeError) as exc:
        raise ValueError(f"entry fields have the wrong types: {exc}") from exc
    if _LINE.fullmatch(line.decode("ascii")) is None:
        raise ValueError(
            "ids must match ID_PATTERN, artefact_hash be 64 lowercase hex digits, times be "
            "timezone-aware datetimes, data_from/data_to dates, label and data_life_days "
            "integers or None"
        )
    problem = entry_problem(entry)
    if problem is not None:
        raise ValueError(problem)
    return line


def entry_problem(entry: ManifestEntry) -> str | None:
    """What is wrong with an entry whose fields have the right form, or ``None``."""
    if entry.consent_expiry <= entry.consent_start:
        return "consent_expiry must be after consent_start"
    if entry.data_to < entry.data_from:
        return "data_to must not be before data_from"
    if entry.label is not None and not -MAX_INT <= entry.label <= MAX_INT:
        return "label must be within ±(2**53 - 1)"
    if entry.data_life_days is not None and not 0 <= entry.data_life_days <= MAX_INT:
        return "data_life_days must be within [0, 2**53 - 1]"
    return None


def _refuse_build(message: str) -> InvalidConsentRequest:
    return InvalidConsentRequest(f"cannot build manifest: {message}", code="ENTRY_INVALID")


def _reject(message: str) -> ManifestRejected:
    return ManifestRejected(message, code="ENTRY_INVALID")


# --- encoding a whole cohort, column by column ------------------------------------


class _BadColumn(Exception):
    """A column check failed; the per-entry walk finds and words the first bad entry."""


def _table(alphabet: bytes) -> np.ndarray[Any, np.dtype[np.bool_]]:
    table = np.zeros(256, np.bool_)
    table[list(alphabet)] = True
    return table


_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_ID_BYTE = _table(_ALNUM + b"._:@-")
_ID_FIRST = _table(_ALNUM)
_HEX_BYTE = _table(b"0123456789abcdef")
_DATE_TEXT = re.compile(_DATE)


def _check_ids(values: list[Any]) -> None:
    """Every value is a ``str`` matching ``ID_PATTERN``: a few numpy passes, no regex per id."""
    if not values:
        return
    if set(map(type, values)) != {str}:
        raise _BadColumn
    lengths = np.fromiter(map(len, values), np.int64, len(values))
    if lengths.min() < 1 or lengths.max() > 128:
        raise _BadColumn
    try:
        raw = np.frombuffer("".join(values).encode("ascii"), np.uint8)
    except UnicodeEncodeError as exc:
        raise _BadColumn from exc
    firsts = np.cumsum(lengths) - lengths
    if not (_ID_BYTE[raw].all() and _ID_FIRST[raw[firsts]].all()):
        raise _BadColumn


def _check_hashes(values: list[Any]) -> None:
    """Every value is a ``str`` of 64 lowercase hex digits."""
    if not values:
        return
    if set(map(type, values)) != {str} or set(map(len, values)) != {64}:
        raise _BadColumn
    try:
        raw = np.frombuffer("".join(values).encode("ascii"), np.uint8)
    except UnicodeEncodeError as exc:
        raise _BadColumn from exc
    if not _HEX_BYTE[raw].all():
        raise _BadColumn


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_MIN_US = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _US
_MAX_US = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _US


def _utc_micros(times: list[Any]) -> np.ndarray[Any, np.dtype[np.int64]]:
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


def _time_texts(micros: np.ndarray[Any, np.dtype[np.int64]]) -> list[str]:
    """``format_time`` of each count without its ``Z``: one numpy call, not 10^5 isoformats.

    An aware datetime's ``isoformat`` costs a microsecond (it asks the tzinfo
    for the offset each time); numpy formats the integers at a fifth of that.
    """
    texts: list[str] = np.datetime_as_string(micros.astype("datetime64[us]"), unit="us").tolist()
    return texts


def _date_texts(days: list[Any]) -> list[str]:
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


def _int_texts(values: list[Any], low: int) -> list[str]:
    """JSON form of each optional integer (``null`` or an integer within [low, 2**53 - 1])."""
    # Only plain ints and None: True == 1 and 1.0 == 1, so an equality-keyed
    # cache over other types could give a bool or float the text of an int.
    if not set(map(type, values)) <= {int, type(None)}:  # every value, not the distinct ones
        raise _BadColumn
    distinct = set(values)
    numbers = [v for v in distinct if v is not None]
    if numbers and (min(numbers) < low or max(numbers) > MAX_INT):
        raise _BadColumn
    text = {v: "null" if v is None else str(v) for v in distinct}
    return list(map(text.__getitem__, values))


def _encode_columns(entries: Sequence[ManifestEntry], issued: datetime | None) -> list[bytes]:
    """The lines of ``entries`` (already sorted) or :class:`_BadColumn`; see the module doc."""
    try:
        columns = [list(map(operator.attrgetter(name), entries)) for name in _FIELDS]
    except AttributeError as exc:
        raise _BadColumn from exc
    merchants, consents, hashes, starts, expiries, froms, tos, labels, lives = columns
    _check_ids(merchants)
    _check_ids(consents)
    _check_hashes(hashes)
    # Strictly increasing merchant ids: sorted, so this refuses exactly the duplicates.
    if not all(map(operator.lt, merchants, merchants[1:])):
        raise _BadColumn
    start_us, expiry_us = _utc_micros(starts), _utc_micros(expiries)
    if not (start_us < expiry_us).all():
        raise _BadColumn
    if issued is not None and entries:
        at = (issued - _EPOCH) // _US
        if not start_us.max() <= at < expiry_us.min():
            raise _BadColumn
    from_texts, to_texts = _date_texts(froms), _date_texts(tos)
    if not all(map(operator.le, froms, tos)):
        raise _BadColumn
    return [
        f'["{m}","{c}","{h}","{s}Z","{e}Z","{lo}","{hi}",{lb},{lf}]'.encode("ascii")
        for m, c, h, s, e, lo, hi, lb, lf in zip(
            merchants,
            consents,
            hashes,
            _time_texts(start_us),
            _time_texts(expiry_us),
            from_texts,
            to_texts,
            _int_texts(labels, -MAX_INT),
            _int_texts(lives, 0),
            strict=True,
        )
    ]


def _encode_one_by_one(entries: Sequence[ManifestEntry], issued: datetime | None) -> list[bytes]:
    """The per-entry definition behind :func:`encode_entries`; raises the precise refusal."""
    lines: list[bytes] = []
    previous = ""
    for index, entry in enumerate(entries):
        try:
            lines.append(entry_line(entry))
        except ValueError as exc:
            raise _refuse_build(f"entry {index}: {exc}") from exc
        if entry.merchant_id <= previous:
            raise _refuse_build(
                f"entry {index}: merchant {entry.merchant_id!r} duplicated or out of order"
            )
        previous = entry.merchant_id
    if issued is not None:
        for entry in entries:
            if not entry.consent_start <= issued < entry.consent_expiry:
                raise _refuse_build(f"consent {entry.consent_id!r} is not in force at issued_at")
    return lines


def encode_entries(entries: Sequence[ManifestEntry], issued: datetime | None = None) -> list[bytes]:
    """Canonical lines of entries sorted by merchant id; refuses bad or duplicate entries.

    With ``issued``, also refuses an entry whose consent window does not contain it.

    Raises
    ------
    InvalidConsentRequest
        ``ENTRY_INVALID``, naming the first bad entry.
    """
    try:
        return _encode_columns(entries, issued)
    except _BadColumn:
        # The definition decides: it names the first bad entry, or accepts what the
        # column checks only did not cover (an integer label of another int type).
        return _encode_one_by_one(entries, issued)


# --- parsing a whole cohort, column by column -------------------------------------


class _BadEntries(Exception):
    """A whole-cohort check failed; the per-line walk finds and words the first bad entry."""


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


# The slot descriptors of ManifestEntry, in field order. Setting a slot through its
# descriptor is what the frozen dataclass's own __init__ does (via object.__setattr__);
# doing it a column at a time with map() builds 10^5 entries in a third of the time.
_SLOTS = tuple(ManifestEntry.__dict__[name].__set__ for name in _FIELDS)


def _bulk_entries(columns: Sequence[Sequence[Any]]) -> tuple[ManifestEntry, ...]:
    """``tuple(map(ManifestEntry, *columns))`` for already validated columns, faster."""
    made: list[ManifestEntry] = list(map(object.__new__, repeat(ManifestEntry, len(columns[0]))))
    for set_slot, column in zip(_SLOTS, columns, strict=True):
        deque(map(set_slot, made, column), maxlen=0)  # consume the map: run every setter
    return tuple(made)


def _parse_ints(texts: Sequence[str], low: int) -> list[int | None]:
    """The values of grammar-checked integer texts, each distinct text once; ``_BadEntries``
    when one is outside [low, 2**53 - 1]."""
    value_of = {text: None if text == "null" else int(text) for text in set(texts)}
    numbers = [v for v in value_of.values() if v is not None]
    if numbers and (min(numbers) < low or max(numbers) > MAX_INT):
        raise _BadEntries
    return list(map(value_of.__getitem__, texts))


def _parse_columns(
    blob: bytes, count: int, now: datetime, max_skew: timedelta
) -> tuple[ManifestEntry, ...]:
    """:func:`parse_entries` over columns, or :class:`_BadEntries`.

    One regex call parses every line; times are parsed with C-level maps,
    dates and integers once per distinct value (a cohort shares a few data
    ranges and labels); each rule is one pass over a column. It accepts
    exactly what the per-line walk accepts, giving equal entries (a property
    test pins it); anything it refuses is walked line by line, and the walk
    words the refusal.
    """
    try:
        rows = _LINES.findall(blob.decode("ascii"))
    except UnicodeDecodeError as exc:
        raise _BadEntries from exc
    if len(rows) != count:
        raise _BadEntries
    if not rows:
        return ()
    merchants, consents, hashes, start_s, expiry_s, from_s, to_s, label_s, life_s = zip(
        *rows, strict=True
    )
    try:  # the grammar fixes the shape; this refuses e.g. month 13 or 25 o'clock
        starts = list(map(datetime.fromisoformat, start_s))
        expiries = list(map(datetime.fromisoformat, expiry_s))
        days = {text: date.fromisoformat(text) for text in {*from_s, *to_s}}
    except ValueError as exc:
        raise _BadEntries from exc
    froms = list(map(days.__getitem__, from_s))
    tos = list(map(days.__getitem__, to_s))
    if (
        # strictly increasing merchant ids: sorted and no duplicate
        not all(map(operator.lt, merchants, merchants[1:]))
        or not all(map(operator.lt, starts, expiries))
        or not all(map(operator.le, froms, tos))
        or max(starts) > now + max_skew
        or min(expiries) <= now
    ):
        raise _BadEntries
    labels, lives = _parse_ints(label_s, -MAX_INT), _parse_ints(life_s, 0)
    return _bulk_entries((merchants, consents, hashes, starts, expiries, froms, tos, labels, lives))


def parse_entries(
    blob: bytes, count: int, now: datetime, max_skew: timedelta
) -> tuple[ManifestEntry, ...]:
    """Parse, validate and window-check ``count`` entry lines (covered by the signed root).

    Raises
    ------
    ManifestRejected
        ``ENTRY_INVALID``, naming the first bad line.
    """
    try:
        with _gc_paused():
            return _parse_columns(blob, count, now, max_skew)
    except _BadEntries:
        return tuple(_parse_one_by_one(blob, now, max_skew))  # names the first bad entry


def _parse_one_by_one(blob: bytes, now: datetime, max_skew: timedelta) -> list[ManifestEntry]:
    """The per-line definition behind :func:`parse_entries`; raises the precise refusal."""
    try:
        lines = blob.decode("ascii").split("\n") if blob else []
    except UnicodeDecodeError as exc:
        raise _reject("entries must be ASCII") from exc
    entries: list[ManifestEntry] = []
    previous = ""
    days: dict[str, date] = {}  # a cohort's data ranges repeat; parse each day once
    latest_start = now + max_skew
    for index, line in enumerate(lines):
        found = _LINE.fullmatch(line)
        if found is None:
            raise _reject(f"entry {index} is not a canonical manifest entry")
        merchant, consent_id, a_hash, start_s, expiry_s, from_s, to_s, label_s, life_s = (
            found.groups()
        )
        try:
            start, expiry = datetime.fromisoformat(start_s), datetime.fromisoformat(expiry_s)
            lo = days.get(from_s) or days.setdefault(from_s, date.fromisoformat(from_s))
            hi = days.get(to_s) or days.setdefault(to_s, date.fromisoformat(to_s))
        except ValueError as exc:  # e.g. month 13: the right shape, not a real date
            raise _reject(f"entry {index}: {exc}") from exc
        label = None if label_s == "null" else int(label_s)
        life = None if life_s == "null" else int(life_s)
        entry = ManifestEntry(merchant, consent_id, a_hash, start, expiry, lo, hi, label, life)
        problem = entry_problem(entry)
        if problem is None and merchant <= previous:
            problem = f"merchant {merchant!r} duplicated or out of order"
        if problem is None and (start > latest_start or now >= expiry):
            problem = f"consent {consent_id!r} is not in force at {format_time(now)}"
        if problem is not None:
            raise _reject(f"entry {index}: {problem}")
        previous = merchant
        entries.append(entry)
    return entries
