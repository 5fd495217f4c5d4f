"""Bulk posting: what ``post_many`` writes is what ``post_transfer`` writes, all or nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ledger import (
    AccountKind,
    BulkPosting,
    Money,
    TransferRejected,
    TransferRequest,
    audit_export,
    balance,
    canonical_json,
    export_log,
    get_transfer,
    make_vkey,
    open_account,
    post_many,
    post_transfer,
    reconcile_book,
    sign_checkpoint,
    trial_balance,
    verify_log,
)
from ledger._book_models import TransferRow
from ledger._bulk import _body_bytes
from ledger._log import leaf_bytes
from ledger._models import LogEntryRow, LogHeadRow, TreeNodeRow
from ledger._transfers import _body

ORIGIN = "fedgate.test/bulk"
KEY = Ed25519PrivateKey.from_private_bytes(b"\x0c" * 32)


def _cny(n: int) -> Money:
    return Money(n, "CNY")


def _setup(sessions: sessionmaker[Session]) -> None:
    with sessions() as s, s.begin():
        open_account(s, "cash", "Cash", AccountKind.ASSET, "CNY", allow_negative=False)
        open_account(s, "equity", "Equity", AccountKind.EQUITY, "CNY")
        open_account(s, "receivable", "Interest receivable", AccountKind.ASSET, "CNY")
        open_account(s, "income", "Interest income", AccountKind.INCOME, "CNY")
        open_account(s, "usd-cash", "USD cash", AccountKind.ASSET, "USD")


def _interest(n: int, start: int = 0, amount: int = 0) -> list[TransferRequest]:
    return [
        TransferRequest(
            f"interest:L-{i}:2026-01",
            "receivable",
            "income",
            _cny(amount or 100 + i),
            {"loan": f"L-{i}", "period": "2026-01", "note": "é\u2028"},
        )
        for i in range(start, start + n)
    ]


def _state(sessions: sessionmaker[Session]) -> tuple[int, int, int, int, bytes]:
    """(transfers, log entries, tree nodes, head size, head root)."""
    with sessions() as s:
        head = s.get(LogHeadRow, 1)
        return (
            s.execute(select(func.count()).select_from(TransferRow)).scalar_one(),
            s.execute(select(func.count()).select_from(LogEntryRow)).scalar_one(),
            s.execute(select(func.count()).select_from(TreeNodeRow)).scalar_one(),
            head.size if head else 0,
            head.root if head else b"",
        )


def test_spliced_body_is_the_canonical_body() -> None:
    """The bulk path's spliced bytes equal canonical_json of the book's body, link or none."""
    req = TransferRequest(
        "a:b/c@d#e+f-g.h", "x:1", "y_2", _cny(2**53 - 1), {"z": [1, "é"], "a": None}
    )
    meta = json.loads(canonical_json(dict(req.metadata)))

    for link in (None, "interest:2026-01"):
        raw = b"null" if link is None else json.dumps(link).encode()
        assert _body_bytes(req, canonical_json(meta), raw) == canonical_json(_body(req, meta, link))


def test_bulk_rows_and_leaves_match_single_postings(sessions: sessionmaker[Session]) -> None:
    """Each bulk transfer is stored and logged exactly as post_transfer/post_linked would."""
    _setup(sessions)
    batch = _interest(7)

    with sessions() as s, s.begin():
        result = post_many(s, batch, link_id="interest:2026-01")

    assert result == BulkPosting(posted=7, repeated=0, first_seq=result.first_seq)
    with sessions() as s:
        for k, req in enumerate(batch):
            got = get_transfer(s, req.id)
            assert got is not None
            body = _body(req, dict(req.metadata), "interest:2026-01")
            assert got.log_seq == result.first_seq + k
            assert (got.debit, got.credit, got.amount, got.link_id) == (
                req.debit,
                req.credit,
                req.amount,
                "interest:2026-01",
            )
            assert got.metadata == dict(req.metadata)
            assert got.request_digest == hashlib.sha256(canonical_json(body)).digest()
            entry = s.get(LogEntryRow, got.log_seq)
            assert entry is not None and entry.kind == "transfer.posted"
            stamp = json.loads(entry.leaf_data)["at"]
            assert entry.leaf_data == leaf_bytes(got.log_seq, "transfer.posted", stamp, body)
        assert balance(s, "income") == _cny(sum(100 + i for i in range(7)))
        assert trial_balance(s).balanced
        assert reconcile_book(s).ok
        assert verify_log(s).ok


def test_bulk_entries_pass_the_offline_audit(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Bulk-posted entries mixed with single postings: export, audit and book statement agree."""
    _setup(sessions)
    with sessions() as s, s.begin():
        post_transfer(s, TransferRequest("seed", "cash", "equity", _cny(10_000)))
        post_many(s, _interest(300), link_id="interest:2026-01")
        sign_checkpoint(s, KEY, ORIGIN)
    with sessions() as s, s.begin():
        post_many(
            s, [TransferRequest(f"pay:{i}", "cash", "receivable", _cny(5)) for i in range(33)]
        )
        post_transfer(s, TransferRequest("after", "cash", "equity", _cny(1)))
        sign_checkpoint(s, KEY, ORIGIN)
    path = tmp_path / "log.jsonl"
    with sessions() as s:
        export_log(s, path, KEY, origin=ORIGIN)
        assert reconcile_book(s).ok

    report = audit_export(path, vkey=make_vkey(ORIGIN, KEY.public_key()), canonical=True)

    assert report.ok, report.failure
    assert report.checkpoints_verified == 2


