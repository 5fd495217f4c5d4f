"""The platform attacks its own ledger; the command an operator or auditor runs catches it.

One test per numbered attack of issue 9, on SQLite and PostgreSQL, each
driving ``fedgate`` as a person would and checking the printed code and index.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import text
from typer.testing import CliRunner

import ledger
from gateway.cli import app
from gateway.db import make_engine, make_read_sessionmaker, make_sessionmaker
from gateway.keys import load_or_create_key
from ledger._book_models import book_triggers
from ledger._hasher import hash_children
from tests.consent.factories import terms_dict
from tests.utils.cli import cli_settings


@pytest.fixture
def data_dir(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI on the test database with a fresh data directory (keys)."""
    monkeypatch.delenv("FEDGATE_KEY_DIR", raising=False)
    with cli_settings(monkeypatch, db_url, tmp_path / "data"):
        yield tmp_path / "data"


def _run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def _sql(db_url: str, *statements: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


@contextmanager
def _triggers_dropped(db_url: str) -> Iterator[None]:
    """The operator drops the book's append-only triggers; they are put back afterwards."""
    engine = make_engine(db_url)
    dialect = engine.dialect.name
    engine.dispose()
    if dialect == "sqlite":
        drops = [
            f"DROP TRIGGER {t}_no_{op}"
            for t in ("book_accounts", "book_transfers")
            for op in ("update", "delete")
        ]
    else:
        drops = [
            f"DROP TRIGGER {t}_append_only ON {t}" for t in ("book_accounts", "book_transfers")
        ]
    _sql(db_url, *drops)
    try:
        yield
    finally:
        _sql(db_url, *book_triggers(dialect))


def _refused(result: Result, code: str, index: int | None) -> None:
    """Exit 1, the reason code printed, and the first bad index where one is expected."""
    assert result.exit_code == 1, result.output
    assert f"[{code}]" in result.output or f"FAILED {code}" in result.output, result.output
    assert "Traceback" not in result.output
    if index is not None:
        assert f"first bad index {index}" in " ".join(result.output.split()), result.output


def _vkey(data_dir: Path) -> str:
    key = load_or_create_key(data_dir / "keys", "log")
    return ledger.make_vkey("fedgate.example/ledger", key.public_key())


# -- 1. flip a consent's state ---------------------------------------------------------

_TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
_CHECK = [
    "consent", "check", "--merchant", "m-1", "--provider", "isv-a", "--consumer", "lender-1",
    "--purpose", "credit_scoring", "--category", "margins",
    "--at", (_TODAY + timedelta(days=30)).isoformat(),
]  # fmt: skip


def _grant_and_revoke(tmp_path: Path) -> None:
    terms = terms_dict(
        created_at=(_TODAY - timedelta(days=1)).isoformat(),
        consent_start=(_TODAY - timedelta(days=1)).isoformat(),
        consent_expiry=(_TODAY + timedelta(days=180)).isoformat(),
    )
    (tmp_path / "terms.json").write_text(json.dumps(terms))
    assert _run("consent", "grant", "--terms", str(tmp_path / "terms.json")).exit_code == 0
    assert _run("consent", "revoke", "c-1").exit_code == 0


def test_flipped_consent_state_is_refused_by_check_and_verify(
    data_dir: Path, db_url: str, tmp_path: Path
) -> None:
    """REVOKED flipped to ACTIVE in consent_state: `consent check`, `ledger verify`: INTEGRITY."""
    _grant_and_revoke(tmp_path)
    before = _run(*_CHECK)

    _sql(db_url, "UPDATE consent_state SET status = 'ACTIVE' WHERE consent_id = 'c-1'")
    check = _run(*_CHECK)
    verify = _run("ledger", "verify")
    export = _run("ledger", "export", str(tmp_path / "out.jsonl"))

    assert before.exit_code == 2 and json.loads(before.stdout)["code"] == "REVOKED"
    assert check.exit_code == 1
    assert "error[INTEGRITY]" in check.output and "log index 2" in " ".join(check.output.split())
    _refused(verify, "INTEGRITY", 2)
    _refused(export, "INTEGRITY", 2)
    assert not (tmp_path / "out.jsonl").exists()


def test_deleted_revocation_with_rewound_row_is_caught_by_verify(
    data_dir: Path, db_url: str, tmp_path: Path
) -> None:
    """Revocation event row deleted and the state rewound: the log still holds it."""
    _grant_and_revoke(tmp_path)

    _sql(
        db_url,
        "DELETE FROM consent_events WHERE consent_id = 'c-1' AND kind = 'revoked'",
        "UPDATE consent_state SET status = 'ACTIVE', version = 2 WHERE consent_id = 'c-1'",
    )
    verify = _run("ledger", "verify")
    checkpoint = _run("ledger", "checkpoint")

    _refused(verify, "INTEGRITY", 2)
    _refused(checkpoint, "INTEGRITY", 2)


# -- 2. rewrite history and re-sign it -------------------------------------------------


def _rewrite_leaf(db_url: str, seq: int, old: bytes, new: bytes) -> None:
    """Rewrite one leaf, recompute every stored node and the head, delete every checkpoint."""
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            rows = conn.execute(
                text("SELECT seq, leaf_data FROM ledger_entries ORDER BY seq")
            ).all()
            leaves = [bytes(r[1]) for r in rows]
            leaves[seq] = leaves[seq].replace(old, new)
            assert leaves[seq] != bytes(rows[seq][1])
            hashes = [ledger.hash_leaf(leaf) for leaf in leaves]
            conn.execute(
                text("UPDATE ledger_entries SET leaf_data = :d, leaf_hash = :h WHERE seq = :s"),
                {"d": leaves[seq], "h": hashes[seq], "s": seq},
            )
            conn.execute(text("DELETE FROM ledger_tree_nodes"))
            level, current = 0, hashes
            while current:
                for i, h in enumerate(current):
                    conn.execute(
                        text(
                            "INSERT INTO ledger_tree_nodes (level, \"index\", hash)"
                            " VALUES (:l, :i, :h)"
                        ),
                        {"l": level, "i": i, "h": h},
                    )
                current = [
                    hash_children(current[k], current[k + 1]) for k in range(0, len(current) - 1, 2)
                ]
                level += 1
            conn.execute(text("DELETE FROM ledger_checkpoints"))
        sessions = make_sessionmaker(engine)
        with sessions() as s:
            root = ledger.tree_head(s, len(leaves)).root
        with engine.begin() as conn:
            conn.execute(text("UPDATE ledger_head SET root = :r WHERE id = 1"), {"r": root})
    finally:
        engine.dispose()


def test_rewritten_and_resigned_history_is_a_fork_against_a_pin(
    data_dir: Path, db_url: str, tmp_path: Path
) -> None:
    """Leaf rewritten, tree and head recomputed, checkpoints deleted, re-signed: FORK at the pin."""
    assert _run("ledger", "demo").exit_code == 0
    pin = tmp_path / "pin.note"
    assert _run("ledger", "checkpoint", "--out", str(pin)).exit_code == 0

    _rewrite_leaf(db_url, 2, b'"rows":120', b'"rows":12000')
    forged = tmp_path / "forged.jsonl"
    exported = _run("ledger", "export", str(forged))
    unpinned = _run("audit", "verify", str(forged), "--vkey", _vkey(data_dir))
    pinned = _run("audit", "verify", str(forged), "--vkey", _vkey(data_dir), "--since", str(pin))

    assert exported.exit_code == 0, exported.output  # the database agrees with itself
    assert unpinned.exit_code == 0, unpinned.output  # which is why auditors pin
    _refused(pinned, "FORK", 4)


def test_rollback_export_and_header_only_export_are_refused(data_dir: Path, tmp_path: Path) -> None:
    """An export cut back to an older genuine checkpoint: ROLLBACK; a bare header: NO_CHECKPOINT."""
    assert _run("ledger", "demo").exit_code == 0
    old = tmp_path / "old.jsonl"
    assert _run("ledger", "export", str(old)).exit_code == 0
    assert _run("book", "open", "cash", "--kind", "asset", "--currency", "CNY").exit_code == 0
    pin = tmp_path / "pin.note"
    assert _run("ledger", "checkpoint", "--out", str(pin)).exit_code == 0
    header = json.loads(old.read_text().splitlines()[0])
    bare = tmp_path / "bare.jsonl"
    bare.write_text(
        json.dumps(
            {
                **header,
                "size": 0,
                "checkpoints": 0,
                "book": 0,
                "root": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            }
        )
        + "\n"
    )

    rollback = _run("audit", "verify", str(old), "--vkey", _vkey(data_dir), "--since", str(pin))
    header_only = _run("audit", "verify", str(bare), "--vkey", _vkey(data_dir))

    _refused(rollback, "ROLLBACK", 5)
    _refused(header_only, "NO_CHECKPOINT", 0)


# -- 3. change the book behind the log -------------------------------------------------


def _book(tmp_path: Path) -> None:
    for args in (
        ("cash", "--kind", "asset", "--currency", "CNY", "--no-negative"),
        ("equity", "--kind", "equity", "--currency", "CNY"),
    ):
        assert _run("book", "open", *args).exit_code == 0
    posted = _run("book", "transfer", "--id", "t-1", "--debit", "cash", "--credit", "equity",
                  "--amount", "1000000", "--currency", "CNY")  # fmt: skip
    assert posted.exit_code == 0, posted.output


def test_forged_transfer_row_is_caught_by_verify(
    data_dir: Path, db_url: str, tmp_path: Path
) -> None:
    """A transfer row with no log entry takes cash to −8,500.00: `book accounts` says balanced."""
    _book(tmp_path)
    _sql(
        db_url,
        "INSERT INTO book_transfers (id, debit_account, credit_account, amount, currency, link_id,"
        " metadata, request_digest, log_seq, posted_at) VALUES ('forged-1', 'equity', 'cash',"
        " 1850000, 'CNY', NULL, '{}', :d, 0, '2026-01-01T00:00:00+00:00')".replace(
            ":d", "X'" + "00" * 32 + "'" if "sqlite" in db_url else "'\\x" + "00" * 32 + "'"
        ),
    )

    accounts = _run("book", "accounts")
    verify = _run("ledger", "verify")

    assert "balanced" in accounts.output and "-8500.00" in accounts.output.replace(",", "")
    _refused(verify, "TRANSFER_NOT_LOGGED", 0)
    assert "forged-1" in verify.output


def test_edited_amount_and_account_behind_dropped_triggers(
    data_dir: Path, db_url: str, tmp_path: Path
) -> None:
    """Triggers block the edits; with them dropped, `ledger verify` names transfer and account."""
    _book(tmp_path)
    blocked = []
    for statement in (
        "UPDATE book_transfers SET amount = 5 WHERE id = 't-1'",
        "UPDATE book_accounts SET allow_negative = TRUE WHERE code = 'cash'",
        "DELETE FROM book_accounts WHERE code = 'equity'",
    ):
        try:
            _sql(db_url, statement)
        except Exception as exc:  # noqa: BLE001 - either backend's error type
            blocked.append("append-only" in str(exc))
    with _triggers_dropped(db_url):
        _sql(db_url, "UPDATE book_transfers SET amount = 5 WHERE id = 't-1'")
        amount = _run("ledger", "verify")
        _sql(
            db_url,
            "UPDATE book_transfers SET amount = 1000000 WHERE id = 't-1'",
            "UPDATE book_accounts SET allow_negative = TRUE WHERE code = 'cash'",
        )
        account = _run("ledger", "verify")
        export = _run("ledger", "export", str(tmp_path / "out.jsonl"))

    assert blocked == [True, True, True]
    _refused(amount, "TRANSFER_MISMATCH", 2)
    assert "t-1" in amount.output
    _refused(account, "ACCOUNT_MISMATCH", 0)
    _refused(export, "ACCOUNT_MISMATCH", 0)
    assert not (tmp_path / "out.jsonl").exists()


def test_offline_audit_recomputes_the_book_from_an_export(
    data_dir: Path, db_url: str, tmp_path: Path
) -> None:
    """An export over a doctored book (written past the CLI) fails the audit's reconciliation."""
    _book(tmp_path)
    with _triggers_dropped(db_url):
        _sql(db_url, "UPDATE book_transfers SET amount = 5 WHERE id = 't-1'")
    key = load_or_create_key(data_dir / "keys", "log")
    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine)() as s, s.begin():
            ledger.sign_checkpoint(s, key, "fedgate.example/ledger")
        with make_read_sessionmaker(engine)() as s:
            ledger.export_log(s, tmp_path / "out.jsonl", key, origin="fedgate.example/ledger")
    finally:
        engine.dispose()

    audit = _run("audit", "verify", str(tmp_path / "out.jsonl"), "--vkey", _vkey(data_dir))

    _refused(audit, "BOOK_STATEMENT_MISMATCH", 2)
    assert "cash" in audit.output


