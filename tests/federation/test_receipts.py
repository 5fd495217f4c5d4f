"""Usage receipts: signing, verification, and their ledger entry (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from federation import ReceiptInvalid
from federation.receipt_ledger import DATA_USED, ExpectedReceipt, record_receipt
from federation.receipts import UsageReceipt, merchant_ids_hash, sign_receipt, verify_receipt
from ledger._models import LogEntryRow

KEY = Ed25519PrivateKey.generate()
RECEIPT = UsageReceipt(
    job_id="job1",
    round=2,
    data_provider="isv0",
    action="train",
    rows_used=40,
    merchants_used=40,
    merchants_hash=merchant_ids_hash(["m2", "m1"]),
    rows_read=55,
    merchants_read=50,
    merchants_read_hash=merchant_ids_hash(["m2", "m1", "m3"]),
    manifest_root="ab" * 32,
    epsilon_spent=1.25,
    delta=1e-5,
    issued_at="2026-01-01T00:00:00.000000Z",
)
EXPECTED = ExpectedReceipt(
    job_id="job1", round=2, data_provider="isv0", action="train", manifest_root="ab" * 32
)


def _payload_swapped(token: bytes, **changes: object) -> bytes:
    header, payload, sig = token.split(b".")
    body = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
    body.update(changes)
    raw = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=")
    return b".".join([header, raw, sig])


def test_receipt_round_trips_through_sign_and_verify() -> None:
    """A signed receipt verifies with the node's public key and reads back equal."""
    token = sign_receipt(RECEIPT, KEY)

    assert verify_receipt(token, KEY.public_key()) == RECEIPT


def test_merchant_hash_ignores_order_and_duplicates() -> None:
    """The merchant hash is over the sorted distinct ids."""
    assert merchant_ids_hash(["b", "a", "b"]) == merchant_ids_hash(["a", "b"])
    assert merchant_ids_hash(["a"]) != merchant_ids_hash(["a", "b"])


@pytest.mark.parametrize(
    ("mutate", "other_key", "code"),
    [
        (lambda t: _payload_swapped(t, rows_used=1), False, "RECEIPT_SIGNATURE"),
        (lambda t: t, True, "RECEIPT_SIGNATURE"),
        (lambda t: t.replace(b".", b"", 1), False, "RECEIPT_MALFORMED"),
        (lambda t: b"\xff" + t, False, "RECEIPT_MALFORMED"),
    ],
    ids=["edited-rows", "other-nodes-key", "missing-part", "not-ascii"],
)
def test_bad_receipts_are_refused(
    mutate: Callable[[bytes], bytes], other_key: bool, code: str
) -> None:
    """Edited, misattributed or mangled receipts raise ReceiptInvalid with a code."""
    token = mutate(sign_receipt(RECEIPT, KEY))
    key = Ed25519PrivateKey.generate() if other_key else KEY

    with pytest.raises(ReceiptInvalid) as err:
        verify_receipt(token, key.public_key())

    assert err.value.code == code


def _data_used(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).where(LogEntryRow.kind == DATA_USED)) or 0


def test_verified_receipt_is_written_to_the_ledger(sessions: sessionmaker[Session]) -> None:
    """A receipt for the expected request becomes one data.used ledger entry."""
    token = sign_receipt(RECEIPT, KEY)

    body = record_receipt(sessions, token, KEY.public_key(), EXPECTED)

    assert _data_used(sessions) == 1
    assert body["rows_used"] == 40 and body["receipt"] == token.decode()
    assert body["ledger_seq"] == 0


@pytest.mark.parametrize("field", ["job_id", "round", "data_provider", "manifest_root"])
def test_receipt_for_another_request_is_refused_and_not_written(
    sessions: sessionmaker[Session], field: str
) -> None:
    """A genuine receipt answering a different job/round/node/manifest writes nothing."""
    other = {"job_id": "job2", "round": 3, "data_provider": "isv1", "manifest_root": "cd" * 32}
    expected = replace(EXPECTED, **{field: other[field]})

    with pytest.raises(ReceiptInvalid) as err:
        record_receipt(sessions, sign_receipt(RECEIPT, KEY), KEY.public_key(), expected)

    assert err.value.code == "RECEIPT_MISMATCH"
    assert _data_used(sessions) == 0


@pytest.mark.parametrize(
    ("changes", "manifest_merchants"),
    [
        ({"merchants_used": 51}, None),  # used more merchants than it read
        ({"rows_used": 56}, None),  # used more rows than it read
        ({}, 49),  # read more merchants than the manifest lists
    ],
    ids=["used-beyond-read-merchants", "used-beyond-read-rows", "read-beyond-manifest"],
)
def test_receipt_whose_counts_do_not_nest_is_refused(
    sessions: sessionmaker[Session], changes: dict[str, int], manifest_merchants: int | None
) -> None:
    """Used must be within read, and read within the manifest; otherwise nothing is written."""
    token = sign_receipt(replace(RECEIPT, **changes), KEY)
    expected = replace(EXPECTED, manifest_merchants=manifest_merchants)

    with pytest.raises(ReceiptInvalid) as err:
        record_receipt(sessions, token, KEY.public_key(), expected)

    assert err.value.code == "RECEIPT_MISMATCH"
    assert _data_used(sessions) == 0
