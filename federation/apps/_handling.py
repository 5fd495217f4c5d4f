"""What the node's handlers share: the request's cohort, policy and DP budget, the message's
model and encoder, hold-out selection, noisy metrics, and data errors as error replies.

Every helper reads the current request (:func:`current_request`), which exists only
after the manifest mod verified the message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import torch
from flwr.app import ConfigRecord, Context, Error, Message

from consent import ManifestEntry

from .._errors import DataError, FederationError
from ..features import BinEncoder
from ..holdout import HOLDOUT_BUCKETS, is_holdout
from ..metrics import auc, brier, ks
from ..models import build_g_erp, set_weights
from ..node import (
    NodePolicy,
    encoder_hash,
    encoder_problem,
    node_budget,
    weights_hash,
)
from ..schema import MERCHANT_ID
from ..specs import DPBudget
from ..standardise import StandardEncoder, encoder_from_arrays
from ._keys import (
    ARRAYS_KEY,
    AUC_STD,
    ENCODER_KEY,
    ERR,
    JOB_KEY,
    KEY_ARCH,
    KEY_DP_DELTA,
    KEY_DP_EPSILON,
    KEY_DP_MAX_GRAD_NORM,
    KEY_HIDDEN,
    KEY_HOLDOUT_BUCKETS,
    NUM_EXAMPLES,
)
from ._mods import refuse
from ._node import Cohort, label_vector, load_cohort
from ._request import current_request

__all__ = [
    "Handler",
    "as_array",
    "checked_encoder",
    "data_errors",
    "error_reply",
    "holdout_split",
    "labelled",
    "message_encoder",
    "message_model",
    "model_hashes",
    "node_dp_budget",
    "noisy_metrics",
    "only_merchants",
    "request_cohort",
    "request_policy",
]

log = logging.getLogger("fedgate.node")

Handler = Callable[[Message, Context], Message]


def error_reply(msg: Message, code: int, reason: str) -> Message:
    return Message(Error(code=code, reason=reason), reply_to=msg)


def request_cohort(select: Callable[[ManifestEntry], bool] | None = None) -> Cohort:
    req = current_request()
    if req.manifest is None:  # the manifest mod binds it before any handler runs
        raise FederationError("no verified manifest for this request", code="NO_MANIFEST")
    return load_cohort(req.node, req.manifest, now=datetime.now(UTC), select=select)



def data_errors(handler: Handler) -> Handler:
    """A handler whose unreadable or invalid ERP table becomes an error reply, not a crash."""

    def wrapped(msg: Message, ctx: Context) -> Message:
        try:
            return handler(msg, ctx)
        except DataError as exc:
            # The text may hold a raw cell or merchant ids: it stays in the node's log.
            log.warning("ERP data error (node log only): %s: %s", exc.code, exc)
            return error_reply(msg, ERR.NODE_FAILURE, f"DATA_ERROR: {exc.code}")

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def holdout_split(msg: Message, held_out: bool) -> Callable[[ManifestEntry], bool]:
    """Labelled entries on one side of the job's hold-out rule (train: outside, evaluate: in)."""
    cfg = msg.content.config_records[JOB_KEY]
    buckets = cfg.get(KEY_HOLDOUT_BUCKETS, HOLDOUT_BUCKETS)
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 2 <= buckets <= 20:
        raise DataError(f"hold-out buckets must be an integer in 2..20, got {buckets!r}",
                        code="BAD_REQUEST")
    return lambda e: e.label is not None and is_holdout(e.merchant_id, buckets) == held_out


def message_encoder(msg: Message, cohort: Cohort) -> BinEncoder | StandardEncoder:
    encoder = encoder_from_arrays(
        {k: v.numpy() for k, v in msg.content.array_records[ENCODER_KEY].items()}
    )
    return encoder


def message_model(msg: Message, n_inputs: int) -> torch.nn.Module:
    cfg = msg.content.config_records[JOB_KEY]
    model = build_g_erp(str(cfg[KEY_ARCH]), n_inputs, hidden=int(cfg[KEY_HIDDEN]))
    set_weights(model, msg.content.array_records[ARRAYS_KEY].to_numpy_ndarrays())
    return model


def model_hashes(msg: Message) -> tuple[str, str]:
    """Hashes of the message's global model and encoder (what the model register keeps)."""
    cfg = msg.content.config_records[JOB_KEY]
    weights = msg.content.array_records[ARRAYS_KEY].to_numpy_ndarrays()
    enc = {k: v.numpy() for k, v in msg.content.array_records[ENCODER_KEY].items()}
    return weights_hash(str(cfg[KEY_ARCH]), weights), encoder_hash(enc)


