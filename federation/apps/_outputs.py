"""What a job leaves in its output directory: result, model, lineage, scores, signals."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "RESULT_FILE", "MODEL_FILE", "LINEAGE_FILE", "SCORES_FILE", "SIGNALS_FILE", "write_result"
]

RESULT_FILE = "result.json"
MODEL_FILE = "model.npz"
LINEAGE_FILE = "lineage.json"
SCORES_FILE = "scores.csv"
SIGNALS_FILE = "signals.csv"
"""A signals job's release: ``merchant_id,isv_id,signal,value``, one row per merchant,
ISV and signal (:mod:`federation.apps._signals`)."""


def write_result(out_dir: Path, doc: dict[str, Any]) -> None:
    """Write ``result.json`` atomically (a reader never sees half a document)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{RESULT_FILE}.tmp"
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str), "utf-8")
    os.replace(tmp, out_dir / RESULT_FILE)
