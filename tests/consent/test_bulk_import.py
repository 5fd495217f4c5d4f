"""``consent.import_consents``: all or nothing, every merchant approval verified (both backends)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session, sessionmaker

import consent
from consent import (
    ImportRefused,
    approve_artefact,
    cohort_entries,
    get_consent,
    import_consents,
    parse_terms,
    sign_artefact,
)
from consent._models import ArtefactRow

from .factories import CM_KEY, CONSUMER, PROVIDER, T0, counts, ledger_kinds, terms_dict

_KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32) for i in range(6)]


def _pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _line(i: int, **changes: Any) -> dict[str, Any]:
    terms = terms_dict(f"c-{i}", f"m-{i}")
    key = _KEYS[i % len(_KEYS)]
    return {"terms": terms, "merchant_signature": approve_artefact(parse_terms(terms), key),
            "merchant_key": _pem(key), **changes}


def _lines(docs: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(d) for d in docs]


def test_import_writes_active_consents_the_cohort_check_sees(
    sessions: sessionmaker[Session],
) -> None:
    """Every line becomes an ACTIVE consent with its two ledger entries, usable at once."""
    at = T0 + timedelta(hours=2)
    with sessions() as s, s.begin():
        result = import_consents(s, _lines([_line(i) for i in range(6)]), key=CM_KEY, at=at)
    assert result.count == 6 and result.last_seq - result.first_seq == 11
    assert counts(sessions) == (6, 12, 6, 12)
    assert ledger_kinds(sessions) == ["consent.granted", "consent.activated"] * 6
    with sessions() as s:
        view = get_consent(s, "c-3")
        use = consent.Use(data_provider=PROVIDER, data_consumer=CONSUMER,
                          purpose="model_training", categories=["margins"], at=at)
        entries = cohort_entries(s, use, consent_manager_key=CM_KEY.public_key())
    assert view.state.status is consent.Status.ACTIVE
    with sessions() as s:
        row = s.get(ArtefactRow, "c-3")
    assert row is not None and row.merchant_signature and row.merchant_key == _pem(_KEYS[3])
    assert sorted(e.merchant_id for e in entries) == [f"m-{i}" for i in range(6)]


def test_bulk_tokens_equal_single_grant_tokens() -> None:
    """The fast signer writes the byte-identical JWS that ``sign_artefact`` would."""
    from consent._artefact import artefact_body
    from consent._bulk import _sign
    from ledger import canonical_json

    terms = parse_terms(terms_dict())
    fast = _sign(terms, canonical_json(artefact_body(terms)), CM_KEY)
    assert fast.token == sign_artefact(terms, CM_KEY).token


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        # The curious platform widens the terms after the merchant signed them.
        (lambda d: d["terms"].update(purposes=["credit_scoring", "model_training",
                                               "marketing"]), "UNKNOWN_PURPOSE"),
        (lambda d: d["terms"].update(categories=["margins", "turnover", "cost_of_goods",
                                                 "cash_and_debt"]), "SIGNATURE_INVALID"),
        (lambda d: d.update(merchant_key=_pem(_KEYS[0])), "SIGNATURE_INVALID"),
        (lambda d: d.update(merchant_signature="x.y.z"), "SIGNATURE_INVALID"),
        (lambda d: d.update(_line(1)), "DUPLICATE_ID"),  # c-1 again, properly signed
        (lambda d: d["terms"].pop("created_at"), "MALFORMED"),
    ],
)
@pytest.mark.parametrize("workers", [1, 2])
def test_one_bad_line_refuses_the_whole_file(
    sessions: sessionmaker[Session], bad: Any, code: str, workers: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tampered, unsigned, duplicated or malformed line: nothing of the file is written.

    With worker processes (runs of two lines each here) the same line and code are refused,
    even when a later run's worker finds its own bad line first.
    """
    monkeypatch.setattr("consent._bulk._VERIFY_CHUNK", 2)
    docs = [_line(i) for i in range(7)]
    bad(docs[3])
    docs[5]["merchant_signature"] = docs[6]["merchant_signature"]  # a later bad line too
    with pytest.raises(ImportRefused) as err, sessions() as s, s.begin():
        import_consents(s, _lines(docs), key=CM_KEY, at=T0 + timedelta(hours=2),
                        workers=workers)
    assert err.value.line == 4 and err.value.code == code
    assert str(err.value).count("line 4") == 1
    assert counts(sessions) == (0, 0, 0, 0)


