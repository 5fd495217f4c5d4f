"""The ISV node package: policy parsing, approvals, error reasons, lineage, public surface."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import federation.node as node_pkg
import federation.node._approvals as approvals_mod
from consent import ManifestEntry, build_manifest
from federation._errors import FederationError
from federation.apps.server_app import secagg_parameters
from federation.dp import PrivacyLedger
from federation.node import (
    SAFE_DEFAULTS,
    Approval,
    ApprovalRegister,
    ModelRegister,
    NodePolicy,
    approval_payload,
    load_policy,
    models_shaped_by,
    safe_reason,
)
from federation.specs import DPBudget

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_public_surface_is_pinned() -> None:
    """federation.node exports exactly its documented names."""
    assert sorted(node_pkg.__all__) == sorted(
        [
            "Approval", "ApprovalRegister", "ApproveResult", "approve_lines", "ModelRegister",
            "NodePolicy", "POLICY_TABLE",
            "PUBLIC_GRID", "REASON_GRAMMAR", "SAFE_DEFAULTS", "SKETCH_SIZE", "approval_payload",
            "check_request", "dp_sketch", "encoder_hash", "encoder_problem", "error_guard_mod",
            "field_problem",
            "load_policy", "models_shaped_by", "node_budget", "register_approvals", "node_seed",
            "numpy_generator",
            "safe_reason", "snap_edges", "torch_generator", "weights_hash",
        ]
    )
    assert all(hasattr(node_pkg, name) for name in node_pkg.__all__)


def test_no_policy_file_means_safe_defaults(tmp_path: Path) -> None:
    """Without a node TOML the node refuses no-DP jobs and needs ten merchants per round."""
    policy = load_policy(None)

    assert policy is SAFE_DEFAULTS and not policy.allow_no_dp and policy.min_cohort == 10
    assert policy.require_approval and policy.test_seed == -1
    assert "train-loss" not in policy.allowed_metrics


def test_policy_table_is_read_and_checked(tmp_path: Path) -> None:
    """Kebab-case keys are read; an unknown key or a bad value is a clear error."""
    good = tmp_path / "node.toml"
    good.write_text('[policy]\nmin-cohort = 50\nallowed-specs = ["pd-erp"]\n', "utf-8")
    assert load_policy(good) == replace(SAFE_DEFAULTS, min_cohort=50, allowed_specs=("pd-erp",))

    for body in ("[policy]\nmin-cohrt = 5\n", "[policy]\nallow-no-dp = 1\n",
                 "[policy]\nmax-epsilon-lifetime = 1.0\n"):
        bad = tmp_path / "bad.toml"
        bad.write_text(body, "utf-8")
        with pytest.raises(FederationError) as err:
            load_policy(bad)
        assert err.value.code == "BAD_POLICY"


def _entry(**kw: object) -> ManifestEntry:
    base = dict(
        merchant_id="m1", consent_id="c-m1", artefact_hash="a" * 64,
        consent_start=NOW - timedelta(days=1), consent_expiry=NOW + timedelta(days=30),
        data_from=date(2024, 1, 1), data_to=date(2025, 1, 1),
    )
    return ManifestEntry(**{**base, **kw})  # type: ignore[arg-type]


def _approval() -> Approval:
    return Approval(
        consent_id="c-m1", merchant_id="m1", artefact_hash="a" * 64, data_provider="isv0",
        data_consumer="platform", purposes=("model_training",), categories=("margins",),
        data_from=date(2024, 1, 1), data_to=date(2025, 1, 1),
        consent_start=NOW - timedelta(days=1), consent_expiry=NOW + timedelta(days=30),
        data_life_days=90,
    )


def _manifest(entries: list[ManifestEntry], purpose: str = "model_training") -> object:
    return build_manifest(
        job_id="j", round=1, data_provider="isv0", data_consumer="platform", purpose=purpose,
        categories=["margins"], entries=entries, issued_at=NOW, ttl=timedelta(minutes=5),
    )


def test_approvals_cover_only_what_the_merchant_approved(tmp_path: Path) -> None:
    """Same ids, hash, purpose, categories, ranges and retention, or the entry is unmatched."""
    key = Ed25519PrivateKey.generate()
    register = ApprovalRegister(tmp_path / "approvals.sqlite", key, b"k" * 32)
    signature = register.register(_approval())
    assert register.verify_countersignature(_approval(), signature)

    ok = _entry()
    bad = [_entry(data_to=date(2026, 1, 1)), _entry(artefact_hash="b" * 64),
           _entry(consent_id="c-other"), _entry(data_life_days=365)]

    assert register.unmatched(_manifest([ok]), [ok]) == 0  # type: ignore[arg-type]
    for entry in bad:
        assert register.unmatched(_manifest([entry]), [entry]) == 1  # type: ignore[arg-type]
    assert register.unmatched(_manifest([ok], "credit_scoring"), [ok]) == 1  # type: ignore[arg-type]
    register.revoke("c-m1")
    assert register.unmatched(_manifest([ok]), [ok]) == 1  # type: ignore[arg-type]
    # Another node key (HMAC key) reads none of these lines as authentic.
    other = ApprovalRegister(tmp_path / "approvals.sqlite", key, b"x" * 32)
    assert other.current() == {}


def _forge(path: Path, approval: Approval, mac: bytes) -> None:
    """What the curious platform can do: write the register file, without the node's key."""
    terms = rfc8785.dumps(approval.body())
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO approvals (consent_id, terms, mac) VALUES (?, ?, ?)",
                    (approval.consent_id, terms, mac))