def test_logged_overdraft_is_named_by_verify_and_audit(
    data_dir: Path, db_url: str, tmp_path: Path
) -> None:
    """A transfer.posted entry slipped into the log that overdraws cash: NEGATIVE_BALANCE at it."""
    _book(tmp_path)
    body = {"id": "t-x", "debit": "equity", "credit": "cash", "amount": 1850000,
            "currency": "CNY", "metadata": {}, "link": None}  # fmt: skip
    engine = make_engine(db_url)
    key = load_or_create_key(data_dir / "keys", "log")
    try:
        with make_sessionmaker(engine)() as s, s.begin():
            entry = ledger.append_entry(s, "transfer.posted", body)
            ledger.sign_checkpoint(s, key, "fedgate.example/ledger")
        with make_read_sessionmaker(engine)() as s:
            ledger.export_log(s, tmp_path / "out.jsonl", key, origin="fedgate.example/ledger")
    finally:
        engine.dispose()

    verify = _run("ledger", "verify")
    audit = _run("audit", "verify", str(tmp_path / "out.jsonl"), "--vkey", _vkey(data_dir))

    _refused(verify, "NEGATIVE_BALANCE", entry.seq)
    _refused(audit, "NEGATIVE_BALANCE", entry.seq)
    assert "t-x" in audit.output


