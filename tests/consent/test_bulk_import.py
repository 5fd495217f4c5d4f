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
    with pytest.raises(ImportRefused) as err, sessions() as s, s.begin():
        import_consents(s, _lines([_line(0), _line(1)]), key=CM_KEY, at=at)
    assert err.value.code == "DUPLICATE_ID" and err.value.line == 2
    assert counts(sessions) == before


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
