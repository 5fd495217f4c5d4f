"""Property tests: any mix of valid and invalid requests keeps the book exact.

For any sequence of transfer requests (retries, conflicting retries, unknown
accounts, wrong currencies, overdrafts of no-negative accounts, linked batches)
on both databases: every outcome matches a plain-Python model, Σdebits = Σcredits
per currency, every balance equals the sum of its postings, retries never post
twice, and a refused request changes neither the transfers nor the log.

The database is not emptied between Hypothesis examples, so each example works
under its own fresh account prefix and compares counts as differences.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import given as hyp_given
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
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
    post_linked,
    post_transfer,
    transfers_of,
    trial_balance,
)
from ledger._book_models import TransferRow
from ledger._models import LogEntryRow

# name: (kind, currency, allow_negative)
ACCOUNTS: dict[str, tuple[AccountKind, str, bool]] = {
    "cash": (AccountKind.ASSET, "CNY", False),
    "equity": (AccountKind.EQUITY, "CNY", True),
    "fees": (AccountKind.EXPENSE, "CNY", True),
    "payable": (AccountKind.LIABILITY, "CNY", False),
    "usd-cash": (AccountKind.ASSET, "USD", True),
    "usd-equity": (AccountKind.EQUITY, "USD", True),
}
NAMES = [*ACCOUNTS, "missing"]
PROPERTY_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Req:
    """A request in account *names*; the prefix turns it into a TransferRequest."""

    id: str
    debit: str
    credit: str
    amount: int
    currency: str
    note: int

    def build(self, prefix: str) -> TransferRequest:
        meta = {"note": self.note} if self.note else {}
        return TransferRequest(
            f"{prefix}:{self.id}",
            f"{prefix}:{self.debit}",
            f"{prefix}:{self.credit}",
            Money(self.amount, self.currency),
            meta,
        )


_any_request_st = st.builds(
    Req,
    id=st.sampled_from([f"t{i}" for i in range(6)]),
    debit=st.sampled_from(NAMES),
    credit=st.sampled_from(NAMES),
    amount=st.one_of(st.integers(1, 400), st.sampled_from([0, -3])),
    currency=st.sampled_from(["CNY", "USD"]),
    note=st.integers(0, 2),
)
_CNY = [n for n, (_, c, _) in ACCOUNTS.items() if c == "CNY"]
_USD = [n for n, (_, c, _) in ACCOUNTS.items() if c == "USD"]
_valid_request_st = st.builds(
    lambda i, pair, amount, note: Req(f"t{i}", pair[0], pair[1], amount, pair[2], note),
    i=st.integers(0, 5),
    pair=st.one_of(
        st.permutations(_CNY).map(lambda p: (p[0], p[1], "CNY")),
        st.permutations(_USD).map(lambda p: (p[0], p[1], "USD")),
    ),
    amount=st.integers(1, 300),
    note=st.integers(0, 2),
)
# Mostly well-formed requests (they reach the idempotency and funds rules), some anything.
requests_st = st.one_of(_valid_request_st, _valid_request_st, _any_request_st)
# An operation: a single request, a linked batch, or ("retry", k) repeating an earlier one.
ops_st = st.lists(
    st.one_of(
        requests_st,
        st.lists(requests_st, min_size=1, max_size=3),
        st.tuples(st.just("retry"), st.integers(0, 20)),
    ),
    min_size=1,
    max_size=14,
)


@dataclass
class Model:
    """What the book should hold: posted bodies by id, and balances by account name."""

    posted: dict[str, tuple[Req, str | None]] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACCOUNTS, 0))

    def predict(self, reqs: Sequence[Req], link: str | None) -> str | None:
        """The error code the book must answer, or None when the batch posts (or replays)."""
        ids = [r.id for r in reqs]
        if link is not None and len(set(ids)) != len(ids):
            return "INVALID_BATCH"
        for r in reqs:
            if r.debit == r.credit:
                return "SAME_ACCOUNT"
            if r.amount <= 0:
                return "INVALID_AMOUNT"
        if any(r.id in self.posted for r in reqs):
            same = all(self.posted.get(r.id) == (r, link) for r in reqs)
            return None if same else "IDEMPOTENCY_CONFLICT"
        for r in reqs:
            for name in (r.debit, r.credit):
                if name not in ACCOUNTS:
                    return "UNKNOWN_ACCOUNT"
                if ACCOUNTS[name][1] != r.currency:
                    return "CURRENCY_MISMATCH"
        running = dict(self.balances)
        for r in reqs:
            for name, debited in ((r.debit, True), (r.credit, False)):
                kind, _, allow_negative = ACCOUNTS[name]
                grows = debited == kind.debit_normal
                running[name] += r.amount if grows else -r.amount
                if not allow_negative and running[name] < 0:
                    return "INSUFFICIENT_FUNDS"
        return None

    def is_replay(self, reqs: Sequence[Req]) -> bool:
        return any(r.id in self.posted for r in reqs)

    def apply(self, reqs: Sequence[Req], link: str | None) -> None:
        for r in reqs:
            self.posted[r.id] = (r, link)
            for name, debited in ((r.debit, True), (r.credit, False)):
                grows = debited == ACCOUNTS[name][0].debit_normal
                self.balances[name] += r.amount if grows else -r.amount


class Book:
    """One example's slice of the database, seen through the public API."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.prefix = uuid.uuid4().hex[:10]
        with sessions() as s, s.begin():
            for name, (kind, currency, allow_negative) in ACCOUNTS.items():
                code = f"{self.prefix}:{name}"
                open_account(s, code, name, kind, currency, allow_negative=allow_negative)

    def counts(self) -> tuple[int, int]:
        """(transfers under this prefix, log entries in total)."""
        with self.sessions() as s:
            transfers = s.execute(
                select(func.count())
                .select_from(TransferRow)
                .where(TransferRow.id.like(f"{self.prefix}:%"))
            ).scalar_one()
            entries = s.execute(select(func.count()).select_from(LogEntryRow)).scalar_one()
        return int(transfers), int(entries)

    def submit(self, reqs: Sequence[Req], link: str | None) -> list[Transfer] | TransferRejected:
        built = [r.build(self.prefix) for r in reqs]
        try:
            with self.sessions() as s, s.begin():
                if link is None:
                    return [post_transfer(s, built[0])]
                return post_linked(s, built, link_id=f"{self.prefix}:{link}")
        except TransferRejected as exc:
            return exc

    def check(self, model: Model) -> None:
        """Σdebits = Σcredits; balances = model = sum of postings; one row per posted id."""
        with self.sessions() as s:
            tb = trial_balance(s)
            assert tb.balanced, (tb.debits, tb.credits)
            for name, (kind, currency, _) in ACCOUNTS.items():
                code = f"{self.prefix}:{name}"
                got = balance(s, code)
                assert got == Money(model.balances[name], currency), name
                postings = transfers_of(s, code)
                signed = sum(
                    (
                        t.amount.amount
                        if (t.debit == code) == kind.debit_normal
                        else -t.amount.amount
                    )
                    for t in postings
                )
                assert got.amount == signed, name
        assert self.counts()[0] == len(model.posted)


