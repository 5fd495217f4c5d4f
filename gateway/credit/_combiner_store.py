"""The fitted combiner, persisted so that a later process can turn a node's g score into a PD.

Line decisions use the combiner fitted at the platform on ``f``'s cross-fitted scores
and the consented g scores (:func:`gateway.credit.platform_pds`). Post-loan monitoring
re-scores merchants with open loans and must map their new g to a PD with *the same*
calibration, in another process (``fedgate monitor run --rescore``). So every line
computation stores what that mapping needs:

* the two logistic regressions' coefficients (exact, as ``repr`` of the float):
  ``PD_f = σ(a0 + a1·logit f)`` and ``PD_with = σ(b0 + b1·logit f + b2·logit g)``;
* each merchant's ``f`` score (the platform side of the second formula);

as one canonical-JSON document ``<data-dir>/credit/combiners/<sha256>.json``. Its SHA-256
and the coefficients go to the ledger as a ``credit.combiner`` entry (``version`` counts
the distinct documents, 1, 2, …); the decisions name it in their model versions
(``logit2@<sha256[:16]>``). Loading checks the file against the ledger's hash, so an
edited file is refused rather than used. With several ISV scores for one merchant the
PD reads the mean logit of its scores, as at origination.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

import ledger
from ledger._models import LogEntryRow

from ._errors import CreditError
from ._logodds import logit, sigmoid

__all__ = [
    "COMBINER_ENTRY",
    "COMBINER_SUBDIR",
    "StoredCombiner",
    "save_combiner",
    "load_combiner",
]

COMBINER_ENTRY = "credit.combiner"
COMBINER_SUBDIR = Path("credit") / "combiners"
"""Where documents live, under the data directory."""
FORMAT = "fedgate.combiner/1"




@dataclass(frozen=True, slots=True)
class StoredCombiner:
    """A persisted combiner, as loaded (hash checked against the ledger).

    Attributes
    ----------
    version : int
        1 for the first distinct document, then 2, 3, ….
    sha256 : str
        Of the document's bytes; recorded in the ``credit.combiner`` entry.
    platform : tuple[float, float]
        ``(a0, a1)``.
    erp : tuple[float, float, float] | None
        ``(b0, b1, b2)``; ``None`` when the combiner could not use ERP scores.
    f : Mapping[str, float]
        Each merchant's ``f`` score at origination.
    """

    version: int
    sha256: str
    platform: tuple[float, float]
    erp: tuple[float, float, float] | None
    f: Mapping[str, float]

    @property
    def model_id(self) -> str:
        """How decisions and monitoring passes name this combiner."""
        return f"logit2@{self.sha256[:16]}"

    def pds_now(self, scores: pd.DataFrame) -> dict[str, float]:
        """PD with ERP data for each merchant in ``scores`` (``merchant_id``, ``g``).

        Merchants without an origination ``f`` (off-platform) are left out, as are all
        merchants when the combiner has no ERP part. Several scores for one merchant:
        the mean of their logits.
        """
        if self.erp is None:
            return {}
        per: dict[str, list[float]] = {}
        for m, g in zip(scores["merchant_id"].astype(str), scores["g"].astype(float), strict=True):
            if m in self.f:
                per.setdefault(m, []).append(g)
        ids = sorted(per)
        if not ids:
            return {}
        lf = logit(np.asarray([self.f[m] for m in ids]))
        lg = np.asarray([float(np.mean(logit(np.asarray(per[m])))) for m in ids])
        b0, b1, b2 = self.erp
        pd_ = sigmoid(b0 + b1 * lf + b2 * lg)
        return {m: float(p) for m, p in zip(ids, pd_, strict=True)}


def _lr(model: Any) -> list[float]:
    """Intercept then coefficients of a fitted ``LogisticRegression``."""
    return [float(model.intercept_[0]), *(float(c) for c in model.coef_[0])]


def _document(
    combiner: Any, merchant_ids: Sequence[str] | np.ndarray, f_scores: np.ndarray
) -> bytes:
    platform = getattr(combiner, "_platform", None)
    if platform is None:
        raise CreditError("the combiner is not fitted", code="COMBINER_NOT_FITTED")
    erp = getattr(combiner, "_erp", None)
    f = np.asarray(f_scores, dtype=np.float64)
    if len(merchant_ids) != f.size or not np.isfinite(f).all():
        raise CreditError("one finite f score per merchant is needed", code="BAD_INPUT")
    doc = {
        "format": FORMAT,
        "kind": "logit2",
        "platform": [repr(v) for v in _lr(platform)],
        "erp": None if erp is None else [repr(v) for v in _lr(erp)],
        "f": {str(m): repr(float(v)) for m, v in zip(merchant_ids, f, strict=True)},
    }
    return ledger.canonical_json(doc)


def _entries(session: Session) -> list[tuple[int, dict[str, Any]]]:
    rows = session.execute(
        select(LogEntryRow.seq, LogEntryRow.leaf_data)
        .where(LogEntryRow.kind == COMBINER_ENTRY)
        .order_by(LogEntryRow.seq)
    )
    return [(int(seq), ledger.parse_canonical(bytes(leaf))["body"]) for seq, leaf in rows]


def _path(directory: Path, sha: str) -> Path:
    return directory / f"{sha}.json"


def _parse(data: bytes, version: int, sha: str) -> StoredCombiner:
    doc = ledger.parse_canonical(data)
    if doc.get("format") != FORMAT:
        raise CreditError(f"combiner {sha[:16]} has format {doc.get('format')!r}", code="BAD_FILE")
    a = [float(v) for v in doc["platform"]]
    b = None if doc["erp"] is None else [float(v) for v in doc["erp"]]
    return StoredCombiner(
        version=version,
        sha256=sha,
        platform=(a[0], a[1]),
        erp=None if b is None else (b[0], b[1], b[2]),
        f={str(m): float(v) for m, v in doc["f"].items()},
    )


def save_combiner(
    session: Session,
    directory: Path,
    combiner: Any,
    merchant_ids: Sequence[str] | np.ndarray,
    f_scores: np.ndarray,
    *,
    at: datetime | None = None,
) -> StoredCombiner:
    """Write the combiner's document and (if new) its ``credit.combiner`` ledger entry.

    Parameters
    ----------
    session : Session
        The caller's transaction (the entry commits with the line decisions).
    directory : Path
        Where documents live (``<data-dir>/credit/combiners``).
    combiner : federation.models.Combiner
        Fitted.
    merchant_ids, f_scores
        Each merchant's ``f`` score, aligned.

    Returns
    -------
    StoredCombiner
        The same version as before when the document is unchanged (idempotent).
    """
    data = _document(combiner, merchant_ids, f_scores)
    sha = hashlib.sha256(data).hexdigest()
    directory.mkdir(parents=True, exist_ok=True)
    path = _path(directory, sha)
    if not path.is_file() or path.read_bytes() != data:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: a reader never sees half a document
    known = _entries(session)
    for _, body in known:
        if body.get("sha256") == sha:
            return _parse(data, int(body["version"]), sha)
    version = len(known) + 1
    doc = ledger.parse_canonical(data)
    ledger.append_entry(
        session,
        COMBINER_ENTRY,
        {
            "version": version,
            "sha256": sha,
            "file": path.name,
            "kind": doc["kind"],
            "platform": doc["platform"],
            "erp": doc["erp"],
            "merchants": len(doc["f"]),
        },
        at=at or datetime.now(UTC),
    )
    return _parse(data, version, sha)


def load_combiner(session: Session, directory: Path, sha256: str | None = None) -> StoredCombiner:
    """The latest persisted combiner (or the one with ``sha256``), its file checked.

    Raises
    ------
    CreditError
        ``NO_COMBINER`` when none was ever fitted (or ``sha256`` is unknown),
        ``COMBINER_MISSING`` when its file is gone, ``COMBINER_MISMATCH`` when the file's
        hash differs from the ledger's.
    """
    known = _entries(session)
    if sha256 is not None:
        known = [(s, b) for s, b in known if b.get("sha256") == sha256]
    if not known:
        raise CreditError(
            "no combiner has been fitted yet: compute lines first "
            "(`fedgate credit decide`, or `fedgate demo`)"
            if sha256 is None
            else f"no combiner {sha256[:16]} in the ledger",
            code="NO_COMBINER",
        )
    _, body = known[-1]
    sha = str(body["sha256"])
    path = _path(directory, sha)
    if not path.is_file():
        raise CreditError(f"combiner file {path} is missing", code="COMBINER_MISSING")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha:
        raise CreditError(
            f"{path} does not match the ledger's SHA-256 for combiner v{body['version']}; "
            "refusing to score with it",
            code="COMBINER_MISMATCH",
        )
    return _parse(data, int(body["version"]), sha)