def test_register_rows_without_the_node_key_do_not_count(tmp_path: Path) -> None:
    """Forged rows never count, never hide an authentic one; the latest authentic row wins."""
    key, path = Ed25519PrivateKey.generate(), tmp_path / "approvals.sqlite"
    register = ApprovalRegister(path, key, b"k" * 32)
    register.register(_approval())
    ok = _entry()
    # A forged approval of a consent the ISV never recorded, with a wrong and an empty MAC,
    # and one MAC'd under another key (another node's register copied in).
    stranger = replace(_approval(), consent_id="c-m2", merchant_id="m2")
    _forge(path, stranger, b"\0" * 32)
    _forge(path, stranger, b"")
    other_key = hmac.new(b"x" * 32, approval_payload(stranger), hashlib.sha256).digest()
    _forge(path, stranger, other_key)
    forged = replace(ok, consent_id="c-m2", merchant_id="m2")
    assert register.unmatched(_manifest([forged]), [forged]) == 1  # type: ignore[arg-type]
    assert register.lookup(["c-m2"]) == {} and set(register.current()) == {"c-m1"}
    # The real MAC over the terms under a row whose (unauthenticated) id column lies.
    mac = hmac.new(b"k" * 32, approval_payload(_approval()), hashlib.sha256).digest()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO approvals (consent_id, terms, mac) VALUES (?, ?, ?)",
                    ("c-m2", rfc8785.dumps(_approval().body()), mac))
    assert register.lookup(["c-m2"]) == {}

    # Revocation wins; a forged newer "approved again" row does not undo it.
    register.revoke("c-m1")
    assert register.unmatched(_manifest([ok]), [ok]) == 1  # type: ignore[arg-type]
    _forge(path, _approval(), b"\0" * 32)
    assert register.unmatched(_manifest([ok]), [ok]) == 1  # type: ignore[arg-type]
    assert register.lookup(["c-m1"])["c-m1"].revoked
    # ... nor does a forged newer revocation hide the authentic approval of another consent.
    register.register(stranger)
    _forge(path, replace(stranger, revoked=True), b"\0" * 32)
    assert register.unmatched(_manifest([forged]), [forged]) == 0  # type: ignore[arg-type]
    # Re-approval by the ISV (a newer authentic row) counts again.
    register.register(_approval())
    assert register.unmatched(_manifest([ok]), [ok]) == 0  # type: ignore[arg-type]


def test_register_matches_in_chunks_and_imports_in_one_transaction(tmp_path: Path) -> None:
    """More entries than a chunk match; a failing bulk import records nothing."""
    key, path = Ed25519PrivateKey.generate(), tmp_path / "approvals.sqlite"
    register = ApprovalRegister(path, key, b"k" * 32)
    n = 2 * approvals_mod.CHUNK + 7
    ids = [f"m{i}" for i in range(n)]
    assert register.register_many(
        replace(_approval(), consent_id=f"c-{m}", merchant_id=m) for m in ids
    ) == n
    entries = [_entry(consent_id=f"c-{m}", merchant_id=m) for m in ids]
    assert register.unmatched(_manifest(entries[:1]), entries) == 0  # type: ignore[arg-type]
    missing = [*entries, _entry(consent_id="c-none", merchant_id="none")]
    assert register.unmatched(_manifest(entries[:1]), missing) == 1  # type: ignore[arg-type]

    def broken() -> Iterator[Approval]:
        yield replace(_approval(), consent_id="c-new", merchant_id="new")
        raise RuntimeError("ERP export cut off")

    with pytest.raises(RuntimeError):
        register.register_many(broken())
    assert register.lookup(["c-new"]) == {}