def _run(book: Book, model: Model, reqs: Sequence[Req], link: str | None) -> None:
    """Submit one operation and check its outcome and footprint against the model."""
    expected = model.predict(reqs, link)
    replay = model.is_replay(reqs)
    before = book.counts()

    outcome = book.submit(reqs, link)

    after = book.counts()
    event(f"outcome: {expected or ('replay' if replay else 'posted')}")
    if expected is not None:
        assert isinstance(outcome, TransferRejected), (expected, outcome)
        assert outcome.code == expected
        assert after == before, "a refused request changed the database"
    elif replay:
        assert not isinstance(outcome, TransferRejected), outcome
        assert [t.id for t in outcome] == [r.build(book.prefix).id for r in reqs]
        assert after == before, "a retry posted again"
    else:
        assert not isinstance(outcome, TransferRejected), outcome
        assert after == (before[0] + len(reqs), before[1] + len(reqs))
        model.apply(reqs, link)


@PROPERTY_SETTINGS
@hyp_given(ops=ops_st)
def test_any_request_sequence_keeps_book_exact(
    sessions: sessionmaker[Session], ops: list[Req | list[Req] | tuple[str, int]]
) -> None:
    """Random singles and linked batches: outcomes match the model and every invariant holds."""
    book, model = Book(sessions), Model()
    done: list[tuple[list[Req], str | None]] = []

    for i, op in enumerate(ops):
        if isinstance(op, tuple):
            if not done:
                continue
            reqs, link = done[op[1] % len(done)]
        elif isinstance(op, Req):
            reqs, link = [op], None
        else:
            reqs, link = op, f"b{i % 3}"
        _run(book, model, reqs, link)
        done.append((reqs, link))

    book.check(model)


@pytest.mark.slow
def test_stateful_book(sessions: sessionmaker[Session]) -> None:
    """A Hypothesis state machine: posts, exact retries and altered retries, checked every step."""

    class BookMachine(RuleBasedStateMachine):
        posted = Bundle("posted")

        def __init__(self) -> None:
            super().__init__()
            self.book, self.model = Book(sessions), Model()

        @rule(target=posted, req=requests_st)
        def post(self, req: Req) -> Req:
            _run(self.book, self.model, [req], None)
            return req

        @rule(reqs=st.lists(requests_st, min_size=1, max_size=3), link=st.sampled_from("xy"))
        def post_batch(self, reqs: list[Req], link: str) -> None:
            _run(self.book, self.model, reqs, link)

        @rule(req=posted)
        def retry(self, req: Req) -> None:
            _run(self.book, self.model, [req], None)

        @rule(req=posted, delta=st.integers(1, 50))
        def retry_altered(self, req: Req, delta: int) -> None:
            altered = Req(req.id, req.debit, req.credit, req.amount + delta, req.currency, req.note)
            _run(self.book, self.model, [altered], None)

        @invariant()
        def book_is_exact(self) -> None:
            self.book.check(self.model)

    run_state_machine_as_test(
        BookMachine,
        settings=settings(
            max_examples=12,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
