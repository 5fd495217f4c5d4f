"""The node's SQLite privacy ledger: legacy JSON import, atomic calls, exact ε sums, dry runs."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from federation import BudgetExceeded, FederationError
from federation import dp as dp_module
from federation.dp import CHUNK, PrivacyLedger
from federation.specs import DPBudget

LIFETIME = 5.0


def _legacy_state() -> dict[str, object]:
    """An earlier version's ``privacy.json``: m-near spent 4.5 of 5.0; m-old 1.0 in job-old."""
    return {
        "jobs": {
            "job-old": {
                "epsilon": 1.0, "delta": 1e-5,
                "history": [[5.0, 0.01, 10], [6.0, 0.01, 10]],
                "eval_history": [[8.0, 0.1, 1]],
                "merchants": ["m-near", "m-old"], "excluded": ["m-gone"],
            },
            "job-big": {"epsilon": 3.5, "delta": 1e-5, "history": [], "merchants": ["m-near"]},
        },
        "merchants": {
            "m-near": {"epsilon": 4.5, "jobs": ["job-big", "job-old"]},
            "m-old": {"epsilon": 1.0, "jobs": ["job-old"]},
        },
    }


def _write_legacy(path: Path) -> bytes:
    raw = json.dumps(_legacy_state(), sort_keys=True).encode()
    path.write_bytes(raw)
    return raw


def test_a_legacy_json_ledger_is_imported_and_a_near_cap_merchant_still_refused(
    tmp_path: Path,
) -> None:
    """Opening the SQLite ledger imports privacy.json once: spent ε, lineage and histories stay."""
    _write_legacy(tmp_path / "privacy.json")
    ledger = PrivacyLedger(tmp_path / "privacy.sqlite")

    admitted, left_out = ledger.admit(
        job_id="job-new", budget=DPBudget(epsilon=1.0, delta=1e-5, lifetime_epsilon=LIFETIME),
        merchant_ids=["m-near", "m-old", "m-fresh"], lifetime_epsilon=LIFETIME,
    )

    assert left_out == ["m-near"] and admitted == ["m-fresh", "m-old"]
    assert ledger.merchant_spent("m-near") == 4.5
    assert ledger.merchant_spent("m-old") == 2.0
    assert ledger.jobs_of("m-near") == ["job-big", "job-old"]
    assert ledger.job_history("job-old") == [(5.0, 0.01, 10), (6.0, 0.01, 10)]
    assert ledger.job_history("job-old", "eval") == [(8.0, 0.1, 1)]
    with pytest.raises(BudgetExceeded):  # the platform-side check refuses it too
        ledger.reserve(job_id="job-other", budget=DPBudget(epsilon=1.0, lifetime_epsilon=LIFETIME),
                       merchant_ids=["m-near"])
    assert not (tmp_path / "privacy.json").exists()
    assert (tmp_path / "privacy.json.imported").is_file()
    # A second open does not import again (m-near would read 9.0).
    assert PrivacyLedger(tmp_path / "privacy.json").merchant_spent("m-near") == 4.5
    # The job's exclusion came along: m-gone sits out job-old's later rounds.
    assert ledger.admit(job_id="job-old", budget=DPBudget(epsilon=1.0, lifetime_epsilon=LIFETIME),
                        merchant_ids=["m-gone"], lifetime_epsilon=LIFETIME,
                        dry_run=True) == ([], ["m-gone"])


def test_a_dry_run_and_a_query_import_too(tmp_path: Path) -> None:
    """Even a first read (a dry run) sees the imported accounting, never an empty ledger."""
    _write_legacy(tmp_path / "privacy.json")
    assert PrivacyLedger(tmp_path / "privacy.json").admit(
        job_id="j", budget=DPBudget(epsilon=1.0, lifetime_epsilon=LIFETIME),
        merchant_ids=["m-near"], lifetime_epsilon=LIFETIME, dry_run=True,
    ) == ([], ["m-near"])


def test_an_import_interrupted_before_the_rename_is_finished_not_repeated(tmp_path: Path) -> None:
    """Marker committed, file not yet renamed (a crash): the next open only renames it."""
    raw = _write_legacy(tmp_path / "privacy.json")
    PrivacyLedger(tmp_path / "privacy.sqlite").merchant_spent("m-near")
    (tmp_path / "privacy.json.imported").rename(tmp_path / "privacy.json")  # as if never renamed

    assert PrivacyLedger(tmp_path / "privacy.sqlite").merchant_spent("m-near") == 4.5
    assert (tmp_path / "privacy.json.imported").read_bytes() == raw


