"""Reading an export file, line by line and bounded: header, notes, statement, entries.

Every line is capped (:data:`MAX_HEADER_BYTES`, :data:`MAX_NOTE_LINE_BYTES`,
:data:`MAX_BOOK_LINE_BYTES`, :data:`MAX_ENTRY_LINE_BYTES`) and JSON depth-limited;
a line that breaks the format raises :class:`~ledger.ExportFormatError`, an entry
line that cannot be read raises :class:`Malformed` with its index so that
:func:`ledger.audit_export` can name it. Judging what the lines say is
:mod:`ledger._audit`'s job.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Iterator
from typing import Any

from ._bounded import BoundedInputError, loads_bounded
from ._errors import ExportFormatError
from ._export import EXPORT_FORMAT, EXPORT_VERSION

__all__ = [
    "MAX_BOOK_LINES",
    "MAX_BOOK_LINE_BYTES",
    "MAX_CHECKPOINTS",
    "MAX_ENTRY_LINE_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_NOTE_LINE_BYTES",
    "Malformed",
    "bounded_line",
    "bounded_lines",
    "entry_lines",
    "read_header",
    "read_notes",
    "read_statement",
]

MAX_HEADER_BYTES = 64 * 1024
"""Longest header line; unknown header fields are allowed only within it."""
MAX_NOTE_LINE_BYTES = 256 * 1024
"""Longest checkpoint line (a note with up to 100 signature lines fits easily)."""
MAX_BOOK_LINE_BYTES = 4096
MAX_ENTRY_LINE_BYTES = 4 * 1024 * 1024
"""Longest entry line: base64 of a leaf far larger than any body the log writes."""
MAX_CHECKPOINTS = 10_000_000
MAX_BOOK_LINES = 1_000_000


class Malformed(Exception):
    """An entry line that cannot be read; carries its position."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def bounded_line(fh: Any, cap: int, what: str) -> bytes:
    """One line of at most ``cap`` bytes (newline included); longer is a format error."""
    line: bytes = fh.readline(cap + 1)
    if len(line) > cap:
        raise ExportFormatError(f"{what} is longer than {cap} bytes", code="BAD_EXPORT")
    return line


def read_header(line: bytes) -> dict[str, Any]:
    try:
        header = loads_bounded(line, what="export header", max_bytes=MAX_HEADER_BYTES)
    except BoundedInputError as exc:
        raise ExportFormatError(f"first line is not UTF-8 JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise ExportFormatError(f"not a {EXPORT_FORMAT} file")
    if header.get("version") != EXPORT_VERSION:
        raise ExportFormatError(f"unsupported export version {header.get('version')!r}")
    for name, kind in (
        ("origin", str),
        ("vkey", str),
        ("size", int),
        ("root", str),
        ("checkpoints", int),
    ):
        value = header.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ExportFormatError(f"header field {name!r} missing or not {kind.__name__}")
        if isinstance(value, int) and value < 0:
            raise ExportFormatError(f"header field {name!r} is negative")
    book = header.setdefault("book", 0)
    if type(book) is not int or not 0 <= book <= MAX_BOOK_LINES:
        raise ExportFormatError(f"header field 'book' must be an integer in 0..{MAX_BOOK_LINES}")
    if header["checkpoints"] > MAX_CHECKPOINTS:
        raise ExportFormatError(f"header claims more than {MAX_CHECKPOINTS} checkpoints")
    return header


# The exact line the exporter writes; anything else goes through json.loads. The
# file is read as bytes, so a line that is not UTF-8 fails at its own position.
_ENTRY_LINE = re.compile(
    rb'\{"seq":(0|[1-9][0-9]{0,18}),"leaf":"([A-Za-z0-9+/]*={0,2})","hash":"([A-Za-z0-9+/]*={0,2})"\}\n?'
)


def bounded_lines(fh: Any, cap: int) -> Iterator[bytes]:
    """The rest of ``fh`` line by line; a line over ``cap`` bytes is yielded cut (and fails)."""
    readline = fh.readline
    while line := readline(cap + 1):
        yield line


def entry_lines(lines: Iterator[bytes], first: int) -> Iterator[tuple[int, bytes, bytes, bytes]]:
    """Parse entry lines strictly; a bad line raises :class:`Malformed` at its position."""
    loads, a2b, match = json.loads, binascii.a2b_base64, _ENTRY_LINE.fullmatch
    i = first
    for line in lines:
        try:
            fast = match(line)
            if fast is None and len(line) > MAX_ENTRY_LINE_BYTES:
                raise ValueError(f"line longer than {MAX_ENTRY_LINE_BYTES} bytes")
            if fast is not None:
                seq: Any = int(fast[1])
                leaf, recorded = fast[2], fast[3]
            else:
                obj = loads(line.decode("utf-8"))
                if not isinstance(obj, dict) or set(obj) != {"seq", "leaf", "hash"}:
                    raise ValueError("entry lines have exactly seq, leaf, hash")
                seq, leaf, recorded = obj["seq"], obj["leaf"], obj["hash"]
                if type(seq) is not int:
                    raise ValueError("seq is not an integer")
            digest = a2b(recorded, strict_mode=True)
            item = (seq, a2b(leaf, strict_mode=True), digest, digest)
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise Malformed(i, f"entry line {i}: {exc}") from exc
        yield item
        i += 1


def read_notes(fh: Any, count: int) -> list[str]:
    notes: list[str] = []
    for n in range(count):
        line = bounded_line(fh, MAX_NOTE_LINE_BYTES, f"checkpoint line {n}")
        try:
            note = loads_bounded(
                line, what=f"checkpoint line {n}", max_bytes=MAX_NOTE_LINE_BYTES, max_depth=2
            )["checkpoint"]
            if not isinstance(note, str):
                raise TypeError("checkpoint is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            raise ExportFormatError(f"checkpoint line {n}: {exc}") from exc
        notes.append(note)
    return notes


def read_statement(fh: Any, count: int) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for n in range(count):
        line = bounded_line(fh, MAX_BOOK_LINE_BYTES, f"book line {n}")
        try:
            value = loads_bounded(
                line, what=f"book line {n}", max_bytes=MAX_BOOK_LINE_BYTES, max_depth=1
            )
        except BoundedInputError as exc:
            raise ExportFormatError(f"book line {n}: {exc}") from exc
        if not isinstance(value, dict) or set(value) != {
            "account",
            "balance",
            "currency",
            "transfers",
        }:
            raise ExportFormatError(f"book line {n} is not an account statement")
        lines.append(value)
    return lines
