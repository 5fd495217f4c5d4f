"""A streamed cohort kept as columns reads back exactly what the whole-cohort parser reads."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import consent._entry_table as entry_table
from consent import EntryTable, ManifestEntry, parse_entry_table
from consent._entries import encode_entries, parse_entries

from .test_manifest_columns import NOW, _good_entry, _outcome, cohorts, edited_lines

SKEW = timedelta(seconds=60)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of two lines, so every cohort of three or more crosses a batch boundary."""
    monkeypatch.setattr(entry_table, "BATCH", 2)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batch=cohorts(),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(list(b'0159aZ"[]\n'))), max_size=2
    ),
    offset=st.integers(-3, 3),
)
def test_table_parse_equals_whole_parse(
    tmp_path: Path, small_batches: None,
    batch: list[ManifestEntry], edits: list[tuple[int, int]], offset: int,
) -> None:
    """Same entries for good lines (in order, equal field by field), the same refusal for bad."""
    blob = edited_lines(batch, edits)
    path = tmp_path / "spool.lines"
    path.write_bytes(blob)
    count = blob.count(b"\n") + 1 if blob else 0
    now = NOW + timedelta(days=offset)

    whole = _outcome(parse_entries, blob, count, now, SKEW)
    table = _outcome(parse_entry_table, path, count, now, SKEW)

    assert table[0] == whole[0]
    if whole[0] == "ok":
        assert isinstance(table[1], EntryTable)
        assert list(table[1]) == list(whole[1])
        assert table[1] == whole[1] and len(table[1]) == len(whole[1])
    else:
        assert table == whole


def test_order_across_a_batch_boundary_is_checked(tmp_path: Path, small_batches: None) -> None:
    """Each batch is sorted, but batch 2 starts below batch 1's end: refused, worded exactly."""
    a, b, c, d = (_good_entry(i) for i in (1, 2, 3, 4))
    lines = encode_entries([a, c]) + encode_entries([b, d])  # m001 m003 | m002 m004
    path = tmp_path / "spool.lines"
    path.write_bytes(b"\n".join(lines))

    with pytest.raises(Exception) as table:
        parse_entry_table(path, 4, NOW, SKEW)
    with pytest.raises(Exception) as whole:
        parse_entries(path.read_bytes(), 4, NOW, SKEW)

    assert table.value.code == whole.value.code == "ENTRY_INVALID"  # type: ignore[attr-defined]
    assert str(table.value) == str(whole.value)
    assert "entry 2" in str(table.value)  # the index in the whole cohort, not in its batch


def test_table_reads_as_a_sequence(small_batches: None) -> None:
    """Index, negative index, slice, iteration, merchant ids, equality and an empty table."""
    entries = tuple(_good_entry(i) for i in range(5))
    table = EntryTable.from_batches([entries[:2], entries[2:4], entries[4:]])

    assert len(table) == 5
    assert table[0] == entries[0] and table[-1] == entries[4]
    assert table[1:4] == entries[1:4] and table[::2] == entries[::2]
    assert tuple(table) == entries and table == entries and table == list(entries)
    assert table != entries[:4] and table != entries[::-1]
    assert table.merchant_ids() == [e.merchant_id for e in entries]
    assert hash(table) == hash(EntryTable.from_batches([entries]))
    with pytest.raises(IndexError):
        table[5]
    empty = EntryTable.from_batches([])
    assert len(empty) == 0 and list(empty) == [] and empty == ()


def test_equal_values_are_stored_once() -> None:
    """Times, dates, labels and terms shared by many entries are one object each."""
    entries = [_good_entry(i, consent_start=NOW - timedelta(days=1)) for i in range(50)]
    table = EntryTable.from_batches([entries[:25], entries[25:]])

    starts = {id(e.consent_start) for e in table}
    assert len(starts) == 1
