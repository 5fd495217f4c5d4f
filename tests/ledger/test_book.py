"""The book: accounts, transfers, idempotency, linked batches, no-negative accounts."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

import ledger._book
from ledger import (
    AccountKind,
    AccountRejected,
    Money,
    TransferRejected,
    TransferRequest,
    append_entry,
    balance,
    canonical_json,
    get_account,
    get_transfer,
    list_accounts,
    open_account,
    post_linked,
    post_transfer,
    transfers_of,
    trial_balance,
)
from ledger._book_models import AccountRow, TransferRow
from ledger._models import LogEntryRow


def _cny(n: int) -> Money:
    return Money(n, "CNY")


def _setup(sessions: sessionmaker[Session]) -> None:
    """Open cash and an ISV payable (both no-negative), equity, fee expense and a USD account."""
    with sessions() as s, s.begin():
        open_account(s, "cash", "Cash", AccountKind.ASSET, "CNY", allow_negative=False)
        open_account(s, "equity", "Equity", AccountKind.EQUITY, "CNY")
        open_account(s, "fees", "Fee expense", AccountKind.EXPENSE, "CNY")
        open_account(s, "isv:a:payable", "ISV A", "liability", "CNY", allow_negative=False)
        open_account(s, "usd-cash", "USD cash", AccountKind.ASSET, "USD")


def _counts(sessions: sessionmaker[Session]) -> tuple[int, int, int]:
    """(accounts, transfers, log entries)."""
    with sessions() as s:
        return (
            s.execute(select(func.count()).select_from(AccountRow)).scalar_one(),
            s.execute(select(func.count()).select_from(TransferRow)).scalar_one(),
            s.execute(select(func.count()).select_from(LogEntryRow)).scalar_one(),
        )


def _post(sessions: sessionmaker[Session], request: TransferRequest) -> Any:
    with sessions() as s, s.begin():
        return post_transfer(s, request)


def test_open_account_round_trips_and_is_logged(sessions: sessionmaker[Session]) -> None:
    """An opened account reads back as opened, and an account.opened entry is logged."""
    with sessions() as s, s.begin():
        opened = open_account(s, "isv:acme:payable", "Acme", "liability", "CNY")

    with sessions() as s:
        got = get_account(s, "isv:acme:payable")
        entries = s.execute(select(LogEntryRow)).scalars().all()
    assert got == opened
    assert got.kind is AccountKind.LIABILITY and got.allow_negative is True
    assert got.opened_at.tzinfo is not None
    assert [e.kind for e in entries] == ["account.opened"]
    assert json.loads(entries[0].leaf_data)["body"]["code"] == "isv:acme:payable"


@pytest.mark.parametrize(
    ("code", "name", "kind", "currency", "error"),
    [
        ("bad code", "x", "asset", "CNY", "INVALID_ACCOUNT"),
        ("", "x", "asset", "CNY", "INVALID_ACCOUNT"),
        ("ok", "", "asset", "CNY", "INVALID_ACCOUNT"),
        ("ok", "x", "revenue", "CNY", "INVALID_ACCOUNT"),
        ("ok", "x", "asset", "cny", "INVALID_ACCOUNT"),
        ("ok", "x", "asset", "CNY\n", "INVALID_ACCOUNT"),
        ("cash", "again", "asset", "CNY", "DUPLICATE_ACCOUNT"),
    ],
)
def test_open_account_refusals_write_nothing(
    sessions: sessionmaker[Session], code: str, name: str, kind: str, currency: str, error: str
) -> None:
    """Bad account definitions and duplicates are refused with a code; nothing is written."""
    _setup(sessions)
    before = _counts(sessions)

    with sessions() as s, s.begin(), pytest.raises(AccountRejected) as info:
        open_account(s, code, name, kind, currency)

    assert info.value.code == error
    assert _counts(sessions) == before


class _AnyCurrency:
    """Stands in for Money in open_account's check, so a bad currency reaches the database."""

    @staticmethod
    def zero(currency: str) -> None:
        """Accept every currency."""


