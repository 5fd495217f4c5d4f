"""The book's values and limits: account kinds, accounts, transfers, trial balances."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ._money import Money

TRANSFER_POSTED = "transfer.posted"
ACCOUNT_OPENED = "account.opened"
MAX_AMOUNT = 2**53 - 1
"""Largest amount: JSON (RFC 8785) carries integers exactly only up to 2**53 − 1."""
MAX_METADATA_BYTES = 8192
MAX_BATCH = 1000

_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/@#+\-]{0,127}")


class AccountKind(StrEnum):
    """What an account records; decides its normal side (see :mod:`ledger._book`)."""

    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    INCOME = "income"
    EXPENSE = "expense"

    @property
    def debit_normal(self) -> bool:
        """True for asset and expense accounts, whose balance grows with debits."""
        return self in (AccountKind.ASSET, AccountKind.EXPENSE)


@dataclass(frozen=True, slots=True)
class Account:
    """An account as stored."""

    code: str
    name: str
    kind: AccountKind
    currency: str
    allow_negative: bool
    opened_at: datetime


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """A request to move ``amount`` from ``credit`` to ``debit``.

    Parameters
    ----------
    id : str
        Client-chosen idempotency key, 1–128 of ``[A-Za-z0-9_.:/@#+-]``.
    debit : str
        Code of the account debited.
    credit : str
        Code of the account credited; must differ from ``debit``.
    amount : Money
        Positive minor units; its currency must be both accounts' currency.
    metadata : Mapping[str, Any], default {}
        JSON facts about the posting (job, round, merchant, loan); part of the
        request body, so a retry must repeat it exactly.
    """

    id: str
    debit: str
    credit: str
    amount: Money
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Transfer:
    """A posted transfer, with the log entry that records it."""

    id: str
    debit: str
    credit: str
    amount: Money
    metadata: Mapping[str, Any]
    link_id: str | None
    request_digest: bytes
    log_seq: int
    posted_at: datetime


@dataclass(frozen=True, slots=True)
class TrialBalanceRow:
    """One account's postings totals and balance."""

    account: str
    kind: AccountKind
    debits: Money
    credits: Money
    balance: Money


@dataclass(frozen=True, slots=True)
class TrialBalance:
    """Every account's totals, and Σdebits / Σcredits per currency."""

    rows: tuple[TrialBalanceRow, ...]
    debits: Mapping[str, int]
    credits: Mapping[str, int]

    @property
    def balanced(self) -> bool:
        """True when Σdebits = Σcredits in every currency."""
        currencies = set(self.debits) | set(self.credits)
        return all(self.debits.get(c, 0) == self.credits.get(c, 0) for c in currencies)


def _utc(at: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time the book returns is aware UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
