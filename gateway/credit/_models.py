"""Tables owned by ``gateway.credit``: policy versions, line decisions, loans, events, closes.

Every row that an auditor cares about names the ledger entry (``log_seq``) written in
the same transaction; the ledger is the truth, these tables are its queryable copy.
Amounts are integer fen (``BigInteger``) beside a three-letter currency.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import ledger

__all__ = [
    "CreditBase",
    "PolicyVersionRow",
    "LineDecisionRow",
    "LoanRow",
    "LoanEventRow",
    "ImportRow",
    "PeriodCloseRow",
    "AccrualRow",
    "AlertRow",
    "SettlementRow",
]


_ID = 128
_SERIAL = BigInteger().with_variant(Integer(), "sqlite")
"""A 64-bit serial key; SQLite auto-increments only an INTEGER primary key."""


class CreditBase(DeclarativeBase):
    """Declarative base of the credit tables (own MetaData, migrated with the rest)."""

    metadata = MetaData(naming_convention=dict(ledger.metadata.naming_convention))


class PolicyVersionRow(CreditBase):
    """A credit policy (lines, rates, monitoring rules) that took effect; its text is kept whole."""

    __tablename__ = "credit_policy_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    text_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    effective_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    log_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)


class LineDecisionRow(CreditBase):
    """One merchant's pre-approved lines (without and with ISV data) and everything they used."""

    __tablename__ = "credit_line_decisions"

    id: Mapped[int] = mapped_column(_SERIAL, primary_key=True, autoincrement=True)
    merchant_id: Mapped[str] = mapped_column(String(_ID), nullable=False)
    basis: Mapped[str] = mapped_column(String(16), nullable=False)
    policy_version: Mapped[int] = mapped_column(Integer, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    sales_3m: Mapped[int] = mapped_column(BigInteger, nullable=False)
    pd_f: Mapped[float | None] = mapped_column(Float, nullable=True)
    pd_with: Mapped[float | None] = mapped_column(Float, nullable=True)
    line_f: Mapped[int] = mapped_column(BigInteger, nullable=False)
    line_with: Mapped[int] = mapped_column(BigInteger, nullable=False)
    uplift: Mapped[int] = mapped_column(BigInteger, nullable=False)
    attribution: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    log_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)

    __table_args__ = (
        CheckConstraint("basis IN ('platform', 'off-platform')", name="basis"),
        CheckConstraint("line_f >= 0 AND line_with >= 0", name="lines_nonnegative"),
        Index("ix_credit_line_decisions_merchant", "merchant_id", "id"),
    )


class LoanRow(CreditBase):
    """A loan on a merchant's line: its rate and the line decision it was drawn under."""

    __tablename__ = "credit_loans"

    loan_id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(_ID), nullable=False, index=True)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    rate_bp: Mapped[int] = mapped_column(Integer, nullable=False)
    decision_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    line_f: Mapped[int] = mapped_column(BigInteger, nullable=False)
    line_with: Mapped[int] = mapped_column(BigInteger, nullable=False)
    line_limit: Mapped[int] = mapped_column(BigInteger, nullable=False)
    frozen: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    attribution: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    opened_on: Mapped[date] = mapped_column(Date, nullable=False)

    __table_args__ = (CheckConstraint("rate_bp >= 0 AND rate_bp <= 100000", name="rate_bp"),)


class LoanEventRow(CreditBase):
    """One event from the lending system, keyed by its idempotency key."""

    __tablename__ = "credit_loan_events"

    key: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    loan_id: Mapped[str] = mapped_column(String(_ID), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    day: Mapped[date] = mapped_column(Date, nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    digest: Mapped[str] = mapped_column(String(64), nullable=False)
    import_id: Mapped[str] = mapped_column(String(64), nullable=False)

    __table_args__ = (
        CheckConstraint(
            "kind IN ('drawdown', 'repayment', 'write_off', 'line_change', 'recovery')",
            name="kind",
        ),
        CheckConstraint("amount >= 0", name="amount_nonnegative"),
        Index("ix_credit_loan_events_loan_on", "loan_id", "day"),
        Index("ix_credit_loan_events_day", "day"),
    )


class ImportRow(CreditBase):
    """One accepted import of loan events (its file digest and what it added)."""

    __tablename__ = "credit_imports"

    import_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(255), nullable=False)
    rows: Mapped[int] = mapped_column(BigInteger, nullable=False)
    added: Mapped[int] = mapped_column(BigInteger, nullable=False)
    events_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    log_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)


class PeriodCloseRow(CreditBase):
    """A closed month: loans accrued, interest, and the digest of its accrual rows."""

    __tablename__ = "credit_period_closes"

    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    loans: Mapped[int] = mapped_column(BigInteger, nullable=False)
    interest: Mapped[int] = mapped_column(BigInteger, nullable=False)
    uplift_interest: Mapped[int] = mapped_column(BigInteger, nullable=False)
    accruals_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    closed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    log_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)


class AccrualRow(CreditBase):
    """A loan's interest for one period, from its daily balance history."""

    __tablename__ = "credit_accruals"

    loan_id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    balance_days: Mapped[int] = mapped_column(BigInteger, nullable=False)
    uplift_balance_days: Mapped[int] = mapped_column(BigInteger, nullable=False)
    interest: Mapped[int] = mapped_column(BigInteger, nullable=False)
    uplift_interest: Mapped[int] = mapped_column(BigInteger, nullable=False)
    closing_balance: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # Earlier periods' interest that this period's repayments paid (interest first).
    interest_paid: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    # Interest receivable written off at this period's close (the write-off took the whole
    # principal): never due again.
    interest_written_off: Mapped[int] = mapped_column(
        BigInteger, nullable=False, server_default="0"
    )

    __table_args__ = (Index("ix_credit_accruals_period", "period"),)


class AlertRow(CreditBase):
    """A monitoring alert and the action taken on it."""

    __tablename__ = "credit_alerts"

    id: Mapped[int] = mapped_column(_SERIAL, primary_key=True, autoincrement=True)
    pass_id: Mapped[str] = mapped_column(String(64), nullable=False)
    merchant_id: Mapped[str] = mapped_column(String(_ID), nullable=False, index=True)
    loan_id: Mapped[str] = mapped_column(String(_ID), nullable=False)
    rule: Mapped[str] = mapped_column(String(32), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    log_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)


class SettlementRow(CreditBase):
    """What one ISV was owed and paid for one period.

    ``clawback`` is the share claw-backs this period's settlement booked against the ISV
    (what it owes back, ``isv:<id>:clawback-receivable``); ``netted`` is the part of earlier
    and this period's claw-backs taken out of this period's payout (fee + share =
    instructed + netted once everything is instructed).
    """

    __tablename__ = "credit_settlements"

    isv: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    fee: Mapped[int] = mapped_column(BigInteger, nullable=False)
    share: Mapped[int] = mapped_column(BigInteger, nullable=False)
    instructed: Mapped[int] = mapped_column(BigInteger, nullable=False)
    cleared: Mapped[int] = mapped_column(BigInteger, nullable=False)
    clawback: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    netted: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    statement_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    settled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (
        CheckConstraint("cleared <= instructed AND instructed <= fee + share", name="paid_le_due"),
        CheckConstraint(
            "clawback >= 0 AND netted >= 0 AND instructed + netted <= fee + share",
            name="netted_le_due",
        ),
    )