def test_database_refusal_is_not_called_a_duplicate(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row the database refuses for another reason than its key is not DUPLICATE_ACCOUNT."""
    _setup(sessions)
    before = _counts(sessions)
    monkeypatch.setattr(ledger._book, "Money", _AnyCurrency)

    # SQLite fails the CHECK (IntegrityError), PostgreSQL the varchar(3) (DataError).
    with pytest.raises(DBAPIError) as info, sessions() as s, s.begin():
        open_account(s, "new", "New", "asset", "CNYX")

    assert not isinstance(info.value, AccountRejected)
    assert _counts(sessions) == before


def test_unknown_account_balance(sessions: sessionmaker[Session]) -> None:
    """Asking for a missing account's balance raises UNKNOWN_ACCOUNT."""
    with sessions() as s, pytest.raises(AccountRejected) as info:
        balance(s, "nope")
    assert info.value.code == "UNKNOWN_ACCOUNT"


def test_post_transfer_moves_balances_and_logs(sessions: sessionmaker[Session]) -> None:
    """A transfer changes both balances in their normal direction and logs transfer.posted."""
    _setup(sessions)
    req = TransferRequest("t1", "cash", "equity", _cny(10_000), {"note": "capital"})

    t = _post(sessions, req)

    with sessions() as s:
        assert balance(s, "cash") == _cny(10_000)
        assert balance(s, "equity") == _cny(10_000)
        entry = s.get(LogEntryRow, t.log_seq)
    assert entry is not None and entry.kind == "transfer.posted"
    body = json.loads(entry.leaf_data)["body"]
    assert body == {
        "id": "t1",
        "debit": "cash",
        "credit": "equity",
        "amount": 10_000,
        "currency": "CNY",
        "metadata": {"note": "capital"},
        "link": None,
    }
    assert t.request_digest == hashlib.sha256(canonical_json(body)).digest()
    assert t.posted_at.tzinfo is not None


def test_retry_same_body_returns_original(sessions: sessionmaker[Session]) -> None:
    """Posting the same id and body again returns the original and writes nothing."""
    _setup(sessions)
    req = TransferRequest("t1", "cash", "equity", _cny(500), {"job": 7})
    first = _post(sessions, req)
    before = _counts(sessions)

    again = _post(sessions, TransferRequest("t1", "cash", "equity", _cny(500), {"job": 7}))

    assert again == first
    assert _counts(sessions) == before
    with sessions() as s:
        assert balance(s, "cash") == _cny(500)
        assert get_transfer(s, "t1") == first


@pytest.mark.parametrize(
    "changed",
    [
        TransferRequest("t1", "cash", "equity", _cny(501), {"job": 7}),
        TransferRequest("t1", "fees", "equity", _cny(500), {"job": 7}),
        TransferRequest("t1", "cash", "equity", _cny(500), {"job": 8}),
        TransferRequest("t1", "cash", "equity", _cny(500)),
        TransferRequest("t1", "usd-cash", "equity", Money(500, "USD"), {"job": 7}),
    ],
)
def test_retry_different_body_conflicts(
    sessions: sessionmaker[Session], changed: TransferRequest
) -> None:
    """The same id with any other amount, account, metadata or currency is IDEMPOTENCY_CONFLICT."""
    _setup(sessions)
    _post(sessions, TransferRequest("t1", "cash", "equity", _cny(500), {"job": 7}))
    before = _counts(sessions)

    with pytest.raises(TransferRejected) as info:
        _post(sessions, changed)

    assert (info.value.code, info.value.transfer_id) == ("IDEMPOTENCY_CONFLICT", "t1")
    assert _counts(sessions) == before


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (TransferRequest("t9", "cash", "nope", _cny(1)), "UNKNOWN_ACCOUNT"),
        (TransferRequest("t9", "nope", "equity", _cny(1)), "UNKNOWN_ACCOUNT"),
        (TransferRequest("t9", "cash", "usd-cash", _cny(1)), "CURRENCY_MISMATCH"),
        (TransferRequest("t9", "cash", "equity", Money(1, "USD")), "CURRENCY_MISMATCH"),
        (TransferRequest("t9", "cash", "equity", _cny(0)), "INVALID_AMOUNT"),
        (TransferRequest("t9", "cash", "equity", _cny(-5)), "INVALID_AMOUNT"),
        (TransferRequest("t9", "cash", "equity", _cny(2**53)), "INVALID_AMOUNT"),
        (TransferRequest("t9", "cash", "equity", 5), "INVALID_AMOUNT"),  # type: ignore[arg-type]
        (TransferRequest("t9", "cash", "cash", _cny(1)), "SAME_ACCOUNT"),
        (TransferRequest("", "cash", "equity", _cny(1)), "INVALID_ID"),
        (TransferRequest("t 9", "cash", "equity", _cny(1)), "INVALID_ID"),
        (TransferRequest("x" * 129, "cash", "equity", _cny(1)), "INVALID_ID"),
        (TransferRequest("t9", "cash", "equity", _cny(1), {"x": float("nan")}), "INVALID_METADATA"),
        (TransferRequest("t9", "cash", "equity", _cny(1), {"x": object()}), "INVALID_METADATA"),
        (TransferRequest("t9", "cash", "equity", _cny(1), {"x": "y" * 9000}), "INVALID_METADATA"),
        (TransferRequest("t9", "equity", "cash", _cny(1)), "INSUFFICIENT_FUNDS"),
        (TransferRequest("t9", "isv:a:payable", "fees", _cny(1)), "INSUFFICIENT_FUNDS"),
    ],
)
def test_rejections_change_nothing(
    sessions: sessionmaker[Session], request_: TransferRequest, error: str
) -> None:
    """Each invalid request is refused with its code; transfers, log and balances are unchanged."""
    _setup(sessions)
    before = _counts(sessions)

    with pytest.raises(TransferRejected) as info:
        _post(sessions, request_)

    assert info.value.code == error
    assert _counts(sessions) == before
    with sessions() as s:
        assert all(r.debits.amount == r.credits.amount == 0 for r in trial_balance(s).rows)


