"""Bulk consent import rows of ``bench.consent``: ``consent.import_consents`` vs one grant each.

A JSON Lines file of ``n`` consents, each with a merchant's detached approval
(one Ed25519 key per merchant, generated before the clock starts), is imported
in one transaction on SQLite and on PostgreSQL (a fresh schema, dropped
afterwards). The peer is :func:`consent.grant` called once per consent in one
transaction — the path ``fedgate consent grant`` takes, without the process
start-up — measured on ``min(n, 2000)`` consents in the same run. Correctness:
every imported consent must come back from the cohort check with its signature
verified, or the run fails.
"""

from __future__ import annotations

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

from ._common import Row

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


def _rate(url: str, lines: list[str], cm: Ed25519PrivateKey) -> float:
    engine = make_engine(url)
    create_schema(engine)
    sessions = make_sessionmaker(engine)
    try:
        started = time.perf_counter()
        with sessions() as s, s.begin():
            result = consent.import_consents(s, lines, key=cm)
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
        url, drop = make("import")
        try:
            rate = _rate(url, lines, cm)
        finally:
            drop()
        url, drop = make("grant")
        try:
            peer = _grant_rate(url, peer_docs, cm)
        finally:
            drop()
        # A rate: Row.versus is fedgate ÷ peer for a "/s" unit (higher is better).
        rows.append(Row(f"consent import, {n:,} consents with approvals ({name}); peer: "
                        "one grant each", rate, "/s", "one grant each", peer, "≥ 1,000 /s",
                        rate >= 1000))
    return rows
