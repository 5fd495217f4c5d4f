"""Encoding a whole cohort's entries to their lines, column by column."""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from itertools import repeat
from typing import Any

import numpy as np

from ._entry_line import _DATE, _FIELDS, MAX_INT, ManifestEntry, entry_line
from ._errors import InvalidConsentRequest


def _refuse_build(message: str) -> InvalidConsentRequest:
    return InvalidConsentRequest(f"cannot build manifest: {message}", code="ENTRY_INVALID")


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