def test_repeat_is_a_no_op_and_mixed_batch_posts_only_new(
    sessions: sessionmaker[Session],
) -> None:
    """Same batch again writes nothing; old ids with new ones post only the new ones."""
    _setup(sessions)
    with sessions() as s, s.begin():
        post_many(s, _interest(5), link_id="interest:2026-01")
    before = _state(sessions)

    with sessions() as s, s.begin():
        again = post_many(s, _interest(5), link_id="interest:2026-01")
    assert again == BulkPosting(posted=0, repeated=5, first_seq=None)
    assert _state(sessions) == before

    with sessions() as s, s.begin():
        mixed = post_many(s, _interest(8), link_id="interest:2026-01")
    assert (mixed.posted, mixed.repeated, mixed.first_seq) == (3, 5, before[3])
    with sessions() as s:
        assert s.execute(select(func.count()).select_from(TransferRow)).scalar_one() == 8
        assert reconcile_book(s).ok


@pytest.mark.parametrize(
    "change",
    ["amount", "link", "metadata"],
)
def test_conflicting_repeat_refuses_the_whole_batch(
    sessions: sessionmaker[Session], change: str
) -> None:
    """An id already posted with another body refuses the batch; nothing new is written."""
    _setup(sessions)
    with sessions() as s, s.begin():
        post_many(s, _interest(3), link_id="interest:2026-01")
    before = _state(sessions)
    batch = _interest(6, amount=0)
    link = "interest:2026-01"
    if change == "amount":
        batch[1] = TransferRequest(batch[1].id, "receivable", "income", _cny(1), batch[1].metadata)
    elif change == "link":
        link = "interest:other"
    else:
        batch[1] = TransferRequest(batch[1].id, "receivable", "income", batch[1].amount, {"x": 1})

    with pytest.raises(TransferRejected) as info, sessions() as s, s.begin():
        post_many(s, batch, link_id=link)

    assert info.value.code == "IDEMPOTENCY_CONFLICT"
    assert info.value.transfer_id == ("interest:L-0:2026-01" if change == "link" else batch[1].id)
    assert _state(sessions) == before


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (TransferRequest("bad", "receivable", "nowhere", _cny(5)), "UNKNOWN_ACCOUNT"),
        (TransferRequest("bad", "income", "income", _cny(5)), "SAME_ACCOUNT"),
        (TransferRequest("bad", "cash", "income", Money(5, "USD")), "INVALID_BATCH"),
        (TransferRequest("bad", "usd-cash", "income", _cny(5)), "CURRENCY_MISMATCH"),
        (TransferRequest("bad", "receivable", "cash", _cny(5)), "INSUFFICIENT_FUNDS"),
        (TransferRequest("bad", "receivable", "income", _cny(0)), "INVALID_AMOUNT"),
        (TransferRequest("bad id", "receivable", "income", _cny(5)), "INVALID_ID"),
        (
            TransferRequest("bad", "receivable", "income", _cny(5), {"f": float("nan")}),
            "INVALID_METADATA",
        ),
        (TransferRequest("interest:L-0:2026-01", "cash", "equity", _cny(5)), "INVALID_BATCH"),
    ],
)
def test_one_bad_transfer_refuses_the_batch_and_changes_nothing(
    sessions: sessionmaker[Session], bad: TransferRequest, code: str
) -> None:
    """A bad transfer in the middle of 2,000 refuses all of them, even if the caller commits."""
    _setup(sessions)
    with sessions() as s, s.begin():
        post_transfer(s, TransferRequest("seed", "cash", "equity", _cny(3)))
    before = _state(sessions)
    batch = [*_interest(1000), bad, *_interest(999, start=1000)]

    with sessions() as s, s.begin(), pytest.raises(TransferRejected) as info:
        post_many(s, batch)
        # the caller goes on and commits other work: the refused batch left nothing
    assert info.value.code == code
    assert _state(sessions) == before
    with sessions() as s:
        assert balance(s, "cash") == _cny(3)
        assert reconcile_book(s).ok and verify_log(s).ok


def test_no_negative_account_checked_at_every_step(sessions: sessionmaker[Session]) -> None:
    """Cash may reach zero but never dip below it mid-batch, even if the batch ends positive."""
    _setup(sessions)
    ok = [
        TransferRequest("in", "cash", "equity", _cny(10)),
        TransferRequest("out", "receivable", "cash", _cny(10)),
    ]
    dip = [
        TransferRequest("out2", "receivable", "cash", _cny(1)),
        TransferRequest("in2", "cash", "equity", _cny(10)),
    ]
    with sessions() as s, s.begin():
        post_many(s, ok)
    with pytest.raises(TransferRejected) as info, sessions() as s, s.begin():
        post_many(s, dip)

    assert (info.value.code, info.value.transfer_id) == ("INSUFFICIENT_FUNDS", "out2")
    with sessions() as s:
        assert balance(s, "cash") == _cny(0)


@pytest.mark.parametrize("link", ["", "bad link", 7])
def test_invalid_batches(sessions: sessionmaker[Session], link: object) -> None:
    """Empty batch and a bad link id are INVALID_BATCH."""
    _setup(sessions)
    with pytest.raises(TransferRejected) as empty, sessions() as s, s.begin():
        post_many(s, [])
    with pytest.raises(TransferRejected) as bad, sessions() as s, s.begin():
        post_many(s, _interest(2), link_id=link)  # type: ignore[arg-type]

    assert empty.value.code == bad.value.code == "INVALID_BATCH"
