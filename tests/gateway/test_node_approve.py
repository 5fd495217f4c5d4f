"""``fedgate node approve``: merchants' signed approvals into each node's own register."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from gateway.cli import app
from tests.utils.approvals import signed_consent_line
from tests.utils.cli import cli_settings

runner = CliRunner()


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI on the test database (both backends) and a temp data dir."""
    with cli_settings(monkeypatch, db_url, tmp_path / "data"):
        yield tmp_path


def _job(tmp: Path) -> Path:
    (tmp / "platform.csv").write_text("merchant_id,Age,y\nm0,1,0\nm1,2,1\nm2,3,0\n", "utf-8")
    for isv in ("a", "b"):
        (tmp / f"erp_{isv}.csv").write_text("merchant_id,as_of,debt\n", "utf-8")
    (tmp / "policy.toml").write_text('[policy]\nallowed-specs = ["pd-erp", "x"]\n', "utf-8")
    cfg = tmp / "job.toml"
    cfg.write_text('[data]\nfrom = "2026-01-01"\nto = "2026-12-31"\n[platform]\n'
                   'table = "platform.csv"\nlabel = "y"\n'
                   '[isvs.a]\nsource = "erp_a.csv"\npolicy = "policy.toml"\n'
                   '[isvs.b]\nsource = "erp_b.csv"\n', "utf-8")
    return cfg


def _registers(cli_env: Path) -> dict[str, Path]:
    return {isv: cli_env / "data" / "nodes" / isv / "approvals.sqlite" for isv in ("a", "b")}


def test_approve_registers_each_isvs_verified_approvals(cli_env: Path) -> None:
    """Good file: each node holds exactly its own merchants' approvals, bound to the terms."""
    from federation.jobconfig import load_job_config
    from gateway import jobs
    from gateway.cli._common import settings

    keys = [Ed25519PrivateKey.generate() for _ in range(3)]
    lines = [signed_consent_line(m, isv, k, k)
             for m, isv, k in (("m0", "a", keys[0]), ("m1", "a", keys[1]), ("m2", "b", keys[2]))]
    (cli_env / "ok.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    cfg = _job(cli_env)
    result = runner.invoke(app, ["node", "approve", str(cli_env / "ok.jsonl"), "--job", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "node a: 2 approval(s)" in result.output and "node b: 1 approval(s)" in result.output
    nodes, _ = jobs.job_node_configs(settings(), load_job_config(cfg))
    held = {n.isv_id: n.approvals(n.node_policy()).current() for n in nodes}
    assert sorted(held["a"]) == ["c-m0", "c-m1"] and sorted(held["b"]) == ["c-m2"]
    assert held["a"]["c-m0"].artefact_hash == "" and held["a"]["c-m0"].data_provider == "a"
    # The job's ISV table named a policy file: that node uses it, the other the safe defaults.
    by_isv = {n.isv_id: n for n in nodes}
    assert by_isv["a"].node_policy().allowed_specs == ("pd-erp", "x")
    assert by_isv["b"].policy is None and by_isv["b"].node_policy().allow_no_dp is False

    only_b = runner.invoke(app, ["node", "approve", str(cli_env / "ok.jsonl"), "--job",
                                 str(cfg), "--isv", "b"])
    assert only_b.exit_code == 0 and "node a" not in only_b.output


def test_approve_refuses_a_forged_merchant_signature_and_registers_nothing(
    cli_env: Path,
) -> None:
    """A line signed by someone other than the merchant refuses the whole file."""
    merchant, platform = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    lines = [signed_consent_line("m0", "a", merchant, merchant),
             signed_consent_line("m1", "a", merchant, platform)]
    bad = cli_env / "forged.jsonl"
    bad.write_text("\n".join(lines) + "\n", "utf-8")
    cfg = _job(cli_env)
    result = runner.invoke(app, ["node", "approve", str(bad), "--job", str(cfg)])
    assert result.exit_code == 1
    said = " ".join(result.stderr.split())  # the console wraps long paths at 80 columns
    assert "error[SIGNATURE_INVALID]" in said and "line 2" in said
    assert "Traceback" not in result.output
    for p in _registers(cli_env).values():  # nothing registered: no database, or no row
        if p.exists():
            with closing(sqlite3.connect(p)) as db:
                assert db.execute("SELECT count(*) FROM approvals").fetchone() == (0,)
    for args, code in (([str(cli_env / "gone.jsonl"), "--job", str(cfg)], "UNREADABLE_FILE"),
                       ([str(bad)], "BAD_ARGUMENT")):
        refused = runner.invoke(app, ["node", "approve", *args])
        assert refused.exit_code == 1 and f"error[{code}]" in refused.stderr
