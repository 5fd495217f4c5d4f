"""Bulk inserts below the ORM: PostgreSQL ``COPY … FROM STDIN``, SQLite ``executemany``.

Both run on the session's own connection, so the rows commit or roll back with the
caller's transaction like everything else. Values must already be in column order;
JSON columns are passed as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

__all__ = ["copy_rows"]


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
        sql = f'COPY "{table}" ({cols}) FROM STDIN'
        try:
            with raw.cursor() as cur, cur.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
        except psycopg.errors.IntegrityError as exc:  # the same error SQLite's path raises
            raise IntegrityError(sql, None, exc) from exc
        return len(rows)
    marks = ", ".join("?" for _ in columns)
    # SQLAlchemy stores SQLite dates as ISO text; do the same, not the driver's adapter.
    dated = [i for i, v in enumerate(rows[0]) if isinstance(v, date)]
    values = (
        [tuple(v.isoformat() if i in dated else v for i, v in enumerate(r)) for r in rows]
        if dated
        else list(map(tuple, rows))
    )
    conn.exec_driver_sql(f'INSERT INTO "{table}" ({cols}) VALUES ({marks})', values)
    return len(rows)
