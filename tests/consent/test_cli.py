"""``fedgate consent …`` over a real database (both backends), via Typer's CliRunner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import _common, app

from .factories import terms_dict

runner = CliRunner()


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the CLI at the test database and a temp data dir; reset its caches around."""
    monkeypatch.setenv("FEDGATE_DATABASE_URL", db_url)
    monkeypatch.setenv("FEDGATE_DATA_DIR", str(tmp_path / "data"))
    _common.settings.cache_clear()
    _common.sessions.cache_clear()
    yield tmp_path
    _common.settings.cache_clear()
    _common.sessions.cache_clear()


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["consent", *args])
    return result.exit_code, result.stdout, result.stderr


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
    cli_env: Path, content: str, code: str
) -> None:
    """Bad terms print error[CODE] on stderr, exit 1, and leave the database empty."""
    path = cli_env / "bad.json"
    path.write_text(content)

    exit_code, _, err = _run("grant", "--terms", str(path))

    assert exit_code == 1
    assert f"error[{code}]" in err
    assert json.loads(_run("list")[1]) == []


def test_duplicate_and_unknown_ids(cli_env: Path) -> None:
    """A second grant with the same id is DUPLICATE_ID; pausing an unknown id is NOT_FOUND."""
    terms = _terms_file(cli_env)
    _run("grant", "--terms", terms)

    dup = _run("grant", "--terms", terms)
    missing = _run("pause", "nope")

    assert dup[0] == 1 and "error[DUPLICATE_ID]" in dup[2]
    assert missing[0] == 1 and "error[NOT_FOUND]" in missing[2]
    assert len(json.loads(_run("list")[1])) == 1


def test_illegal_transition_exit_code(cli_env: Path) -> None:
    """Resuming an active consent is refused with INVALID_TRANSITION."""
    _run("grant", "--terms", _terms_file(cli_env))

    code, _, err = _run("resume", "c-1")

    assert code == 1 and "error[INVALID_TRANSITION]" in err


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