def test_a_jsonl_register_is_refused_until_imported(tmp_path: Path) -> None:
    """A JSON-lines register is refused with a clear error, then imported HMAC-checked."""
    key = Ed25519PrivateKey.generate()
    legacy = tmp_path / "approvals.jsonl"
    good = _approval()
    mac = hmac.new(b"k" * 32, approval_payload(good), hashlib.sha256).hexdigest()
    forged = replace(good, consent_id="c-m2", merchant_id="m2")
    legacy.write_text(
        json.dumps({"terms": good.body(), "mac": mac}) + "\n"
        + json.dumps({"terms": forged.body(), "mac": "0" * 64}) + "\n", "utf-8")
    for path in (legacy, tmp_path / "approvals.sqlite"):
        with pytest.raises(FederationError, match="import_jsonl") as err:
            ApprovalRegister(path, key, b"k" * 32)
        assert err.value.code == "LEGACY_APPROVALS"
    db = ApprovalRegister(tmp_path / "approvals.sqlite", key, b"k" * 32, check_legacy=False)
    assert db.import_jsonl(legacy) == (1, 1)
    reopened = ApprovalRegister(tmp_path / "approvals.sqlite", key, b"k" * 32)  # db exists now
    assert set(reopened.current()) == {"c-m1"} and reopened.current()["c-m1"] == good


def test_error_reasons_keep_codes_and_counts_only() -> None:
    """Raw cells, ids and prose are cut; codes, named numbers and a receipt pass."""
    assert safe_reason("WRONG_TYPE: cash: not a number: '1,234,567.89'") == "WRONG_TYPE"
    assert safe_reason("NEGATIVE_VALUE: debt ['m0x003', 'm0x009']") == "NEGATIVE_VALUE"
    assert safe_reason("MANIFEST_REJECTED: SIGNATURE_INVALID: bad") == (
        "MANIFEST_REJECTED: SIGNATURE_INVALID"
    )
    kept = "POLICY_REFUSED: MIN_COHORT min=10 receipt=a.b.c"
    assert safe_reason(kept) == kept
    assert safe_reason("boom at /srv/isv/erp.csv") == "NODE_FAILURE"


def test_lineage_lists_the_models_a_merchants_jobs_received(tmp_path: Path) -> None:
    """On revocation the node names every model of every job charged to the merchant."""
    ledger = PrivacyLedger(tmp_path / "privacy.json")
    ledger.admit(job_id="j1", budget=DPBudget(epsilon=1.0), merchant_ids=["m1", "m2"],
                 lifetime_epsilon=10.0)
    ledger.admit(job_id="j2", budget=DPBudget(epsilon=1.0), merchant_ids=["m2"],
                 lifetime_epsilon=10.0)
    register = ModelRegister(tmp_path / "models.jsonl")
    for job, model in (("j1", "h1"), ("j1", "h2"), ("j2", "h3")):
        register.record(job_id=job, action="train", model=model, encoder="e")

    assert models_shaped_by(tmp_path / "privacy.json", tmp_path / "models.jsonl", "m1") == {
        "j1": ["h1", "h2"]
    }
    assert set(models_shaped_by(tmp_path / "privacy.json", tmp_path / "models.jsonl", "m2")) == {
        "j1", "j2"
    }


def test_secagg_is_sized_for_the_cohort() -> None:
    """Full sharing up to ten nodes, O(log n) neighbours above; threshold over half."""
    assert secagg_parameters(3) == (3, 2)
    assert secagg_parameters(10) == (10, 7)
    shares, threshold = secagg_parameters(100)
    assert shares == 15 and shares / 2 < threshold <= shares


def test_policy_is_frozen_and_compares_by_value() -> None:
    """A policy is a small frozen config object."""
    assert NodePolicy(min_cohort=3) == NodePolicy(min_cohort=3)
    with pytest.raises(AttributeError):
        SAFE_DEFAULTS.min_cohort = 1  # type: ignore[misc]
