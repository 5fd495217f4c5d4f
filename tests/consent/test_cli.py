"""``fedgate consent …`` over a real database (both backends), via Typer's CliRunner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from consent import approve_artefact, parse_terms
from gateway.cli import _common, app
from gateway.db import make_engine, make_sessionmaker
from gateway.keys import public_key_pem
from tests.utils.cli import cli_settings

from .factories import counts, terms_dict

runner = CliRunner()


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the CLI at the test database and a temp data dir; reset its caches around."""
    with cli_settings(monkeypatch, db_url, tmp_path / "data"):
        yield tmp_path


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["consent", *args])
    return result.exit_code, result.stdout, result.stderr


def _counts(db_url: str) -> tuple[int, int, int, int]:
    """(artefacts, events, states, ledger entries) in the CLI's database."""
    engine = make_engine(db_url)
    try:
        return counts(make_sessionmaker(engine))
    finally:
        engine.dispose()


# The CLI grants on the wall clock, so the terms it is given are live today, not on the
# fixed dates of the other consent tests (those would lapse and turn every grant into
# ALREADY_EXPIRED).
_TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
_LIVE = {
    "created_at": (_TODAY - timedelta(days=1)).isoformat(),
    "consent_start": (_TODAY - timedelta(days=1)).isoformat(),
    "consent_expiry": (_TODAY + timedelta(days=180)).isoformat(),
}


def _terms_file(tmp: Path, **changes: object) -> str:
    path = tmp / "terms.json"
    path.write_text(json.dumps(terms_dict(**{**_LIVE, **changes})))
    return str(path)


CHECK = [
    "check", "--merchant", "m-1", "--provider", "isv-a", "--consumer", "lender-1",
    "--purpose", "credit_scoring", "--category", "margins",
    "--at", (_TODAY + timedelta(days=30)).isoformat(),
]  # fmt: skip


def test_grant_check_pause_resume_revoke_show_list(cli_env: Path) -> None:
    """The whole lifecycle through the CLI, with the check's exit code following it."""
    code, out, _ = _run("grant", "--terms", _terms_file(cli_env))
    granted = json.loads(out)

    assert code == 0 and granted["status"] == "ACTIVE"
    assert _run(*CHECK)[0] == 0
    assert _run("pause", "c-1", "--reason", "audit")[0] == 0
    code, out, _ = _run(*CHECK)
    assert (code, json.loads(out)["code"]) == (2, "PAUSED")
    assert _run("resume", "c-1")[0] == 0
    assert _run(*CHECK)[0] == 0
    assert json.loads(_run("revoke", "c-1")[1])["status"] == "REVOKED"
    code, out, _ = _run(*CHECK)
    assert (code, json.loads(out)["code"]) == (2, "REVOKED")
    shown = json.loads(_run("show", "c-1")[1])
    assert [e["kind"] for e in shown["events"]] == [
        "granted", "activated", "paused", "resumed", "revoked"
    ]  # fmt: skip
    assert shown["artefact_hash"] == granted["artefact_hash"]
    listed = json.loads(_run("list", "--status", "revoked")[1])
    assert [c["consent_id"] for c in listed] == ["c-1"]


