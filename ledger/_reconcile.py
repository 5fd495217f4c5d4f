"""The book proven from the log: balances and transfers recomputed from log entries.

Every account and every transfer is written together with its log entry
(``account.opened``, ``transfer.posted``) in one transaction, so the log alone
determines the book. :class:`BookReplay` folds those entries in log order and
checks, entry by entry, the rules the book enforces when posting; the
database check (:func:`reconcile_book`) then compares the stored rows with the
replay one to one, and the offline audit compares the book statement an export
carries (:func:`book_statement`) with the same replay.

=========================  ============================================================
code                       meaning (``index`` is a log sequence number)
=========================  ============================================================
``BOOK_ENTRY_MALFORMED``   a book entry's body is not what the book writes
``ACCOUNT_DUPLICATE``      the log opens the same account twice
``UNKNOWN_ACCOUNT``        a logged transfer names an account the log never opened
``CURRENCY_MISMATCH``      a logged transfer's currency is not its accounts'
``NEGATIVE_BALANCE``       a logged transfer takes a no-negative account below zero
``TRANSFER_NOT_LOGGED``    a stored transfer has no matching ``transfer.posted`` entry
``TRANSFER_MISMATCH``      a stored transfer differs from its log entry
``TRANSFER_MISSING``       a logged transfer has no stored row
``ACCOUNT_NOT_LOGGED``     a stored account has no ``account.opened`` entry
``ACCOUNT_MISMATCH``       a stored account differs from its log entry
``ACCOUNT_MISSING``        a logged account has no stored row
``BOOK_STATEMENT_MISMATCH``  (export) a stated balance differs from the recomputed one
=========================  ============================================================
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ._book import trial_balance
from ._book_models import AccountRow, TransferRow
from ._canonical import canonical_json
from ._models import LogEntryRow

__all__ = [
    "ACCOUNT_OPENED",
    "TRANSFER_POSTED",
    "BookFailure",
    "BookReplay",
    "BookReport",
    "book_statement",
    "reconcile_book",
]

TRANSFER_POSTED = "transfer.posted"
ACCOUNT_OPENED = "account.opened"
_MARKS = (b'"kind":"transfer.posted"', b'"kind":"account.opened"')
_CODE = rb'"([A-Za-z0-9_.:/@#+\-]{1,128})"'
_TRANSFER = re.compile(
    rb'\{"at":"[^"\\]*","body":\{"amount":([1-9][0-9]{0,15}),"credit":'
    + _CODE
    + rb',"currency":"([A-Z]{3})","debit":'
    + _CODE
    + rb',"id":'
    + _CODE
    + rb',"link":'
)
"""The head of a canonical ``transfer.posted`` leaf as the book writes it (RFC 8785 orders
the keys): read without a JSON parse on the audit's hot path. Anything else is parsed."""
_DEBIT_NORMAL = frozenset({"asset", "expense"})
_KINDS = frozenset({"asset", "liability", "equity", "income", "expense"})
_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class BookFailure:
    """The first thing in the book that the log does not prove."""

    code: str
    index: int | None
    message: str
    transfer_id: str | None = None


@dataclass(slots=True)
class _Account:
    code: str
    name: str
    kind: str
    currency: str
    allow_negative: bool
    seq: int
    debits: int = 0
    credits: int = 0
    transfers: int = 0
    last_seq: int = -1

    @property
    def balance(self) -> int:
        """Balance in the account's normal direction."""
        if self.kind in _DEBIT_NORMAL:
            return self.debits - self.credits
        return self.credits - self.debits


@dataclass(slots=True)
class _Logged:
    seq: int
    body: dict[str, Any]