# -- 4. export over a corrupt database -------------------------------------------------


def test_export_refuses_a_database_that_does_not_verify(
    data_dir: Path, db_url: str, tmp_path: Path
) -> None:
    """A leaf edited in place: verify, checkpoint and export all exit 1 with the index."""
    assert _run("ledger", "demo").exit_code == 0
    assert _run("book", "open", "cash", "--kind", "asset", "--currency", "CNY").exit_code == 0
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            leaf = conn.execute(
                text("SELECT leaf_data FROM ledger_entries WHERE seq = 3")
            ).scalar_one()
            conn.execute(
                text("UPDATE ledger_entries SET leaf_data = :d WHERE seq = 3"),
                {"d": bytes(leaf).replace(b"6000", b"9000")},
            )
    finally:
        engine.dispose()

    verify = _run("ledger", "verify")
    checkpoint = _run("ledger", "checkpoint")
    export = _run("ledger", "export", str(tmp_path / "out.jsonl"))
    listed = _run("ledger", "checkpoints")

    for result in (verify, checkpoint, export):
        _refused(result, "LEAF_HASH_MISMATCH", 3)
    assert not (tmp_path / "out.jsonl").exists()
    assert "6 " not in listed.output  # nothing was signed over the corrupt head


# -- 5. bounded parsing ----------------------------------------------------------------


