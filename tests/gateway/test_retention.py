"""Retention sweep: scores and ERP-derived PDs go after their consent's data_life_days."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

import consent
from gateway.cli import app
from gateway.credit._models import LineDecisionRow
from gateway.retention import RETENTION_SWEEP, sweep
from ledger._models import LogEntryRow
from tests.utils.cli import cli_settings

from ..consent.factories import CM_KEY, make_terms
from .credit._helpers import decide, merchant, setup_book

runner = CliRunner()

T0 = datetime(2026, 6, 2, 9, 0, tzinfo=UTC)


def _grant(s: Session, cid: str, mid: str, days: int, provider: str = "isv-a") -> None:
    consent.grant(s, make_terms(cid, mid, data_life_days=days, data_provider=provider),
                  key=CM_KEY, at=T0)


def _scores_job(jobs: Path, job: str, rows: list[tuple[str, str, float]], signed: datetime) -> Path:
    """A scoring job's outputs: scores.csv and result.json with the node's score receipt."""
    out = jobs / job
    out.mkdir(parents=True)
    lines = ["merchant_id,isv_id,g", *(f"{m},{k},{g}" for m, k, g in rows)]
    (out / "scores.csv").write_text("\n".join(lines) + "\n", "utf-8")
    receipt = {"action": "query.score", "data_provider": "isv-a",
               "issued_at": signed.isoformat().replace("+00:00", "Z")}
    (out / "result.json").write_text(json.dumps({"receipts": [receipt]}), "utf-8")
    return out / "scores.csv"


def test_scores_past_their_data_life_are_removed_and_the_sweep_is_ledgered(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """30-day consent: gone after 30 days; 90-day consent: kept; no consent: gone."""
    with sessions() as s, s.begin():
        _grant(s, "c-short", "m-short", 30)
        _grant(s, "c-long", "m-long", 90)
    scores = _scores_job(tmp_path / "jobs", "score-1",
                         [("m-short", "isv-a", 0.1), ("m-long", "isv-a", 0.2),
                          ("m-nobody", "isv-a", 0.3)], signed=T0)

    with sessions() as s:
        early = sweep(s, jobs_dir=tmp_path / "jobs", at=T0 + timedelta(days=29))
    assert early.scores_removed == 1 and early.ledger_seq is not None  # m-nobody: no consent
    with sessions() as s:
        report = sweep(s, jobs_dir=tmp_path / "jobs", at=T0 + timedelta(days=30))

    assert (report.scores_removed, report.files_rewritten, report.merchants) == (1, 1, 1)
    assert scores.read_text("utf-8").splitlines() == ["merchant_id,isv_id,g", "m-long,isv-a,0.2"]
    with sessions() as s:
        kinds = list(s.scalars(select(LogEntryRow.kind).where(LogEntryRow.kind == RETENTION_SWEEP)))
        last = s.get(LogEntryRow, report.ledger_seq)
    assert len(kinds) == 2
    assert last is not None and b"m-short" not in last.leaf_data  # counts only, never ids
    # Idempotent: nothing left to remove, nothing written.
    with sessions() as s:
        again = sweep(s, jobs_dir=tmp_path / "jobs", at=T0 + timedelta(days=31))
    assert (again.scores_removed, again.ledger_seq) == (0, None)


def test_the_score_age_runs_from_the_nodes_signed_receipt_not_the_file_time(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A file touched later does not extend a score's life; the receipt's time counts."""
    with sessions() as s, s.begin():
        _grant(s, "c-1", "m-1", 10)
    scores = _scores_job(tmp_path / "jobs", "score-2", [("m-1", "isv-a", 0.4)], signed=T0)
    later = (T0 + timedelta(days=20)).timestamp()
    os.utime(scores, (later, later))

    with sessions() as s:
        report = sweep(s, jobs_dir=tmp_path / "jobs", at=T0 + timedelta(days=11))

    assert report.scores_removed == 1


def test_line_decisions_lose_their_erp_pd_but_keep_their_lines(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """pd_with is cleared after the consent's data life; line amounts and attribution stay."""
    with sessions() as s, s.begin():
        version, policy = setup_book(s)
        _grant(s, "c-m1-isv01", "m1", 30, provider="isv01")
        _grant(s, "c-m2-isv01", "m2", 365, provider="isv01")
        decided = decide(s, version, policy, [merchant("m1", 3_000_000, 0.08, 0.03),
                                              merchant("m2", 3_000_000, 0.08, 0.03)])
    at = decided[0].decided_at + timedelta(days=31)

    with sessions() as s:
        report = sweep(s, jobs_dir=tmp_path / "jobs", at=at)

    assert (report.decisions_cleared, report.scores_removed, report.merchants) == (1, 0, 1)
    with sessions() as s:
        rows = {r.merchant_id: r for r in s.scalars(select(LineDecisionRow))}
    assert rows["m1"].pd_with is None and rows["m2"].pd_with is not None
    assert rows["m1"].line_with == decided[0].line_with  # the terms a loan may be drawn under
    assert rows["m1"].attribution == decided[0].attribution


def test_a_naive_time_is_refused_and_nothing_changes(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A sweep time without a zone is an error; the scores stay."""
    with sessions() as s, s.begin():
        _grant(s, "c-1", "m-1", 1)
    scores = _scores_job(tmp_path / "jobs", "score-3", [("m-1", "isv-a", 0.4)], signed=T0)
    before = scores.read_text("utf-8")

    with sessions() as s:
        try:
            sweep(s, jobs_dir=tmp_path / "jobs", at=datetime(2027, 1, 1))
        except ValueError as exc:
            assert "timezone" in str(exc)
        else:
            raise AssertionError("a naive time was accepted")

    assert scores.read_text("utf-8") == before


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI on the test database (both backends) and a temp data dir."""
    with cli_settings(monkeypatch, db_url, tmp_path / "data"):
        yield tmp_path / "data"


def test_the_cli_sweeps_the_data_dirs_jobs_and_refuses_a_bad_time(cli_env: Path) -> None:
    """``fedgate retention sweep --at``: a count line; a bad time exits non-zero with a code."""
    _scores_job(cli_env / "jobs", "score-cli", [("m-nobody", "isv-a", 0.5)], signed=T0)

    bad = runner.invoke(app, ["retention", "sweep", "--at", "next tuesday"])
    ok = runner.invoke(app, ["retention", "sweep", "--at", "2026-07-01T00:00:00Z"])

    assert bad.exit_code != 0 and "BAD_TIME" in bad.output
    assert (cli_env / "jobs" / "score-cli" / "scores.csv").read_text("utf-8").count("\n") == 1
    assert ok.exit_code == 0, ok.output
    assert "1 score rows in 1 file(s)" in ok.output