def test_a_legacy_file_that_changed_after_import_is_refused(tmp_path: Path) -> None:
    """A JSON ledger written to after its import holds charges the database lacks: refuse."""
    _write_legacy(tmp_path / "privacy.json")
    PrivacyLedger(tmp_path / "privacy.sqlite").merchant_spent("m-near")
    state = _legacy_state()
    state["merchants"]["m-x"] = {"epsilon": 4.9, "jobs": ["job-old"]}  # type: ignore[index]
    (tmp_path / "privacy.json").write_text(json.dumps(state))

    with pytest.raises(FederationError) as exc:
        PrivacyLedger(tmp_path / "privacy.sqlite").merchant_spent("m-x")
    assert exc.value.code == "LEGACY_PRIVACY_LEDGER"
    assert (tmp_path / "privacy.json").is_file()  # left for the operator


def test_a_legacy_file_beside_a_database_with_accounting_is_refused(tmp_path: Path) -> None:
    PrivacyLedger(tmp_path / "privacy.sqlite").reserve(
        job_id="j", budget=DPBudget(epsilon=1.0, lifetime_epsilon=LIFETIME), merchant_ids=["a"]
    )
    _write_legacy(tmp_path / "privacy.json")
    with pytest.raises(FederationError) as exc:
        PrivacyLedger(tmp_path / "privacy.sqlite").merchant_spent("a")
    assert exc.value.code == "LEGACY_PRIVACY_LEDGER"


def test_a_failed_import_leaves_nothing_and_the_file_in_place(tmp_path: Path) -> None:
    """A malformed JSON ledger: the import rolls back, the file stays, the next open retries."""
    (tmp_path / "privacy.json").write_text('{"jobs": {"j": {"epsilon": 1.0}}, "merchants": {}}')
    with pytest.raises(KeyError):
        PrivacyLedger(tmp_path / "privacy.sqlite").merchant_spent("a")
    assert (tmp_path / "privacy.json").is_file()
    _write_legacy(tmp_path / "privacy.json")
    assert PrivacyLedger(tmp_path / "privacy.sqlite").merchant_spent("m-near") == 4.5


