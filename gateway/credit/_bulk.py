"""Bulk inserts below the ORM: PostgreSQL ``COPY … FROM STDIN`` (text format, written in large
buffers: psycopg's ``write_row`` costs a Python call per value), SQLite ``executemany``.

Both run on the session's own connection, so the rows commit or roll back with the
caller's transaction like everything else. Values must already be in column order;
JSON columns are passed as text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from numbers import Integral
from typing import Any

from sqlalchemy import ColumnElement, any_, func, literal_column, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ledger import copy_text

__all__ = ["among", "copy_rows"]


def among(session: Session, column: Any, ids: Sequence[str]) -> ColumnElement[bool]:
    """``column IN ids`` with the ids as one parameter, however many there are.

    For identifiers (``[A-Za-z0-9_.:/@#+-]``: no comma, nothing JSON escapes) only:
    PostgreSQL gets ``= ANY(string_to_array(…))``, SQLite ``IN (SELECT value FROM
    json_each(…))``. Thousands of bound parameters cost more to compile than the
    query costs to run.
    """
    clause: ColumnElement[bool]
    if session.get_bind().dialect.name == "postgresql":
        clause = column == any_(func.string_to_array(",".join(ids), ","))
    else:
        values = func.json_each(json.dumps(ids))
        clause = column.in_(select(literal_column("value")).select_from(values))
    return clause


def _text(value: Any) -> str:
    """One value in COPY's text format: ``\\N`` for NULL, ``t``/``f``, ISO dates, escapes."""
    if isinstance(value, str):
        return copy_text(value)
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Integral):
        return str(int(value))
    raise TypeError(f"copy_rows cannot write {type(value).__name__}")


_BULK_CACHE_KIB = 256 * 1024
_SPECIAL = ("\\", "\t", "\n", "\r")


def _column(values: list[Any]) -> list[str]:
    """One column in COPY text, converted at C speed when all values share a plain type."""
    kinds = set(map(type, values))
    if kinds == {str}:
        joined = "\x00".join(values)  # one scan decides whether anything needs escaping
        return values if not any(c in joined for c in _SPECIAL) else list(map(_text, values))
    if kinds == {int}:
        return list(map(str, values))
    if kinds == {date}:
        return list(map(date.isoformat, values))
    return list(map(_text, values))


def _lines(rows: Sequence[Sequence[Any]]) -> list[str]:
    """Rows as newline-terminated COPY text lines, built column by column."""
    columns = [_column(list(col)) for col in zip(*rows, strict=True)]
    return ["\t".join(fields) + "\n" for fields in zip(*columns, strict=True)]


def copy_rows(
    session: Session, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> int:
    """Insert ``rows`` into ``table`` (trusted names, never user input); returns the count.

    A duplicate key raises :class:`sqlalchemy.exc.IntegrityError` on both backends.
    """
    if not rows:
        return 0
    session.flush()
    conn = session.connection()
    cols = ", ".join(f'"{c}"' for c in columns)
    if conn.dialect.name == "postgresql":
        import psycopg

        raw = conn.connection.driver_connection
        assert raw is not None, "the session's connection is closed"
        sql = f'COPY "{table}" ({cols}) FROM STDIN'
        try:
            with raw.cursor() as cur, cur.copy(sql) as copy:
                for start in range(0, len(rows), 65536):
                    copy.write("".join(_lines(rows[start : start + 65536])))
        except psycopg.errors.IntegrityError as exc:  # the same error SQLite's path raises
            raise IntegrityError(sql, None, exc) from exc
        return len(rows)
    marks = ", ".join("?" for _ in columns)
    # SQLAlchemy stores SQLite dates as ISO text; do the same, not the driver's adapter.
    dated = [i for i, v in enumerate(rows[0]) if isinstance(v, date)]
    values = (
        [tuple(v.isoformat() if i in dated else v for i, v in enumerate(r)) for r in rows]
        if dated
        else rows
    )
    # A page cache large enough for the table's indexes while they grow (SQLite's default
    # is 2 MB; a 10⁶-row import then rereads index pages from disk), for this statement.
    cache = int(conn.exec_driver_sql("PRAGMA cache_size").scalar() or -2000)
    conn.exec_driver_sql(f"PRAGMA cache_size = {-_BULK_CACHE_KIB}")
    try:
        conn.exec_driver_sql(f'INSERT INTO "{table}" ({cols}) VALUES ({marks})', values)
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size = {cache}")
    return len(rows)
