"""The evaluation hold-out: which merchants a node keeps out of training.

A merchant is held out when ``sha256(id)[0] % buckets == 0`` — a fifth by default.
The nodes (train outside it, evaluate inside it), the job configuration, the
demo and the benchmarks all use this one rule.
"""

from __future__ import annotations

import hashlib

__all__ = ["HOLDOUT_BUCKETS", "is_holdout"]

HOLDOUT_BUCKETS = 5
"""Buckets of the default rule: one merchant in five is held out."""


def is_holdout(merchant_id: str, buckets: int = HOLDOUT_BUCKETS) -> bool:
    """Deterministic evaluation split: ``sha256(id)[0] % buckets == 0`` (a fifth by default)."""
    return hashlib.sha256(merchant_id.encode()).digest()[0] % buckets == 0