def labelled(cohort: Cohort) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """The cohort (read with a labelled selection), its labels and its merchant ids."""
    part = cohort.frame
    return part, label_vector(cohort, part), [str(m) for m in part[MERCHANT_ID]]


def request_policy() -> NodePolicy:
    policy = current_request().policy
    if policy is None:  # the manifest mod binds it before any handler runs
        raise FederationError("no node policy for this request", code="NO_POLICY")
    return policy


def node_dp_budget(cfg: ConfigRecord) -> DPBudget | None:
    """The DP budget the node enforces: the message's ε/δ capped by policy, policy's lifetime."""
    return node_budget(
        request_policy(),
        dp_epsilon=float(cfg[KEY_DP_EPSILON]),  # type: ignore[arg-type]
        dp_delta=float(cfg[KEY_DP_DELTA]),  # type: ignore[arg-type]
        max_grad_norm=float(cfg[KEY_DP_MAX_GRAD_NORM]),  # type: ignore[arg-type]
    )


def only_merchants(cohort_frame: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    keep = set(ids)
    return cohort_frame[cohort_frame[MERCHANT_ID].astype(str).isin(keep)].reset_index(drop=True)


def checked_encoder(
    msg: Message, cohort: Cohort
) -> BinEncoder | StandardEncoder | Message:
    """The message's encoder if the policy accepts it, else the refusal reply."""
    encoder = message_encoder(msg, cohort)
    problem = encoder_problem(encoder, cohort.features, request_policy().max_bins)
    if problem is not None:
        return refuse(msg, ERR.POLICY_REFUSED, problem)
    return encoder


STD_BOUND_Z = 2.0
"""How many count-noise standard deviations the released ``auc-std`` bound allows for."""


def noisy_metrics(
    y: np.ndarray, p: np.ndarray, sigma: float, rng: np.random.Generator
) -> dict[str, float]:
    """AUC, KS, Brier, the count and a bound on the AUC noise, one Gaussian mechanism.

    Adding or removing one held-out merchant moves AUC and KS by at most
    ``1 / min(n_pos, n_neg)``, Brier by at most ``1 / n`` and exactly one of the
    class counts ``n_pos``, ``n_neg`` by 1; the five values scaled by those bounds
    form a vector of L2 sensitivity ``sqrt(1 + 1 + 1 + 1) = 2`` (the two counts
    together contribute one unit, since one merchant is in one class), so noise of
    ``sigma · 2 · bound`` each makes the release the Gaussian mechanism with
    multiplier ``sigma`` -- the same charge as the count alone. (The bounds use the
    node's own class counts.)

    Released (everything after the noise is post-processing, free of charge):

    * ``auc``, ``ks``, ``brier`` clipped to ``[0, 1]``;
    * ``num-examples = round(ñ_pos + ñ_neg)``;
    * ``auc-std``: an upper bound on the standard deviation of the noise added to
      AUC and KS, ``2σ / max(1, min(ñ_pos, ñ_neg) - z · 2σ)`` with ``z =``
      :data:`STD_BOUND_Z`. The true one is ``2σ / n_min``; since
      ``min(ñ_pos, ñ_neg) - n_min`` is at most the minority count's noise
      ``N(0, (2σ)²)``, the bound holds with probability ``Φ(z)`` (97.7 %). The
      exact value would reveal ``n_min``; the bound reveals only released noise.
      It lets the platform weigh a node's AUC by its noise
      (:mod:`federation.bestround`) instead of trusting a noise-dominated value.
    """
    n = len(y)
    n_pos = int(y.sum())
    n_min = max(1, min(n_pos, n - n_pos))
    scale = 2.0 * sigma
    out = {
        "auc": float(auc(y, p)) + rng.normal(0, scale / n_min),
        "ks": float(ks(y, p)) + rng.normal(0, scale / n_min),
        "brier": float(brier(y, p)) + rng.normal(0, scale / n),
    }
    clipped = {k: float(np.clip(v, 0.0, 1.0)) for k, v in out.items()}
    noisy_pos = n_pos + rng.normal(0, scale)
    noisy_neg = (n - n_pos) + rng.normal(0, scale)
    clipped[NUM_EXAMPLES] = float(max(1, int(round(noisy_pos + noisy_neg))))
    clipped[AUC_STD] = float(scale / max(1.0, min(noisy_pos, noisy_neg) - STD_BOUND_Z * scale))
    return clipped


def as_array(value: np.ndarray) -> object:
    from flwr.app import Array

    return Array(np.ascontiguousarray(value))