def test_rejection_inside_caller_transaction_keeps_caller_work(
    sessions: sessionmaker[Session],
) -> None:
    """A refused transfer rolls back only itself; the caller's other writes still commit."""
    _setup(sessions)
    before = _counts(sessions)

    with sessions() as s, s.begin():
        append_entry(s, "test.before", {"n": 1})
        with pytest.raises(TransferRejected):
            post_transfer(s, TransferRequest("t9", "equity", "cash", _cny(1)))
        post_transfer(s, TransferRequest("t10", "cash", "equity", _cny(1)))

    assert _counts(sessions) == (before[0], before[1] + 1, before[2] + 2)
    with sessions() as s:
        seqs = s.execute(select(LogEntryRow.seq).order_by(LogEntryRow.seq)).scalars().all()
    assert seqs == list(range(len(seqs)))


def test_no_negative_account_may_reach_zero(sessions: sessionmaker[Session]) -> None:
    """A no-negative account can be drained to exactly zero but not one fen below."""
    _setup(sessions)
    _post(sessions, TransferRequest("in", "cash", "equity", _cny(100)))

    _post(sessions, TransferRequest("out", "fees", "cash", _cny(100)))
    with pytest.raises(TransferRejected) as info:
        _post(sessions, TransferRequest("over", "fees", "cash", _cny(1)))

    assert info.value.code == "INSUFFICIENT_FUNDS"
    with sessions() as s:
        assert balance(s, "cash") == _cny(0)


def test_linked_posts_all_with_consecutive_entries(sessions: sessionmaker[Session]) -> None:
    """A linked batch posts every transfer, with the batch link id and consecutive log seqs."""
    _setup(sessions)
    batch = [
        TransferRequest("l1", "cash", "equity", _cny(300)),
        TransferRequest("l2", "fees", "cash", _cny(200)),
        TransferRequest("l3", "fees", "isv:a:payable", _cny(50)),
    ]

    with sessions() as s, s.begin():
        posted = post_linked(s, batch)

    assert [t.link_id for t in posted] == ["l1"] * 3
    assert [t.log_seq for t in posted] == list(range(posted[0].log_seq, posted[0].log_seq + 3))
    with sessions() as s:
        assert balance(s, "cash") == _cny(100)
        assert [t.id for t in transfers_of(s, "cash")] == ["l1", "l2"]


def test_linked_all_or_nothing(sessions: sessionmaker[Session]) -> None:
    """If one transfer of a batch is refused, none is stored and no log entry remains."""
    _setup(sessions)
    before = _counts(sessions)
    batch = [
        TransferRequest("l1", "cash", "equity", _cny(300)),
        TransferRequest("l2", "fees", "cash", _cny(400)),  # overdraws cash after l1
    ]

    with pytest.raises(TransferRejected) as info, sessions() as s, s.begin():
        post_linked(s, batch)

    assert (info.value.code, info.value.transfer_id) == ("INSUFFICIENT_FUNDS", "l2")
    assert _counts(sessions) == before


def test_linked_checks_every_step_in_order(sessions: sessionmaker[Session]) -> None:
    """A no-negative account may not dip below zero mid-batch even if the batch ends positive."""
    _setup(sessions)
    batch = [
        TransferRequest("l1", "fees", "cash", _cny(100)),
        TransferRequest("l2", "cash", "equity", _cny(300)),
    ]

    with pytest.raises(TransferRejected) as info, sessions() as s, s.begin():
        post_linked(s, batch)

    assert (info.value.code, info.value.transfer_id) == ("INSUFFICIENT_FUNDS", "l1")