@dataclass(slots=True)
class BookReplay:
    """Fold ``account.opened`` and ``transfer.posted`` entries, in log order.

    ``keep_transfers`` keeps each logged transfer body (for the row-by-row
    database comparison); the offline audit leaves it off and stays O(accounts).
    """

    keep_transfers: bool = False
    accounts: dict[str, _Account] = field(default_factory=dict)
    transfers: list[_Logged] = field(default_factory=list)
    count: int = 0
    failure: BookFailure | None = None

    def feed_leaf(self, seq: int, leaf: bytes) -> None:
        """Look at one leaf; only book entries are parsed (a cheap byte test first)."""
        if self.failure is not None or (_MARKS[0] not in leaf and _MARKS[1] not in leaf):
            return
        if not self.keep_transfers and leaf.endswith(b'"kind":"transfer.posted","seq":%d}' % seq):
            head = _TRANSFER.match(leaf)
            if head is not None:
                amount, credit, currency, debit, tid = head.groups()
                self._apply(
                    seq,
                    tid.decode(),
                    int(amount),
                    debit.decode(),
                    credit.decode(),
                    currency.decode(),
                )
                return
        try:
            value = json.loads(leaf)
        except ValueError:
            return  # not JSON: the log audit reports it (NOT_CANONICAL) when asked
        if not isinstance(value, dict):
            return
        kind, body = value.get("kind"), value.get("body")
        if kind in (TRANSFER_POSTED, ACCOUNT_OPENED):
            self.feed(seq, kind, body)

    def _fail(self, code: str, seq: int, message: str, tid: str | None = None) -> None:
        self.failure = BookFailure(code, seq, message, tid)

    def feed(self, seq: int, kind: str, body: Any) -> None:
        """Apply one book entry; the first rule it breaks becomes :attr:`failure`."""
        if self.failure is not None:
            return
        if not isinstance(body, dict):
            self._fail("BOOK_ENTRY_MALFORMED", seq, f"{kind} at {seq} has no object body")
            return
        if kind == ACCOUNT_OPENED:
            self._open(seq, body)
        else:
            self._post(seq, body)

    def _open(self, seq: int, body: dict[str, Any]) -> None:
        code, kind, currency = body.get("code"), body.get("kind"), body.get("currency")
        allow, name = body.get("allow_negative"), body.get("name")
        if (
            not isinstance(code, str)
            or kind not in _KINDS
            or not isinstance(currency, str)
            or not isinstance(allow, bool)
            or not isinstance(name, str)
        ):
            self._fail("BOOK_ENTRY_MALFORMED", seq, f"account.opened at {seq} is malformed")
            return
        if code in self.accounts:
            self._fail("ACCOUNT_DUPLICATE", seq, f"account {code!r} opened again at {seq}")
            return
        self.accounts[code] = _Account(code, name, kind, currency, allow, seq)

    def _post(self, seq: int, body: dict[str, Any]) -> None:
        tid, amount = body.get("id"), body.get("amount")
        debit, credit, currency = body.get("debit"), body.get("credit"), body.get("currency")
        if (
            not isinstance(tid, str)
            or type(amount) is not int
            or amount <= 0
            or not isinstance(debit, str)
            or not isinstance(credit, str)
        ):
            self._fail("BOOK_ENTRY_MALFORMED", seq, f"transfer.posted at {seq} is malformed")
            return
        if self._apply(seq, tid, amount, debit, credit, currency) and self.keep_transfers:
            self.transfers.append(_Logged(seq, body))

    def _apply(
        self, seq: int, tid: str, amount: int, debit: str, credit: str, currency: Any
    ) -> bool:
        """Post one logged transfer to the replayed balances; False when it breaks a rule."""
        if debit == credit:
            self._fail(
                "BOOK_ENTRY_MALFORMED", seq, f"transfer {tid!r} debits and credits {debit!r}"
            )
            return False
        legs = []
        for code in (debit, credit):
            acct = self.accounts.get(code)
            if acct is None:
                self._fail("UNKNOWN_ACCOUNT", seq, f"transfer {tid!r} names {code!r}", tid)
                return False
            if acct.currency != currency:
                self._fail(
                    "CURRENCY_MISMATCH", seq, f"transfer {tid!r} in {currency} on {code!r}", tid
                )
                return False
            legs.append(acct)
        dr, cr = legs
        dr.debits += amount
        cr.credits += amount
        for acct in legs:
            acct.transfers += 1
            acct.last_seq = seq
            if not acct.allow_negative and acct.balance < 0:
                self._fail(
                    "NEGATIVE_BALANCE",
                    seq,
                    f"transfer {tid!r} takes no-negative account {acct.code!r} to "
                    f"{acct.balance} minor units",
                    tid,
                )
                return False
        self.count += 1
        return True

    def balances(self) -> dict[str, tuple[int, str]]:
        """Account code → (balance in minor units, currency), recomputed from the log."""
        return {a.code: (a.balance, a.currency) for a in self.accounts.values()}

    def check_statement(self, statement: Iterable[Mapping[str, Any]]) -> BookFailure | None:
        """Compare a book statement (see :func:`book_statement`) with this replay."""
        seen: set[str] = set()
        for line in statement:
            code = line.get("account")
            acct = self.accounts.get(code) if isinstance(code, str) else None
            if acct is None:
                return BookFailure(
                    "BOOK_STATEMENT_MISMATCH", None, f"statement names unlogged account {code!r}"
                )
            seen.add(acct.code)
            claimed = (line.get("balance"), line.get("transfers"), line.get("currency"))
            actual = (acct.balance, acct.transfers, acct.currency)
            if claimed != actual:
                return BookFailure(
                    "BOOK_STATEMENT_MISMATCH",
                    max(acct.last_seq, acct.seq),
                    f"account {acct.code!r}: statement says balance {claimed[0]} over "
                    f"{claimed[1]} transfers, the log gives {actual[0]} over {actual[1]}",
                )
        missing = sorted(set(self.accounts) - seen)
        if missing:
            acct = self.accounts[missing[0]]
            return BookFailure(
                "BOOK_STATEMENT_MISMATCH", acct.seq, f"statement omits account {acct.code!r}"
            )
        return None


