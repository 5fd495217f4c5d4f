"""Bulk consent import rows of ``bench.consent``: ``consent.import_consents`` vs two peers.

A JSON Lines file of ``n`` consents, each with a merchant's detached approval
(one Ed25519 key per merchant, generated before the clock starts), is imported
in one transaction on SQLite and on PostgreSQL (a fresh schema, dropped
afterwards), with one process and with two forked verifier processes
(``workers=2``). Peers, measured in the same run:

* **bare verification** of the same file's approvals: one Ed25519 ``verify`` per
  consent with keys, signatures and signing inputs decoded beforehand — the
  floor no correct import can beat on one core, timed right before each import
  so both see the same load;
* :func:`consent.grant` called once per consent in one transaction — the path
  ``fedgate consent grant`` takes, without the process start-up — on
  ``min(n, 2000)`` consents.

Correctness: every imported consent must come back from the cohort check with
its signature verified, or the run fails. ``python -m bench._bulk_consent`` runs
only these rows and prints them with the load average.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, text

import consent
from gateway.db import create_schema, make_engine, make_sessionmaker

from ._common import Row, add_exit_option, finish

__all__ = ["DEFAULT_BULK", "bulk_rows", "make_lines"]

DEFAULT_BULK = 20_000
_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def make_lines(n: int, now: datetime, prefix: str = "b") -> list[tuple[dict[str, Any], str, Any]]:
    """``n`` (terms, merchant approval, merchant public key PEM), one merchant key each."""
    out = []
    for i in range(n):
        terms = {
            "consent_id": f"c-{prefix}{i}", "merchant_id": f"{prefix}{i}",
            "data_provider": "isv-bulk", "data_consumer": "platform",
            "purposes": ["credit_scoring", "model_training"],
            "categories": ["cash_and_debt", "turnover"], "data_from": "2025-01-01",
            "data_to": "2026-12-31", "frequency": {"uses": 30, "per": "day"},
            "data_life_days": 90, "consent_start": (now - timedelta(hours=1)).isoformat(),
            "consent_expiry": (now + timedelta(days=90)).isoformat(),
            "created_at": now.isoformat(),
        }
        key = Ed25519PrivateKey.generate()
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        out.append((terms, consent.approve_artefact(consent.parse_terms(terms), key), pem))
    return out


def _verify_rate(docs: list[tuple[dict[str, Any], str, Any]]) -> float:
    """Bare Ed25519 verifications per second of the file's approvals (inputs pre-decoded)."""
    from joserfc.util import urlsafe_b64encode

    from consent._artefact import artefact_body
    from ledger import canonical_json

    jobs = []
    for terms, signature, pem in docs:
        head, _, sig = signature.split(".")
        body = canonical_json(artefact_body(consent.parse_terms(terms)))
        jobs.append((serialization.load_pem_public_key(pem.encode()),
                     base64.urlsafe_b64decode(sig + "=="),
                     head.encode() + b"." + urlsafe_b64encode(body)))
    started = time.perf_counter()
    for key, sig, message in jobs:
        key.verify(sig, message)  # type: ignore[union-attr]
    return len(jobs) / (time.perf_counter() - started)


def _rate(url: str, lines: list[str], cm: Ed25519PrivateKey, workers: int = 1) -> float:
    engine = make_engine(url)
    create_schema(engine)
    sessions = make_sessionmaker(engine)
    try:
        started = time.perf_counter()
        with sessions() as s, s.begin():
            result = consent.import_consents(s, lines, key=cm, workers=workers)
        seconds = time.perf_counter() - started
        with sessions() as s:
            use = consent.Use(data_provider="isv-bulk", data_consumer="platform",
                              purpose="model_training", categories=["turnover"],
                              at=datetime.now(UTC))
            got = consent.cohort_entries(s, use, consent_manager_key=cm.public_key())
        if result.count != len(lines) or len(got) != len(lines):
            raise RuntimeError(f"imported {result.count}, cohort sees {len(got)} of {len(lines)}")
    finally:
        engine.dispose()
    return len(lines) / seconds


