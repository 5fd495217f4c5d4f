"""fedgate certs / federation node-toml / node keygen / node check, end to end without processes."""

from __future__ import annotations

import stat
from pathlib import Path

import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from federation.deploy import load_node_settings
from federation.node import Approval, approval_payload, load_policy
from gateway.cli import app
from tests.utils.approvals import signed_consent_line
from tests.utils.cli import cli_settings

runner = CliRunner()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_platform_hands_an_isv_a_node_toml_that_checks(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """certs init → release-key → node keygen → node-toml → node check (no connection)."""
    with cli_settings(monkeypatch, db_url, tmp_path / "data"):
        assert runner.invoke(app, ["certs", "init", "--name", "superlink"]).exit_code == 0
        certs = tmp_path / "data" / "federation" / "certs"
        assert stat.S_IMODE((certs / "ca.key").stat().st_mode) == 0o600
        assert runner.invoke(app, ["federation", "release-key"]).exit_code == 0
        res = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "w"),
                                  "--merchants", "200", "--isvs", "1"])
        assert res.exit_code == 0, res.output
        node = tmp_path / "isv01"
        res = runner.invoke(app, ["node", "keygen", "--out", str(node / "keys")])
        assert res.exit_code == 0 and "ecdsa-sha2-nistp384" in res.output
        res = runner.invoke(app, ["federation", "node-toml", "--isv", "isv01", "--out", str(node),
                                  "--superlink", "127.0.0.1:1", "--erp",
                                  str(tmp_path / "w" / "isv01.parquet")])
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["node", "check", "--config", str(node / "node.toml"),
                                  "--no-connect"])
        assert res.exit_code == 0, res.output
        assert "✘" not in res.output and "fpk_" in res.output and "rows" in res.output
        # The ISV registers its merchants' signed approvals in its node's own register.
        merchant = Ed25519PrivateKey.generate()
        approvals = tmp_path / "approvals.jsonl"
        approvals.write_text("\n".join(signed_consent_line(m, isv, merchant, merchant) for m, isv
                                       in (("m1", "isv01"), ("m2", "isv02"))) + "\n", "utf-8")
        res = runner.invoke(app, ["node", "approve", str(approvals), "--config",
                                  str(node / "node.toml")])
        assert res.exit_code == 0, res.output
        assert "node isv01: 1 approval(s)" in res.output and "1 line(s) for other" in res.output
        settings = load_node_settings(node / "node.toml")
        held = settings.node.approvals(load_policy(settings.path)).current()
        assert list(held) == ["c-m1"] and held["c-m1"].data_provider == "isv01"
        _import_a_legacy_register(node / "node.toml", held["c-m1"])
        # Nothing listens there: the connection check fails and says so, exit 1.
        res = runner.invoke(app, ["node", "check", "--config", str(node / "node.toml")])
        assert res.exit_code == 1 and "NODE_CHECK_FAILED" in res.output
        # Broken data: the check names the problem.
        pd.DataFrame({"merchant_id": ["x"]}).to_parquet(tmp_path / "w" / "isv01.parquet")
        res = runner.invoke(app, ["node", "check", "--config", str(node / "node.toml"),
                                  "--no-connect"])
        assert res.exit_code == 1 and "MISSING_COLUMNS" in res.output


def _import_a_legacy_register(config: Path, approval: Approval) -> None:
    """An earlier version's JSON-lines register: refused over records, imported into none."""
    import hashlib
    import hmac
    import json
    from dataclasses import replace

    from federation.receipts import hash_key

    settings = load_node_settings(config)
    state = settings.node.state_dir
    mac = hmac.new(hash_key(state), approval_payload(approval), hashlib.sha256).hexdigest()
    forged = replace(approval, consent_id="c-m9", merchant_id="m9")  # the platform's line
    legacy = state / "approvals.jsonl"
    legacy.write_text(json.dumps({"terms": approval.body(), "mac": mac}) + "\n"
                      + json.dumps({"terms": forged.body(), "mac": "0" * 64}) + "\n", "utf-8")
    register = settings.node.approvals(load_policy(settings.path))
    register.revoke("c-m1")  # recorded after the old file: an import must not undo it
    res = runner.invoke(app, ["node", "import-approvals", str(legacy), "--config", str(config)])
    assert res.exit_code == 1 and "REGISTER_NOT_EMPTY" in res.output, res.output
    assert register.lookup(["c-m1"])["c-m1"].revoked
    # A node upgraded from the old format: no database yet, the old file beside it.
    for leftover in state.glob(register.path.name + "*"):
        leftover.unlink()
    res = runner.invoke(app, ["node", "approve", str(legacy), "--config", str(config)])
    assert res.exit_code == 1 and "LEGACY_APPROVALS" in res.output and "import-approvals" in (
        res.output), res.output
    res = runner.invoke(app, ["node", "import-approvals", str(legacy), "--config", str(config)])
    assert res.exit_code == 0, res.output
    assert "1 approval record(s) imported" in res.output and "1 line(s) failed" in res.output
    held = register.current()
    assert list(held) == ["c-m1"] and not held["c-m1"].revoked


def test_node_commands_refuse_a_missing_config(tmp_path: Path) -> None:
    """A clear error code and a non-zero exit, no traceback."""
    res = runner.invoke(app, ["node", "run", "--config", str(tmp_path / "nope.toml")])
    assert res.exit_code == 1 and "BAD_NODE_CONFIG" in res.output
    assert "Traceback" not in res.output
