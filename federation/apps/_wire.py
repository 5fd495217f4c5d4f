"""What the ServerApp puts on the wire: the job record and arrays as Flower records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord

from ..specs import ModelSpec, spec_to_run_config
from ._keys import (
    KEY_ARCH,
    KEY_BATCH_SIZE,
    KEY_CATEGORIES,
    KEY_DP_DELTA,
    KEY_DP_EPSILON,
    KEY_DP_MAX_GRAD_NORM,
    KEY_EPOCHS,
    KEY_HIDDEN,
    KEY_JOB_ID,
    KEY_LIFETIME_EPSILON,
    KEY_LR,
    KEY_MANIFEST,
    KEY_PROXIMAL_MU,
    KEY_ROUND,
    KEY_ROUNDS,
    KEY_SPEC,
)

__all__ = ["arrays_record", "weights_record", "job_record"]


def arrays_record(values: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in values.items()})


def weights_record(weights: Sequence[np.ndarray]) -> ArrayRecord:
    return ArrayRecord({str(i): Array(np.ascontiguousarray(w)) for i, w in enumerate(weights)})


def job_record(
    *, spec: ModelSpec, job_id: str, round: int, manifest: bytes, seed: int = 0
) -> ConfigRecord:
    """The job record a node receives with every message: ids, signed manifest, settings.

    ``seed`` seeds only the platform's own initial weights: no seed is sent, a node
    draws its noise and sampling from its own CSPRNG.
    """
    del seed
    rc = spec_to_run_config(spec)
    return ConfigRecord(
        {
            KEY_JOB_ID: job_id,
            KEY_ROUND: round,
            KEY_ROUNDS: spec.rounds,
            KEY_MANIFEST: manifest,
            KEY_ARCH: spec.arch,
            KEY_HIDDEN: spec.hidden,
            KEY_EPOCHS: spec.local_epochs,
            KEY_BATCH_SIZE: spec.batch_size,
            KEY_LR: spec.lr,
            KEY_PROXIMAL_MU: spec.proximal_mu,
            KEY_CATEGORIES: ",".join(spec.categories),
            KEY_SPEC: spec.name,
            KEY_DP_EPSILON: float(rc["dp-epsilon"]),
            KEY_DP_DELTA: float(rc["dp-delta"]),
            KEY_DP_MAX_GRAD_NORM: float(rc["dp-max-grad-norm"]),
            KEY_LIFETIME_EPSILON: float(rc["dp-lifetime-epsilon"]),
        }
    )
