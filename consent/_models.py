"""SQLAlchemy tables owned by consent: artefacts (immutable), events (append-only), state.

``consent_artefacts`` and ``consent_events`` are only ever inserted into;
``consent_state`` is the fold of a consent's events, kept beside them so that
queries (by merchant, by provider and status) need no replay. Every event row
names the ledger entry written in the same transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ._errors import ConsentIntegrityError

__all__ = ["ConsentBase", "ArtefactRow", "EventRow", "StateRow", "UTCDateTime"]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_ID = 128


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("consent times must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):  # the column holds a time, or the row was altered
            raise ConsentIntegrityError(f"stored time is a {type(value).__name__}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ConsentBase(DeclarativeBase):
    """Declarative base for consent's own tables (its own MetaData)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ArtefactRow(ConsentBase):
    """A signed artefact, exactly as signed. Never updated."""

    __tablename__ = "consent_artefacts"

    consent_id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(_ID), nullable=False)
    data_provider: Mapped[str] = mapped_column(String(_ID), nullable=False)
    data_consumer: Mapped[str] = mapped_column(String(_ID), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    # Unique: an artefact is superseded at most once, so the version chain never forks.
    supersedes: Mapped[str | None] = mapped_column(
        String(_ID), ForeignKey("consent_artefacts.consent_id"), unique=True
    )
    token: Mapped[str] = mapped_column(Text, nullable=False)
    artefact_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    merchant_signature: Mapped[str | None] = mapped_column(Text)
    merchant_key: Mapped[str | None] = mapped_column(Text)  # PEM public key that signed it
    # Copies of signed terms, for queries only (expiry sweep, batched use counting);
    # the token is the truth.
    consent_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    consent_expiry: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    frequency_unit: Mapped[str] = mapped_column(String(8), nullable=False)  # hour|day|month|year

    __table_args__ = (Index("ix_consent_artefacts_party", "data_provider", "merchant_id"),)


class EventRow(ConsentBase):
    """One lifecycle event; ``(consent_id, version)`` makes the history linear."""

    __tablename__ = "consent_events"

    consent_id: Mapped[str] = mapped_column(
        String(_ID), ForeignKey("consent_artefacts.consent_id"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # status after the event
    ledger_seq: Mapped[int] = mapped_column(BigInteger, nullable=False, unique=True)
    detail: Mapped[str] = mapped_column(Text, nullable=False)  # canonical JSON


class StateRow(ConsentBase):
    """Current state of a consent: the fold of its events (a query cache, not the truth)."""

    __tablename__ = "consent_state"

    consent_id: Mapped[str] = mapped_column(
        String(_ID), ForeignKey("consent_artefacts.consent_id"), primary_key=True
    )
    merchant_id: Mapped[str] = mapped_column(String(_ID), nullable=False)
    data_provider: Mapped[str] = mapped_column(String(_ID), nullable=False)
    data_consumer: Mapped[str] = mapped_column(String(_ID), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    use_count: Mapped[int] = mapped_column(BigInteger, nullable=False)
    period_uses: Mapped[int] = mapped_column(Integer, nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        Index("ix_consent_state_merchant", "merchant_id", "data_provider", "data_consumer"),
        Index("ix_consent_state_provider_status", "data_provider", "status"),
    )
