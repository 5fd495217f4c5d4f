"""The end of a training job: the model file and its lineage next to it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ArrayRecord

from ..features import BinEncoder
from ..schema import job_features
from ..specs import spec_to_run_config
from ..standardise import StandardEncoder
from ._outputs import LINEAGE_FILE, MODEL_FILE

if TYPE_CHECKING:
    from ._job import Job

__all__ = ["save_model"]


def save_model(
    job: Job, final: ArrayRecord, encoder: BinEncoder | StandardEncoder,
    rounds: dict[int, dict[str, Any]],
) -> None:
    """Write ``model.npz`` (weights and encoder) and ``lineage.json`` (job, rounds,
    manifest roots, receipts, ε, aggregation, best round) to the job's ``out_dir``."""
    s, spec = job.settings, job.settings.spec
    s.out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(
        s.out_dir / MODEL_FILE,
        **{f"w{i}": w for i, w in enumerate(final.to_numpy_ndarrays())},
        **{f"enc::{k}": v for k, v in encoder.to_arrays().items()},
    )
    lineage = {
        "job_id": s.job_id,
        "spec": spec_to_run_config(spec),
        "rounds": spec.rounds,
        "nodes": sorted(job.nodes.values()),
        "statistics_manifest_roots": job.stats_roots,
        "manifest_roots": {str(r): v["manifest_roots"] for r, v in rounds.items()},
        "receipts": [{k: v for k, v in rc.items() if k != "receipt"} for rc in job.receipts],
        "epsilon": job.epsilon,
        "delta": spec.dp.delta if spec.dp else 0.0,
        "features": job_features(spec.categories, spec.extras),
        "aggregation": job.aggregation,
        "best_round": job.best_round,
    }
    (s.out_dir / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2, sort_keys=True), "utf-8")
