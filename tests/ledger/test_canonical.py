"""Canonical JSON: the fast path is byte-identical to the RFC 8785 reference."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import canonical_json, parse_canonical

_SAFE = 2**53 - 1
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-_SAFE, max_value=_SAFE)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(), _values, max_size=6))
def test_fast_path_matches_rfc8785(value: dict[str, Any]) -> None:
    """For any JSON object, canonical_json equals rfc8785.dumps byte for byte."""
    assert canonical_json(value) == rfc8785.dumps(value)


def test_key_order_is_utf16_not_code_point() -> None:
    """Keys beyond U+FFFF sort by UTF-16 code unit (before U+E000..U+FFFF), as RFC 8785 says."""
    value = {"\U0001f600": 1, "\ufb01": 2, "a": 3}

    data = canonical_json(value)

    assert data == rfc8785.dumps(value)
    assert data.index("\U0001f600".encode()) < data.index("\ufb01".encode())


@pytest.mark.parametrize("bad", [{"n": 2**53}, {"x": float("nan")}])
def test_unrepresentable_values_are_refused(bad: dict[str, Any]) -> None:
    """Integers beyond 2**53 - 1 and NaN cannot be canonicalised."""
    with pytest.raises(ValueError):
        canonical_json(bad)


def test_parse_canonical_refuses_other_spellings() -> None:
    """Valid JSON that is not in canonical form is refused."""
    with pytest.raises(ValueError):
        parse_canonical(b'{"b":1, "a":2}')
    assert parse_canonical(b'{"a":2,"b":1}') == {"a": 2, "b": 1}