@dataclass(frozen=True, slots=True)
class BookReport:
    """Outcome of reconciling the book with the log."""

    accounts: int
    transfers: int
    failure: BookFailure | None = None
    balances: Mapping[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every row and balance is proven by the log."""
        return self.failure is None


def _book_entries(session: Session) -> Iterator[tuple[int, bytes]]:
    stmt = (
        select(LogEntryRow.seq, LogEntryRow.leaf_data)
        .where(LogEntryRow.kind.in_((TRANSFER_POSTED, ACCOUNT_OPENED)))
        .order_by(LogEntryRow.seq)
        .execution_options(yield_per=_BATCH)
    )
    for part in session.execute(stmt).partitions():
        for seq, leaf in part:
            yield int(seq), bytes(leaf)


def _transfer_mismatch(row: TransferRow, body: Mapping[str, Any]) -> str | None:
    stored = {
        "id": row.id,
        "debit": row.debit_account,
        "credit": row.credit_account,
        "amount": int(row.amount),
        "currency": row.currency,
        "metadata": row.meta,
        "link": row.link_id,
    }
    for name, value in stored.items():
        if body.get(name) != value:
            return f"{name} is {value!r} in the book, {body.get(name)!r} in the log"
    if hashlib.sha256(canonical_json(dict(body))).digest() != bytes(row.request_digest):
        return "request digest differs from the logged body"
    return None


def _account_mismatch(row: AccountRow, acct: _Account) -> str | None:
    stored = (row.name, row.kind, row.currency, bool(row.allow_negative))
    logged = (acct.name, acct.kind, acct.currency, acct.allow_negative)
    if stored != logged:
        return f"book has {stored}, the log {logged}"
    return None


def reconcile_book(session: Session) -> BookReport:
    """Recompute the book from the log and compare every stored account and transfer.

    The first difference is reported with its log index and, for a transfer,
    its id. Use a read-only session so the comparison sees one snapshot.
    """
    replay = BookReplay(keep_transfers=True)
    for seq, leaf in _book_entries(session):
        replay.feed_leaf(seq, leaf)
        if replay.failure is not None:
            return BookReport(len(replay.accounts), replay.count, replay.failure)
    accounts = session.execute(select(AccountRow).order_by(AccountRow.code)).scalars().all()
    stored_codes = set()
    for row in accounts:
        stored_codes.add(row.code)
        acct = replay.accounts.get(row.code)
        if acct is None:
            return BookReport(
                len(replay.accounts),
                replay.count,
                BookFailure("ACCOUNT_NOT_LOGGED", None, f"account {row.code!r} is not in the log"),
            )
        why = _account_mismatch(row, acct)
        if why:
            return BookReport(
                len(replay.accounts),
                replay.count,
                BookFailure("ACCOUNT_MISMATCH", acct.seq, f"account {row.code!r}: {why}"),
            )
    for code, acct in replay.accounts.items():
        if code not in stored_codes:
            return BookReport(
                len(replay.accounts),
                replay.count,
                BookFailure("ACCOUNT_MISSING", acct.seq, f"logged account {code!r} has no row"),
            )
    rows = session.execute(
        select(TransferRow).order_by(TransferRow.log_seq).execution_options(yield_per=_BATCH)
    ).scalars()
    logged = iter(replay.transfers)
    pending = next(logged, None)
    failure: BookFailure | None = None
    for transfer in rows:
        seq = int(transfer.log_seq)
        if pending is not None and pending.seq < seq:
            failure = BookFailure(
                "TRANSFER_MISSING",
                pending.seq,
                f"logged transfer {pending.body.get('id')!r} has no row",
                str(pending.body.get("id")),
            )
            break
        if pending is None or pending.seq > seq:
            failure = BookFailure(
                "TRANSFER_NOT_LOGGED",
                seq,
                f"transfer {transfer.id!r} points at log entry {seq}, not its transfer.posted",
                transfer.id,
            )
            break
        why = _transfer_mismatch(transfer, pending.body)
        if why:
            failure = BookFailure(
                "TRANSFER_MISMATCH", seq, f"transfer {transfer.id!r}: {why}", transfer.id
            )
            break
        pending = next(logged, None)
    if failure is None and pending is not None:
        failure = BookFailure(
            "TRANSFER_MISSING",
            pending.seq,
            f"logged transfer {pending.body.get('id')!r} has no row",
            str(pending.body.get("id")),
        )
    return BookReport(len(replay.accounts), replay.count, failure, replay.balances())


def book_statement(session: Session) -> list[dict[str, Any]]:
    """The book as the operator states it: per account, balance and transfer count from rows.

    Written into exports so the offline audit can hold the stated book against
    the log (``BOOK_STATEMENT_MISMATCH``).
    """
    counts: dict[str, int] = {}
    for column in (TransferRow.debit_account, TransferRow.credit_account):
        for code, n in session.execute(select(column, func.count()).group_by(column)):
            counts[code] = counts.get(code, 0) + int(n)
    return [
        {
            "account": row.account,
            "balance": row.balance.amount,
            "currency": row.balance.currency,
            "transfers": counts.get(row.account, 0),
        }
        for row in trial_balance(session).rows
    ]