def _grant_rate(url: str, docs: list[tuple[dict[str, Any], str, Any]],
                cm: Ed25519PrivateKey) -> float:
    engine = make_engine(url)
    create_schema(engine)
    sessions = make_sessionmaker(engine)
    keys = [serialization.load_pem_public_key(pem.encode()) for _, _, pem in docs]
    try:
        started = time.perf_counter()
        with sessions() as s, s.begin():
            for (terms, signature, _), key in zip(docs, keys, strict=True):
                consent.grant(s, consent.parse_terms(terms), key=cm, merchant_signature=signature,
                              merchant_key=key)  # type: ignore[arg-type]
        return len(docs) / (time.perf_counter() - started)
    finally:
        engine.dispose()


def _pg_schema(base: str) -> tuple[str, Callable[[], None]]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", drop


def bulk_rows(n: int, workdir: Path, *, postgres: bool = True) -> list[Row]:
    """Rows: import rate on SQLite (and PostgreSQL) with the one-grant-each peer's rate."""
    now = datetime.now(UTC)
    cm = Ed25519PrivateKey.generate()
    docs = make_lines(n, now)
    lines = [json.dumps({"terms": t, "merchant_signature": s, "merchant_key": p})
             for t, s, p in docs]
    peer_docs = make_lines(min(n, 2000), now, prefix="p")
    backends = [("SQLite", lambda tag: (f"sqlite:///{workdir / f'bulk-{tag}.db'}", lambda: None))]
    if postgres:
        base = os.environ.get("FEDGATE_TEST_POSTGRES_URL", _PG)
        backends.append(("PostgreSQL", lambda _tag: _pg_schema(base)))
    rows = []
    for name, make in backends:
        # Rates: Row.versus is fedgate ÷ peer (for the verify peer: the share of a bare
        # verification's speed the whole import keeps; 1× is the one-process floor).
        rates = {}
        for workers in (1, 2):
            verify = _verify_rate(docs)  # the same load as the import right after it
            url, drop = make(f"import{workers}")
            try:
                rate = rates[workers] = _rate(url, lines, cm, workers)
            finally:
                drop()
            rows.append(Row(f"consent import, {n:,} consents with approvals ({name}, "
                            f"{'one process' if workers == 1 else '2 verifier processes'}); "
                            "peer: bare Ed25519 verify of the same approvals", rate, "/s",
                            "bare verify", verify, "≥ 1,000 /s", rate >= 1000))
        url, drop = make("grant")
        try:
            peer = _grant_rate(url, peer_docs, cm)
        finally:
            drop()
        rows.append(Row(f"consent import, {n:,} consents with approvals ({name}, one "
                        "process); peer: one grant each", rates[1], "/s", "one grant each", peer,
                        "≥ 1,000 /s", rates[1] >= 1000))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Only the bulk-import rows, with the load average before and after (exit: ``finish``)."""
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m bench._bulk_consent")
    parser.add_argument("--bulk", type=int, default=DEFAULT_BULK)
    parser.add_argument("--no-postgres", action="store_true")
    add_exit_option(parser)
    args = parser.parse_args(argv)
    before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        rows = bulk_rows(args.bulk, Path(tmp), postgres=not args.no_postgres)
    after = os.getloadavg()
    print("| metric | fedgate | peer | fedgate ÷ peer | target | met |")
    print("|---|---:|---:|---:|---|---|")
    for r in rows:
        peer = "—" if r.peer_value is None else f"{r.peer_value:,.0f} {r.unit} ({r.peer})"
        met = "" if r.met is None else ("✔" if r.met else "✘")
        vs = "—" if r.versus is None else f"{r.versus:.2f}×"
        print(f"| {r.metric} | {r.value:,.0f} {r.unit} | {peer} | {vs} | {r.target} | {met} |")
    print(f"load average (1/5/15 min): before {before[0]:.1f}/{before[1]:.1f}/{before[2]:.1f}, "
          f"after {after[0]:.1f}/{after[1]:.1f}/{after[2]:.1f}")
    return finish(rows, no_fail=args.no_fail)


if __name__ == "__main__":
    raise SystemExit(main())