def test_an_admit_that_fails_midway_charges_nobody(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three chunks of merchants; the second chunk's write fails: the first's charges roll back."""
    ledger = PrivacyLedger(tmp_path / "privacy.sqlite")
    ids = [f"m{i:05d}" for i in range(2 * CHUNK + 10)]
    real = dp_module._charge
    calls = []

    def failing(conn, job_id, rows):  # type: ignore[no-untyped-def]
        calls.append(len(rows))
        if len(calls) == 2:
            raise OSError("disk full")
        real(conn, job_id, rows)

    monkeypatch.setattr(dp_module, "_charge", failing)
    with pytest.raises(OSError):
        ledger.admit(job_id="j", budget=DPBudget(epsilon=1.0, lifetime_epsilon=LIFETIME),
                     merchant_ids=ids, lifetime_epsilon=LIFETIME)
    monkeypatch.setattr(dp_module, "_charge", real)

    assert calls == [CHUNK, CHUNK]
    assert ledger.merchant_spent(ids[0]) == 0.0 and ledger.jobs_of(ids[0]) == []
    with pytest.raises(KeyError):  # not even the job row landed
        ledger.record("j", [(1.0, 0.1, 1)])
    assert ledger.admit(job_id="j", budget=DPBudget(epsilon=1.0, lifetime_epsilon=LIFETIME),
                        merchant_ids=ids, lifetime_epsilon=LIFETIME) == (ids, [])
    assert ledger.merchant_spent(ids[-1]) == 1.0


def test_a_rise_that_fails_midway_charges_nobody(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = PrivacyLedger(tmp_path / "privacy.sqlite")
    ids = [f"m{i:05d}" for i in range(CHUNK + 10)]
    ledger.admit(job_id="j", budget=DPBudget(epsilon=1.0, lifetime_epsilon=LIFETIME),
                 merchant_ids=ids, lifetime_epsilon=LIFETIME)

    def boom(conn, job_id, rows):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    monkeypatch.setattr(dp_module, "_charge", boom)  # after the rise, before new charges
    with pytest.raises(OSError):
        ledger.admit(job_id="j", budget=DPBudget(epsilon=2.0, lifetime_epsilon=LIFETIME),
                     merchant_ids=["new"], lifetime_epsilon=LIFETIME)
    assert {ledger.merchant_spent(m) for m in ids} == {1.0}


def test_epsilon_sums_are_the_same_floats_in_the_same_order(tmp_path: Path) -> None:
    """0.1 charged three times reads 0.1 + 0.1 + 0.1 (0.30000000000000004), not 0.3."""
    ledger = PrivacyLedger(tmp_path / "privacy.sqlite")
    for j in ("a", "b", "c"):
        ledger.reserve(job_id=j, budget=DPBudget(epsilon=0.1, lifetime_epsilon=LIFETIME),
                       merchant_ids=["m"])
    ledger.admit(job_id="d", budget=DPBudget(epsilon=0.7, lifetime_epsilon=LIFETIME),
                 merchant_ids=["m"], lifetime_epsilon=LIFETIME)
    ledger.admit(job_id="d", budget=DPBudget(epsilon=0.9, lifetime_epsilon=LIFETIME),
                 merchant_ids=["m"], lifetime_epsilon=LIFETIME)  # a rise of 0.9 - 0.7
    assert ledger.merchant_spent("m") == 0.1 + 0.1 + 0.1 + 0.7 + (0.9 - 0.7)
    assert ledger.jobs_of("m") == ["a", "b", "c", "d"]


def test_a_dry_run_gives_the_real_answer_and_writes_nothing(tmp_path: Path) -> None:
    """With a rise that excludes a charged merchant: the dry run agrees, and changes no byte."""
    ledger = PrivacyLedger(tmp_path / "privacy.sqlite")
    ledger.reserve(job_id="old", budget=DPBudget(epsilon=3.5, lifetime_epsilon=LIFETIME),
                   merchant_ids=["tight"])
    ledger.admit(job_id="j", budget=DPBudget(epsilon=1.0, lifetime_epsilon=LIFETIME),
                 merchant_ids=["tight", "roomy", "other"], lifetime_epsilon=LIFETIME)
    budget = DPBudget(epsilon=2.0, lifetime_epsilon=LIFETIME)  # +1.0: tight would reach 5.5
    ids = ["tight", "roomy", "late"]

    def files() -> str:
        return "".join(
            hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp_path.iterdir())
        )

    before = files()
    dry = ledger.admit(job_id="j", budget=budget, merchant_ids=ids, lifetime_epsilon=LIFETIME,
                       dry_run=True)
    assert files() == before
    real = ledger.admit(job_id="j", budget=budget, merchant_ids=ids, lifetime_epsilon=LIFETIME)
    assert dry == real == (["late", "roomy"], ["tight"])
    assert ledger.merchant_spent("tight") == 4.5  # not charged the rise
    assert ledger.merchant_spent("other") == 2.0  # charged it, though not asked for this round
    assert ledger.merchant_spent("late") == 2.0


def test_concurrent_reserves_cannot_both_spend_one_merchants_room(tmp_path: Path) -> None:
    """Two jobs of ε 3 race for a merchant with lifetime 5: exactly one is charged."""
    barrier = threading.Barrier(2)
    outcome: dict[str, str] = {}

    def run(job: str) -> None:
        ledger = PrivacyLedger(tmp_path / "privacy.sqlite")
        barrier.wait()
        try:
            ledger.reserve(job_id=job, budget=DPBudget(epsilon=3.0, lifetime_epsilon=LIFETIME),
                           merchant_ids=["m"])
            outcome[job] = "charged"
        except BudgetExceeded:
            outcome[job] = "refused"

    threads = [threading.Thread(target=run, args=(j,)) for j in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcome.values()) == ["charged", "refused"]
    assert PrivacyLedger(tmp_path / "privacy.sqlite").merchant_spent("m") == 3.0


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ledger.db").write_text("{}")
    with pytest.raises(FederationError) as exc:
        PrivacyLedger(tmp_path / "ledger.db").merchant_spent("m")
    assert exc.value.code == "LEGACY_PRIVACY_LEDGER"


def test_summary_aggregates_without_loading_merchants(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "privacy.sqlite")
    ledger.reserve(job_id="j", budget=DPBudget(epsilon=1.0, lifetime_epsilon=LIFETIME),
                   merchant_ids=["a", "b"])
    ledger.reserve(job_id="k", budget=DPBudget(epsilon=2.0, lifetime_epsilon=LIFETIME),
                   merchant_ids=["b"])
    s = ledger.summary()
    assert s.job_epsilon == {"j": 0.0, "k": 0.0}
    assert (s.merchants_charged, s.max_merchant_epsilon) == (2, 3.0)


def test_a_merchant_named_twice_in_one_call_is_charged_once(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "privacy.sqlite")
    budget = DPBudget(epsilon=1.0, lifetime_epsilon=LIFETIME)
    assert ledger.admit(job_id="j", budget=budget, merchant_ids=["b", "a", "b", "b"],
                        lifetime_epsilon=LIFETIME) == (["a", "b"], [])
    ledger.reserve(job_id="k", budget=budget, merchant_ids=["b", "b"])
    assert ledger.merchant_spent("b") == 2.0 and ledger.jobs_of("b") == ["j", "k"]
    assert ledger.check(job_id="x", budget=DPBudget(epsilon=4.0, lifetime_epsilon=LIFETIME),
                        merchant_ids=["b", "a", "b"]).over_budget == ("b",)
