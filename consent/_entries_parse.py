"""Parsing a whole cohort's entry lines back to entries, column by column."""

from __future__ import annotations

import gc
import operator
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from itertools import repeat
from typing import Any

from ._entry_line import _FIELDS, _LINE, _LINES, MAX_INT, ManifestEntry, entry_problem
from ._errors import ManifestRejected
from ._vocab import format_time


def _reject(message: str) -> ManifestRejected:
    return ManifestRejected(message, code="ENTRY_INVALID")


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
    """:func:`parse_entries` over columns, or :class:`_BadEntries`."""
    columns = parse_columns(blob, count, now, max_skew)
    return _bulk_entries(columns) if columns[0] else ()


def parse_columns(
    blob: bytes, count: int, now: datetime, max_skew: timedelta
) -> tuple[Sequence[Any], ...]:
    """The entries' nine fields as columns (in :class:`ManifestEntry` field order), or
    :class:`_BadEntries`.

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
        return ((),) * len(_SLOTS)
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
    return merchants, consents, hashes, starts, expiries, froms, tos, labels, lives


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