def test_hostile_inputs_get_codes_not_tracebacks(data_dir: Path, tmp_path: Path) -> None:
    """Non-UTF-8 and deeply nested --terms, nested --meta, a huge header field, a deep line."""
    (tmp_path / "latin1.json").write_bytes(b'{"merchant_id": "caf\xe9"}')
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    _book(tmp_path)
    assert _run("ledger", "demo").exit_code == 0
    good = tmp_path / "good.jsonl"
    assert _run("ledger", "export", str(good)).exit_code == 0
    lines = good.read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    huge = tmp_path / "huge.jsonl"
    huge.write_text(
        json.dumps({**header, "junk": "x" * (2 * 1024 * 1024)}) + "\n" + "".join(lines[1:])
    )
    deep = tmp_path / "deep.jsonl"
    first_entry = next(i for i, line in enumerate(lines) if '"leaf"' in line)
    deep.write_text(
        "".join(lines[:first_entry]) + "[" * 200_000 + "\n" + "".join(lines[first_entry + 1 :])
    )
    vkey = _vkey(data_dir)

    results = {
        "latin1": _run("consent", "grant", "--terms", str(tmp_path / "latin1.json")),
        "deep_terms": _run("consent", "grant", "--terms", str(tmp_path / "deep.json")),
        "deep_meta": _run(
            "book",
            "transfer",
            "--id",
            "t-2",
            "--debit",
            "cash",
            "--credit",
            "equity",
            "--amount",
            "1",
            "--currency",
            "CNY",
            "--meta",
            '{"a":' * 5000 + "1" + "}" * 5000,
        ),  # fmt: skip
        "huge": _run("audit", "verify", str(huge), "--vkey", vkey),
        "deep_line": _run("audit", "verify", str(deep), "--vkey", vkey),
    }

    codes = {name: r.exit_code for name, r in results.items()}
    assert codes == {"latin1": 1, "deep_terms": 1, "deep_meta": 1, "huge": 2, "deep_line": 1}
    assert "error[MALFORMED_JSON]" in results["latin1"].output
    assert "error[MALFORMED_JSON]" in results["deep_terms"].output
    assert "error[INVALID_METADATA]" in results["deep_meta"].output
    assert "error[BAD_EXPORT]" in results["huge"].output
    _refused(results["deep_line"], "MALFORMED_LINE", 0)
    for r in results.values():
        assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit)
    assert hashlib.sha256(good.read_bytes()).digest()  # the good export is untouched
