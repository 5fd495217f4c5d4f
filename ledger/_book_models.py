"""SQLAlchemy tables of the double-entry book, on the ledger's own MetaData.

The database guards what it can by itself, so a bug above it cannot corrupt the book:

- ``CHECK amount > 0`` and ``CHECK debit_account <> credit_account`` on every transfer;
- a transfer's currency is bound to **both** accounts' currencies by composite
  foreign keys ``(debit_account, currency)`` and ``(credit_account, currency)``
  onto ``UNIQUE (code, currency)`` of the accounts, so no posting can mix currencies;
- every transfer names its ``transfer.posted`` log entry (``log_seq``, unique,
  foreign key to the log);
- triggers make every book table (``book_accounts``, ``book_transfers``)
  append-only (no UPDATE, no DELETE) on SQLite and PostgreSQL
  (:func:`book_triggers` gives the DDL for migrations). An operator can still
  drop a trigger; ``fedgate ledger verify`` then catches the edit by
  recomputing the book from the log (:mod:`ledger._reconcile`).

Balance: each transfer is one row holding one debit leg and one credit leg of
the same amount and currency, so Σdebits = Σcredits holds for every transfer by
construction; there is no separate legs table whose sum a trigger would have to
check (hordak needs that trigger because its legs are separate rows).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
    event,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.schema import Table

from ._models import LedgerBase

__all__ = [
    "AccountRow",
    "TransferRow",
    "BOOK_TABLES",
    "BOOK_TRIGGERS",
    "ACCOUNT_KINDS",
    "book_triggers",
]

ACCOUNT_KINDS = ("asset", "liability", "equity", "income", "expense")
"""Account kinds; asset and expense are debit-normal, the others credit-normal."""


class AccountRow(LedgerBase):
    """An account: a code (``isv:acme:payable``), a kind and one currency."""

    __tablename__ = "book_accounts"

    code: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    allow_negative: Mapped[bool] = mapped_column(Boolean, nullable=False)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        UniqueConstraint("code", "currency", name="uq_book_accounts_code_currency"),
        CheckConstraint(
            "kind IN ('asset', 'liability', 'equity', 'income', 'expense')", name="kind"
        ),
        CheckConstraint("length(currency) = 3", name="currency_len"),
    )


class TransferRow(LedgerBase):
    """One posted transfer: ``amount`` minor units from ``credit_account`` to ``debit_account``."""

    __tablename__ = "book_transfers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    debit_account: Mapped[str] = mapped_column(String(128), nullable=False)
    credit_account: Mapped[str] = mapped_column(String(128), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    link_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # "metadata" is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, nullable=False)
    request_digest: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    log_seq: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ledger_entries.seq"), nullable=False, unique=True
    )
    posted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("debit_account <> credit_account", name="distinct_accounts"),
        ForeignKeyConstraint(
            ["debit_account", "currency"],
            ["book_accounts.code", "book_accounts.currency"],
            name="fk_book_transfers_debit_currency",
        ),
        ForeignKeyConstraint(
            ["credit_account", "currency"],
            ["book_accounts.code", "book_accounts.currency"],
            name="fk_book_transfers_credit_currency",
        ),
        Index("ix_book_transfers_debit_account", "debit_account"),
        Index("ix_book_transfers_credit_account", "credit_account"),
        Index("ix_book_transfers_link_id", "link_id"),
    )


BOOK_TABLES = ("book_accounts", "book_transfers")
"""Every table of the book: each is append-only."""


def _sqlite_triggers(table: str) -> list[str]:
    return [
        f"""CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table}
BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"""
        for op in ("UPDATE", "DELETE")
    ]


def _postgres_triggers(table: str) -> list[str]:
    return [
        f"""CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{table} is append-only' USING ERRCODE = 'restrict_violation';
END $$""",
        f"""CREATE OR REPLACE TRIGGER {table}_append_only
BEFORE UPDATE OR DELETE ON {table}
FOR EACH ROW EXECUTE FUNCTION {table}_append_only()""",
    ]


def book_triggers(dialect: str, tables: tuple[str, ...] = BOOK_TABLES) -> list[str]:
    """Append-only trigger DDL for ``tables`` on ``dialect`` (``[]`` for another dialect)."""
    make = {"sqlite": _sqlite_triggers, "postgresql": _postgres_triggers}.get(dialect)
    return [ddl for table in tables for ddl in make(table)] if make else []


BOOK_TRIGGERS: dict[str, list[str]] = {
    "sqlite": book_triggers("sqlite", ("book_transfers",)),
    "postgresql": book_triggers("postgresql", ("book_transfers",)),
}
"""``book_transfers`` trigger DDL per dialect, as migration 0001 installed it."""


def _create_triggers(target: Table, connection: Connection, **_: Any) -> None:
    """Install the append-only triggers after a book table is created."""
    for ddl in book_triggers(connection.dialect.name, (target.name,)):
        connection.exec_driver_sql(ddl)


event.listen(AccountRow.__table__, "after_create", _create_triggers)
event.listen(TransferRow.__table__, "after_create", _create_triggers)