def test_workers_verify_every_approval(sessions: sessionmaker[Session],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Forked verifiers import the same consents; a lone bad approval in the last run refuses."""
    monkeypatch.setattr("consent._bulk._VERIFY_CHUNK", 2)
    at = T0 + timedelta(hours=2)
    docs = [_line(i) for i in range(7)]
    docs[6]["merchant_key"] = _pem(_KEYS[5])  # line 7 was approved with key 0
    with pytest.raises(ImportRefused) as err, sessions() as s, s.begin():
        import_consents(s, _lines(docs), key=CM_KEY, at=at, workers=2)
    assert err.value.line == 7 and err.value.code == "SIGNATURE_INVALID"
    assert counts(sessions) == (0, 0, 0, 0)
    with sessions() as s, s.begin():
        result = import_consents(s, _lines(docs[:6]), key=CM_KEY, at=at, workers=2)
    assert result.count == 6 and counts(sessions) == (6, 12, 6, 12)


def test_an_id_already_stored_refuses_the_file(sessions: sessionmaker[Session]) -> None:
    """Importing a consent id that exists is DUPLICATE_ID and leaves the database as it was."""
    at = T0 + timedelta(hours=2)
    with sessions() as s, s.begin():
        import_consents(s, _lines([_line(1)]), key=CM_KEY, at=at)
    before = counts(sessions)
    with sessions() as s:
        log_before = _log_state(s)
    with pytest.raises(ImportRefused) as err, sessions() as s, s.begin():
        import_consents(s, _lines([_line(0), _line(1)]), key=CM_KEY, at=at)
    assert err.value.code == "DUPLICATE_ID" and err.value.line == 2
    assert counts(sessions) == before
    with sessions() as s:
        assert _log_state(s) == log_before


def test_imported_consents_fold_from_the_log(sessions: sessionmaker[Session]) -> None:
    """Bulk-imported consents pass the log-derived single check and the whole-log consent fold."""
    from consent import check
    from consent._integrity import verify_consent_log

    at = T0 + timedelta(hours=2)
    with sessions() as s, s.begin():
        import_consents(s, _lines([_line(i) for i in range(3)]), key=CM_KEY, at=at)
    with sessions() as s:
        use = consent.Use(merchant_id="m-1", data_provider=PROVIDER, data_consumer=CONSUMER,
                          purpose="model_training", categories=["margins"], at=at)
        decision = check(s, use, consent_manager_key=CM_KEY.public_key())
        failure = verify_consent_log(s)
    assert decision.allowed, decision
    assert failure is None, failure


def test_spliced_event_bodies_equal_the_grant_bodies() -> None:
    """The bulk path's ledger bodies are ``canonical_json`` of the bodies ``grant`` writes.

    Ids with quotes, backslashes, control characters and non-ASCII letters are escaped as
    RFC 8785 escapes them.
    """
    from dataclasses import replace

    from consent._artefact import SignedArtefact
    from consent._bulk import _event_bodies
    from consent._lifecycle import Status
    from consent._writes import event_body
    from ledger import canonical_json

    odd = replace(parse_terms(terms_dict()), consent_id='c-"1\\\n\x01', merchant_id="m-ü\u2028",
                  data_provider="isv-é", data_consumer="l\t1")
    for terms in (parse_terms(terms_dict()), odd):
        s = SignedArtefact(artefact=terms, token="h.p.s", hash="ab" * 32)
        granted, activated = _event_bodies(s, 'sig"\\é')
        assert granted == canonical_json({**event_body(s, 1, None, Status.PENDING, {}),
                                          "artefact": s.token, "merchant_signature": 'sig"\\é'})
        assert activated == canonical_json(
            event_body(s, 2, Status.PENDING, Status.ACTIVE, {"merchant_approval": True}))


def _log_state(s: Session) -> tuple[int, bytes, list[tuple[Any, ...]]]:
    from sqlalchemy import select

    from ledger import tree_head
    from ledger._models import LogEntryRow

    head = tree_head(s)
    rows = s.execute(select(LogEntryRow.seq, LogEntryRow.kind, LogEntryRow.leaf_data,
                            LogEntryRow.leaf_hash).order_by(LogEntryRow.seq)).all()
    return head.size, head.root, [(q, k, bytes(d), bytes(h)) for q, k, d, h in rows]


def test_batch_log_equals_the_per_entry_log(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
) -> None:
    """One batch append writes the same leaves, head and root as appending entry by entry.

    The same file is imported twice into a fresh database: once with each body appended
    by itself through ``ledger.append_entry`` (rolled back), once through the batch. Then
    the live-log check, the offline audit of an export and the consent refold pass.
    """
    import ledger
    from consent._integrity import verify_consent_log

    at = T0 + timedelta(hours=2)
    lines = _lines([_line(i) for i in range(5)])
    with sessions() as s, s.begin():  # an earlier entry, so the batch starts mid-tree
        ledger.append_entry(s, "test.before", {"n": 1}, at=at)

    def one_at_a_time(session: Session, entries: Any, *, at: Any = None) -> int:
        seqs = [ledger.append_entry(session, kind, json.loads(body), at=at).seq
                for kind, body in entries]
        return seqs[0]

    s = sessions()
    s.begin()
    with monkeypatch.context() as m:
        m.setattr("consent._bulk.append_many", one_at_a_time)
        import_consents(s, lines, key=CM_KEY, at=at)
    per_entry = _log_state(s)
    s.rollback()
    s.close()
    assert counts(sessions) == (0, 0, 0, 1)

    with sessions() as s, s.begin():
        result = import_consents(s, lines, key=CM_KEY, at=at)
    with sessions() as s:
        batch = _log_state(s)
    assert (result.first_seq, result.last_seq) == (1, 10)
    assert batch == per_entry and batch[0] == 11

    log_key = Ed25519PrivateKey.from_private_bytes(b"\x0c" * 32)
    with sessions() as s, s.begin():
        ledger.sign_checkpoint(s, log_key, "fedgate.test/bulk")
    path = tmp_path / "log.jsonl"
    with sessions() as s:
        live = ledger.verify_log(s, ledger.make_vkey("fedgate.test/bulk", log_key.public_key()))
        ledger.export_log(s, path, log_key.public_key())
        refold = verify_consent_log(s)
    audit = ledger.audit_export(path, vkey=ledger.make_vkey("fedgate.test/bulk",
                                                             log_key.public_key()))
    assert live.ok and live.size == 11, live
    assert audit.ok and audit.root == batch[1] and audit.checkpoints_verified == 1, audit
    assert refold is None, refold
