"""SQLAlchemy tables owned by the ledger: the log, its tree nodes, checkpoints, and the book."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "LedgerBase",
    "LogEntryRow",
    "LogHeadRow",
    "TreeNodeRow",
    "CheckpointRow",
    "CosignatureRow",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class LedgerBase(DeclarativeBase):
    """Declarative base for the ledger's own tables (its own MetaData)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class LogHeadRow(LedgerBase):
    """The one-row head of the log: current size and root.

    Appenders lock this row (``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN
    IMMEDIATE`` on SQLite) so sequence numbers are handed out with no gaps and
    no duplicates, in commit order.
    """

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class LogEntryRow(LedgerBase):
    """One appended entry. ``leaf_data`` is exactly the bytes that were hashed."""

    __tablename__ = "ledger_entries"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    leaf_data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)


class TreeNodeRow(LedgerBase):
    """Root of a complete (perfect) subtree: leaves [index·2^level, (index+1)·2^level).

    Storing every complete subtree costs about two rows per leaf and lets any
    proof be assembled from O(log n) point reads, without rescanning the log.
    """

    __tablename__ = "ledger_tree_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)


class CheckpointRow(LedgerBase):
    """A signed C2SP checkpoint of the log at ``size``."""

    __tablename__ = "ledger_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    origin: Mapped[str] = mapped_column(String(255), nullable=False)
    signed_note: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class CosignatureRow(LedgerBase):
    """A witness's C2SP cosignature/v1 line on the stored checkpoint at ``size``.

    Append-only like the rest of the log; ``line`` is the whole note signature
    line (without its newline), ``vkey`` the witness key it verified under.
    """

    __tablename__ = "ledger_cosignatures"

    size: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ledger_checkpoints.size"), primary_key=True, autoincrement=False
    )
    vkey: Mapped[str] = mapped_column(String(1024), primary_key=True)
    line: Mapped[str] = mapped_column(Text, nullable=False)
    cosigned_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
