"""Read ledger entries of one kind (tests only: leaf bytes in log order)."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

import ledger

_ENTRIES = cast(Table, ledger.metadata.tables["ledger_entries"])


def entries_of_kind(s: Session, kind: str) -> list[bytes]:
    """The leaf data of every entry of ``kind``, in log order."""
    rows = s.execute(
        select(_ENTRIES.c.leaf_data).where(_ENTRIES.c.kind == kind).order_by(_ENTRIES.c.seq)
    )
    return [bytes(r[0]) for r in rows]