def test_grant_from_options(cli_env: Path) -> None:
    """Grant with options only: the id is generated; an over-cap expiry is refused first."""
    options = [
        "grant", "--merchant", "m-9", "--provider", "isv-a", "--consumer", "lender-1",
        "--purpose", "model_training", "--category", "turnover", "--data-from", "2025-01-01",
        "--data-to", "2025-06-30", "--start", "2026-01-01T00:00:00Z", "--uses", "3",
    ]  # fmt: skip

    over = _run(*options, "--expiry", "2099-06-01T00:00:00+00:00")
    code, out, _ = _run(*options, "--expiry", "2099-03-01T00:00:00+00:00", "--start",
                        "2099-01-01T00:00:00Z")  # fmt: skip

    assert over[0] == 1 and "error[DURATION_OVER_CAP]" in over[2]
    assert code == 0, out
    granted = json.loads(out)
    assert granted["consent_id"].startswith("c-") and granted["status"] == "ACTIVE"
    assert [c["merchant_id"] for c in json.loads(_run("list")[1])] == ["m-9"]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        ("{not json", "MALFORMED_JSON"),
        (json.dumps(terms_dict(purposes=["marketing"])), "UNKNOWN_PURPOSE"),
        (json.dumps(terms_dict(categories=["secrets"])), "UNKNOWN_CATEGORY"),
        (json.dumps(terms_dict(consent_expiry="2026-01-01T00:00:00Z")), "EXPIRY_BEFORE_START"),
        (json.dumps(terms_dict(consent_expiry="2028-01-01T00:00:00Z")), "DURATION_OVER_CAP"),
    ],
)
def test_bad_terms_file_fails_with_code_and_stores_nothing(
    cli_env: Path, db_url: str, content: str, code: str
) -> None:
    """Bad terms print error[CODE] on stderr, exit 1, and leave the database empty."""
    path = cli_env / "bad.json"
    path.write_text(content)

    exit_code, _, err = _run("grant", "--terms", str(path))

    assert exit_code == 1
    assert f"error[{code}]" in err
    assert json.loads(_run("list")[1]) == []
    assert _counts(db_url) == (0, 0, 0, 0)


def test_duplicate_and_unknown_ids(cli_env: Path, db_url: str) -> None:
    """A second grant with the same id is DUPLICATE_ID; pausing an unknown id is NOT_FOUND."""
    terms = _terms_file(cli_env)
    _run("grant", "--terms", terms)
    before = _counts(db_url)

    dup = _run("grant", "--terms", terms)
    missing = _run("pause", "nope")

    assert dup[0] == 1 and "error[DUPLICATE_ID]" in dup[2]
    assert missing[0] == 1 and "error[NOT_FOUND]" in missing[2]
    assert len(json.loads(_run("list")[1])) == 1
    assert _counts(db_url) == before == (1, 2, 1, 2)


def test_illegal_transition_exit_code(cli_env: Path, db_url: str) -> None:
    """Resuming an active consent is refused with INVALID_TRANSITION; nothing is added."""
    _run("grant", "--terms", _terms_file(cli_env))
    before = _counts(db_url)

    code, _, err = _run("resume", "c-1")

    assert code == 1 and "error[INVALID_TRANSITION]" in err
    assert _counts(db_url) == before


def test_pending_grant_is_activated_or_rejected(cli_env: Path) -> None:
    """``grant --pending`` leaves a consent the CLI can activate, or reject, and check sees it."""
    _run("grant", "--pending", "--terms", _terms_file(cli_env))
    _run("grant", "--pending", "--terms", _terms_file(cli_env, consent_id="c-2", merchant_id="m-2"))

    pending = _run(*CHECK)
    activated = json.loads(_run("activate", "c-1")[1])
    rejected = json.loads(_run("reject", "c-2", "--reason", "declined")[1])
    again = _run("activate", "c-2")

    assert (pending[0], json.loads(pending[1])["code"]) == (2, "NO_CONSENT")
    assert activated["status"] == "ACTIVE" and rejected["status"] == "REJECTED"
    assert _run(*CHECK)[0] == 0
    assert again[0] == 1 and "error[INVALID_TRANSITION]" in again[2]
    shown = json.loads(_run("show", "c-1")[1])
    assert [e["kind"] for e in shown["events"]] == ["granted", "activated"]


def _merchant_files(tmp: Path, terms: dict[str, object]) -> tuple[Path, Path, Ed25519PrivateKey]:
    merchant = Ed25519PrivateKey.generate()
    signature = tmp / "approval.jws"
    signature.write_text(approve_artefact(parse_terms(terms), merchant))
    key = tmp / "merchant.pub.pem"
    key.write_text(public_key_pem(merchant))
    return signature, key, merchant