def test_linked_retry_and_conflicts(sessions: sessionmaker[Session]) -> None:
    """A repeated batch returns the originals; a batch reusing one posted id conflicts."""
    _setup(sessions)
    batch = [
        TransferRequest("l1", "cash", "equity", _cny(300)),
        TransferRequest("l2", "fees", "cash", _cny(100)),
    ]
    with sessions() as s, s.begin():
        first = post_linked(s, batch, link_id="batch-1")
    before = _counts(sessions)

    with sessions() as s, s.begin():
        again = post_linked(s, batch, link_id="batch-1")
    with pytest.raises(TransferRejected) as mixed, sessions() as s, s.begin():
        post_linked(s, [*batch, TransferRequest("l3", "fees", "cash", _cny(1))], link_id="batch-1")
    with pytest.raises(TransferRejected) as single, sessions() as s, s.begin():
        post_transfer(s, batch[0])  # same body but not linked: a different request

    assert again == first
    assert mixed.value.code == single.value.code == "IDEMPOTENCY_CONFLICT"
    assert mixed.value.transfer_id == "l3"
    assert "'l3' is new" in str(mixed.value) and "'l1', 'l2'" in str(mixed.value)
    assert "already used for a different request" in str(single.value)
    assert _counts(sessions) == before


@pytest.mark.parametrize(
    "batch",
    [
        [],
        [TransferRequest("d", "cash", "equity", _cny(1))] * 2,
    ],
)
def test_linked_invalid_batch(
    sessions: sessionmaker[Session], batch: list[TransferRequest]
) -> None:
    """An empty batch or repeated ids are INVALID_BATCH."""
    _setup(sessions)

    with pytest.raises(TransferRejected) as info, sessions() as s, s.begin():
        post_linked(s, batch)

    assert info.value.code == "INVALID_BATCH"


def test_trial_balance_balances(sessions: sessionmaker[Session]) -> None:
    """After postings in two currencies, Σdebits = Σcredits per currency and rows match balances."""
    _setup(sessions)
    with sessions() as s, s.begin():
        open_account(s, "usd-equity", "USD equity", AccountKind.EQUITY, "USD")
        post_transfer(s, TransferRequest("a", "cash", "equity", _cny(1000)))
        post_transfer(s, TransferRequest("b", "fees", "cash", _cny(300)))
        post_transfer(s, TransferRequest("c", "usd-cash", "usd-equity", Money(70, "USD")))

    with sessions() as s:
        tb = trial_balance(s)
        rows = {r.account: r for r in tb.rows}
        balances = {code: balance(s, code) for code in rows}
        codes = [a.code for a in list_accounts(s)]

    assert tb.balanced
    assert tb.debits == {"CNY": 1300, "USD": 70}
    assert tb.credits == {"CNY": 1300, "USD": 70}
    assert balances == {code: r.balance for code, r in rows.items()}
    assert rows["cash"].balance == _cny(700)
    assert rows["fees"].balance == _cny(300)
    assert codes == sorted(rows)


def _raw_transfer(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "raw",
        "debit_account": "cash",
        "credit_account": "equity",
        "amount": 1,
        "currency": "CNY",
        "link_id": None,
        "metadata": {},
        "request_digest": b"\0" * 32,
        "log_seq": 0,
        "posted_at": datetime.now(UTC),
    }
    row.update(overrides)
    return row


@pytest.mark.parametrize(
    "overrides",
    [
        {"amount": 0},
        {"amount": -1},
        {"credit_account": "cash"},
        {"credit_account": "usd-cash"},
        {"currency": "USD"},
        {"log_seq": 10_000},
    ],
)
def test_database_refuses_bad_rows(
    sessions: sessionmaker[Session], overrides: dict[str, Any]
) -> None:
    """Rows that bypass the service still hit CHECK / foreign-key guards in the database."""
    _setup(sessions)

    with pytest.raises(IntegrityError), sessions() as s, s.begin():
        s.execute(insert(TransferRow.__table__).values(**_raw_transfer(**overrides)))


def test_transfers_are_append_only(sessions: sessionmaker[Session]) -> None:
    """A trigger refuses UPDATE and DELETE on posted transfers."""
    _setup(sessions)
    _post(sessions, TransferRequest("t1", "cash", "equity", _cny(5)))

    with pytest.raises(DBAPIError), sessions() as s, s.begin():
        s.execute(update(TransferRow).where(TransferRow.id == "t1").values(amount=6))
    with pytest.raises(DBAPIError), sessions() as s, s.begin():
        s.execute(delete(TransferRow).where(TransferRow.id == "t1"))

    with sessions() as s:
        assert balance(s, "cash") == _cny(5)
