"""Canonical JSON (RFC 8785, JSON Canonicalization Scheme) for everything fedgate hashes or signs.

Why JCS: a leaf hash, a checkpoint and a consent signature must be recomputable
byte-for-byte by an auditor in any language. RFC 8785 fixes key order (UTF-16
code units), number formatting (ECMAScript) and string escaping, so two
implementations agree without sharing code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import rfc8785

__all__ = ["canonical_json", "parse_canonical"]


def canonical_json(value: Mapping[str, Any] | list[Any]) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of ``value``.

    Raises ``rfc8785.CanonicalizationError`` (a ``ValueError``) for values JSON
    cannot carry exactly: NaN, infinities, integers beyond 2**53 - 1, non-string keys.
    """
    return rfc8785.dumps(value)


def parse_canonical(data: bytes) -> Any:
    """Parse ``data`` and insist that it is already in canonical form.

    A body that parses but does not re-serialise to the same bytes was not
    produced by :func:`canonical_json`; accepting it would let two byte
    strings stand for one entry.
    """
    import json

    value = json.loads(data.decode("utf-8"))
    if canonical_json(value) != data:
        raise ValueError("body is valid JSON but not in RFC 8785 canonical form")
    return value
