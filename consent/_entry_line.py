"""One manifest entry: its fields, its canonical line and the Merkle hashing of lines."""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from hashlib import sha256

from ledger import EMPTY_ROOT

from ._vocab import format_time

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
