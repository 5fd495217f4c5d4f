"""Bounded parsing of outside input: size caps, JSON depth limits, clear errors.

Every parser of text that comes from outside the process (export files,
signed notes, witness requests, consent terms, transfer metadata) goes through
these helpers first, so a hostile input gets a :class:`BoundedInputError`
(a ``ValueError`` with a ``code``) instead of a traceback or a 600 MB process.

Codes: ``TOO_LARGE`` (over the byte cap), ``TOO_DEEP`` (nesting over the depth
limit), ``NOT_UTF8`` and ``NOT_JSON``.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "BoundedInputError",
    "MAX_JSON_DEPTH",
    "check_depth",
    "decode_utf8",
    "loads_bounded",
]

MAX_JSON_DEPTH = 32
"""Deepest nesting of objects and arrays accepted in any outside JSON value."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


class BoundedInputError(ValueError):
    """Outside input over a cap or unreadable; ``code`` says which."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def decode_utf8(data: bytes, *, what: str, max_bytes: int) -> str:
    """``data`` as text, refusing more than ``max_bytes`` bytes or invalid UTF-8."""
    if len(data) > max_bytes:
        raise BoundedInputError(f"{what} is {len(data)} bytes, over {max_bytes}", code="TOO_LARGE")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BoundedInputError(f"{what} is not UTF-8 (byte {exc.start})", code="NOT_UTF8") from exc


def check_depth(data: bytes, *, what: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON text whose objects/arrays nest deeper than ``max_depth`` (strings skipped)."""
    depth = 0
    for match in _BRACKETS.finditer(_STRING.sub(b'""', data)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise BoundedInputError(
                    f"{what} nests deeper than {max_depth} levels", code="TOO_DEEP"
                )
        else:
            depth -= 1


def loads_bounded(
    data: str | bytes, *, what: str, max_bytes: int, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """Parse outside JSON with a byte cap and a depth limit.

    Parameters
    ----------
    data : str | bytes
        The text (bytes must be UTF-8).
    what : str
        Names the input in error messages (``"--meta"``, ``"export header"``).
    max_bytes : int
        Largest accepted size in UTF-8 bytes.
    max_depth : int, default MAX_JSON_DEPTH
        Deepest accepted nesting of objects and arrays.

    Raises
    ------
    BoundedInputError
        ``TOO_LARGE``, ``NOT_UTF8``, ``TOO_DEEP`` or ``NOT_JSON``.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    text = decode_utf8(raw, what=what, max_bytes=max_bytes)
    check_depth(raw, what=what, max_depth=max_depth)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BoundedInputError(f"{what} is not JSON: {exc}", code="NOT_JSON") from exc
