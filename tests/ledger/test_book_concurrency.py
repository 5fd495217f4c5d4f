"""Concurrent retries and overdraft races on both databases."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ledger import (
    AccountKind,
    Money,
    Transfer,
    TransferRejected,
    TransferRequest,
    balance,
    open_account,
    post_transfer,
)
from ledger._book_models import TransferRow
from ledger._models import LogEntryRow

THREADS = 8


def _race(worker: Callable[[int], Any]) -> tuple[list[Any], list[BaseException]]:
    """Run ``worker(i)`` in THREADS threads released together; collect results and errors."""
    barrier = threading.Barrier(THREADS)
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        try:
            out = worker(i)
            with lock:
                results.append(out)
        except BaseException as exc:  # noqa: BLE001 - sorted by the caller
            with lock:
                errors.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return results, errors


def _setup(sessions: sessionmaker[Session], cash: int) -> None:
    with sessions() as s, s.begin():
        open_account(s, "cash", "Cash", AccountKind.ASSET, "CNY", allow_negative=False)
        open_account(s, "equity", "Equity", AccountKind.EQUITY, "CNY")
        open_account(s, "fees", "Fees", AccountKind.EXPENSE, "CNY")
        if cash:
            post_transfer(s, TransferRequest("seed", "cash", "equity", Money(cash, "CNY")))


def _count(sessions: sessionmaker[Session], model: Any, **where: Any) -> int:
    with sessions() as s:
        stmt = select(func.count()).select_from(model).filter_by(**where)
        return int(s.execute(stmt).scalar_one())


def test_concurrent_retries_post_once(sessions: sessionmaker[Session]) -> None:
    """Eight simultaneous retries of one request post one transfer and one log entry."""
    _setup(sessions, 0)
    req = TransferRequest("dup", "cash", "equity", Money(42, "CNY"), {"try": "same"})

    def worker(_: int) -> Transfer:
        with sessions() as s, s.begin():
            return post_transfer(s, req)

    results, errors = _race(worker)

    assert errors == []
    assert len(results) == THREADS and all(r == results[0] for r in results)
    assert _count(sessions, TransferRow) == 1
    assert _count(sessions, LogEntryRow, kind="transfer.posted") == 1
    with sessions() as s:
        assert balance(s, "cash") == Money(42, "CNY")


def test_concurrent_conflicting_retries(sessions: sessionmaker[Session]) -> None:
    """Simultaneous requests with one id and different amounts: one posts, the rest conflict."""
    _setup(sessions, 0)

    def worker(i: int) -> Transfer:
        with sessions() as s, s.begin():
            return post_transfer(s, TransferRequest("dup", "cash", "equity", Money(i + 1, "CNY")))

    results, errors = _race(worker)

    assert len(results) == 1
    assert len(errors) == THREADS - 1
    assert all(isinstance(e, TransferRejected) and e.code == "IDEMPOTENCY_CONFLICT" for e in errors)
    assert _count(sessions, LogEntryRow, kind="transfer.posted") == 1
    with sessions() as s:
        assert balance(s, "cash") == results[0].amount


def test_concurrent_withdrawals_never_overdraw(sessions: sessionmaker[Session]) -> None:
    """Eight withdrawals of 30 from 100 at once: exactly three post, cash ends at 10."""
    _setup(sessions, 100)

    def worker(i: int) -> Transfer:
        with sessions() as s, s.begin():
            return post_transfer(s, TransferRequest(f"w{i}", "fees", "cash", Money(30, "CNY")))

    results, errors = _race(worker)

    assert len(results) == 3
    assert len(errors) == THREADS - 3
    assert all(isinstance(e, TransferRejected) and e.code == "INSUFFICIENT_FUNDS" for e in errors)
    with sessions() as s:
        assert balance(s, "cash") == Money(10, "CNY")
    assert _count(sessions, LogEntryRow, kind="transfer.posted") == 4