def test_activation_with_merchant_signature(cli_env: Path, db_url: str) -> None:
    """A pending consent activates with the merchant's approval; a signature by another key
    or over other terms is SIGNATURE_INVALID and adds nothing."""
    terms = terms_dict(**_LIVE)
    signature, key, _ = _merchant_files(cli_env, terms)
    (cli_env / "stranger").mkdir()
    _, stranger_key, _ = _merchant_files(cli_env / "stranger", terms)
    _run("grant", "--pending", "--terms", _terms_file(cli_env))
    before = _counts(db_url)

    wrong = _run(
        "activate", "c-1", "--merchant-signature", str(signature), "--merchant-key",
        str(stranger_key),
    )  # fmt: skip
    half = _run("activate", "c-1", "--merchant-signature", str(signature))
    after_refusals = _counts(db_url)
    ok = _run("activate", "c-1", "--merchant-signature", str(signature), "--merchant-key", str(key))

    assert wrong[0] == 1 and "error[SIGNATURE_INVALID]" in wrong[2]
    assert half[0] == 1 and "error[SIGNATURE_INVALID]" in half[2]
    assert after_refusals == before
    assert ok[0] == 0 and json.loads(ok[1])["status"] == "ACTIVE"
    shown = json.loads(_run("show", "c-1")[1])
    assert shown["events"][-1]["detail"] == {"merchant_approval": True}


def test_grant_with_merchant_signature(cli_env: Path, db_url: str) -> None:
    """``grant`` checks a merchant approval over exactly the terms it signs."""
    terms = terms_dict(**_LIVE)
    signature, key, _ = _merchant_files(cli_env, terms)
    other = _terms_file(cli_env, data_life_days=7)

    refused = _run(
        "grant", "--terms", other, "--merchant-signature", str(signature), "--merchant-key",
        str(key),
    )  # fmt: skip
    empty = _counts(db_url)
    granted = _run(
        "grant", "--terms", _terms_file(cli_env), "--merchant-signature", str(signature),
        "--merchant-key", str(key),
    )  # fmt: skip

    assert refused[0] == 1 and "error[SIGNATURE_INVALID]" in refused[2]
    assert empty == (0, 0, 0, 0)
    assert granted[0] == 0, granted[2]
    assert json.loads(granted[1])["status"] == "ACTIVE"


def test_check_without_a_key_fails_and_creates_nothing(cli_env: Path) -> None:
    """``check`` on a fresh data directory reads a key, never writes one: KEY_NOT_FOUND."""
    key_file = cli_env / "data" / "keys" / "consent-manager.pem"

    code, _, err = _run(*CHECK)

    assert code == 1 and "error[KEY_NOT_FOUND]" in err
    assert not key_file.exists()


def test_check_bad_time_is_refused(cli_env: Path) -> None:
    """A naive --at is refused as MALFORMED, not guessed."""
    code, _, err = _run(*CHECK[:-1], "2026-07-01T00:00:00")

    assert code == 1 and "error[MALFORMED]" in err


@pytest.mark.parametrize(
    ("flag", "value", "code"),
    [("--purpose", "marketing", "UNKNOWN_PURPOSE"), ("--category", "diaries", "UNKNOWN_CATEGORY")],
)
def test_check_unknown_vocabulary_is_refused(
    cli_env: Path, flag: str, value: str, code: str
) -> None:
    """A check naming an unknown purpose or category is bad input, not a denial."""
    args = list(CHECK)
    args[args.index(flag) + 1] = value

    exit_code, _, err = _run(*args)

    assert exit_code == 1 and f"error[{code}]" in err


def test_receipts_state_the_configured_notice(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FEDGATE_RECEIPT_* settings reach every receipt the CLI prints."""
    monkeypatch.setenv("FEDGATE_RECEIPT_POLICY_URL", "https://lender.test/privacy")
    monkeypatch.setenv("FEDGATE_RECEIPT_JURISDICTION", "HK")
    _common.settings.cache_clear()

    granted = json.loads(_run("grant", "--terms", _terms_file(cli_env))[1])
    paused = json.loads(_run("pause", "c-1")[1])

    notices = [*granted["receipts"], paused]
    assert notices and all(r["policy_url"] == "https://lender.test/privacy" for r in notices)
    assert all(r["jurisdiction"] == "HK" for r in notices)
