"""The ISV node's ClientApp: sketch, train, evaluate and score on manifest-filtered ERP rows.

Mods, outermost first: :func:`manifest_mod`, :func:`egress_guard_mod`,
:func:`usage_receipt_mod`. Every handler starts from :func:`current_request`
(which exists only after the manifest mod verified the message) and reads rows
only through :func:`load_cohort`; each records what it used for the receipt.

Deployment: ``flwr-clientapp`` loads ``federation.apps.client_app:app``; the
SuperNode's ``--node-config`` carries ``isv-id``, ``erp-path``, ``node-key``,
``gateway-key``, ``state-dir``. Simulation: ``run_config["sim-nodes"]`` lists
those per partition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from consent import ManifestEntry

from .._errors import BudgetExceeded, DataError
from ..dp import PrivacyLedger, round_noise, train_dp_sgd
from ..features import BinEncoder, QuantileSketch
from ..metrics import auc, brier, ks
from ..models import build_g_erp, get_weights, predict_proba, set_weights, train_local
from ..schema import MERCHANT_ID
from ..specs import DPBudget
from ._keys import (
    ACTION_IDENTIFY,
    ACTION_SCORE,
    ACTION_SKETCH,
    ARRAYS_KEY,
    ENCODER_KEY,
    ERR,
    IDENTITY_KEY,
    JOB_KEY,
    KEY_ARCH,
    KEY_BATCH_SIZE,
    KEY_DP_DELTA,
    KEY_DP_EPSILON,
    KEY_DP_MAX_GRAD_NORM,
    KEY_EPOCHS,
    KEY_HIDDEN,
    KEY_HOLDOUT_BUCKETS,
    KEY_ISV_ID,
    KEY_LIFETIME_EPSILON,
    KEY_LR,
    KEY_MERCHANT_IDS,
    KEY_NONCE,
    KEY_PROXIMAL_MU,
    KEY_ROUND,
    KEY_ROUNDS,
    KEY_SEED,
    KEY_SIGNATURE,
    METRICS_KEY,
    NUM_EXAMPLES,
    SCORE_IDS_KEY,
    SCORES_KEY,
    SKETCH_KEY,
)
from ._mods import egress_guard_mod, make_manifest_mod, manifest_mod, usage_receipt_mod
from ._node import HOLDOUT_BUCKETS, Cohort, is_holdout, label_vector, load_cohort
from ._request import current_request, current_usage
from ._secagg import legacy_bridge_mod, secagg_mod

__all__ = ["app", "identify_payload", "build_client_app"]


def identify_payload(nonce: bytes, isv_id: str) -> bytes:
    """The bytes a node signs to prove it holds ``isv_id``'s key."""
    return b"fedgate-identify\n" + isv_id.encode() + b"\n" + nonce


def _error(msg: Message, code: int, reason: str) -> Message:
    return Message(Error(code=code, reason=reason), reply_to=msg)


def _cohort(select: Callable[[ManifestEntry], bool] | None = None) -> Cohort:
    req = current_request()
    assert req.manifest is not None
    return load_cohort(req.node, req.manifest, now=datetime.now(UTC), select=select)


Handler = Callable[[Message, Context], Message]


def _data_errors(handler: Handler) -> Handler:
    """A handler whose unreadable or invalid ERP table becomes an error reply, not a crash."""

    def wrapped(msg: Message, ctx: Context) -> Message:
        try:
            return handler(msg, ctx)
        except DataError as exc:
            return _error(msg, ERR.NODE_FAILURE, f"{exc.code}: {exc}")

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def _split(msg: Message, held_out: bool) -> Callable[[ManifestEntry], bool]:
    """Labelled entries on one side of the job's hold-out rule (train: outside, evaluate: in)."""
    cfg = msg.content.config_records[JOB_KEY]
    buckets = cfg.get(KEY_HOLDOUT_BUCKETS, HOLDOUT_BUCKETS)
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 2 <= buckets <= 20:
        raise DataError(f"hold-out buckets must be an integer in 2..20, got {buckets!r}",
                        code="BAD_REQUEST")
    return lambda e: e.label is not None and is_holdout(e.merchant_id, buckets) == held_out


def _encoder(msg: Message, cohort: Cohort) -> BinEncoder:
    encoder = BinEncoder.from_arrays(
        {k: v.numpy() for k, v in msg.content.array_records[ENCODER_KEY].items()}
    )
    return encoder


def _model(msg: Message, n_inputs: int) -> torch.nn.Module:
    cfg = msg.content.config_records[JOB_KEY]
    model = build_g_erp(str(cfg[KEY_ARCH]), n_inputs, hidden=int(cfg[KEY_HIDDEN]))
    set_weights(model, msg.content.array_records[ARRAYS_KEY].to_numpy_ndarrays())
    return model


def _labelled(cohort: Cohort) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """The cohort (read with a labelled selection), its labels and its merchant ids."""
    part = cohort.frame
    return part, label_vector(cohort, part), [str(m) for m in part[MERCHANT_ID]]


def _budget(cfg: ConfigRecord) -> DPBudget | None:
    eps = float(cfg[KEY_DP_EPSILON])  # type: ignore[arg-type]
    if eps <= 0:
        return None
    return DPBudget(
        epsilon=eps,
        delta=float(cfg[KEY_DP_DELTA]),  # type: ignore[arg-type]
        max_grad_norm=float(cfg[KEY_DP_MAX_GRAD_NORM]),  # type: ignore[arg-type]
        lifetime_epsilon=float(cfg[KEY_LIFETIME_EPSILON]),  # type: ignore[arg-type]
    )


def build_client_app(run_config: Mapping[str, Any] | None = None) -> ClientApp:
    """A fresh ClientApp with fedgate's mods and handlers.

    Parameters
    ----------
    run_config : Mapping[str, Any] | None, default None
        Defaults under ``context.run_config`` (the simulation runtime's Python API
        gives the ClientApp no run config of its own).
    """
    first = make_manifest_mod(run_config_defaults=run_config) if run_config else manifest_mod
    # SecAgg+ and its legacy-record bridge sit outside fedgate's three mods and pass every
    # other message through untouched, so handlers see one message shape either way.
    client = ClientApp(
        mods=[secagg_mod, legacy_bridge_mod, first, egress_guard_mod, usage_receipt_mod]
    )

    @client.query(ACTION_IDENTIFY)
    def identify(msg: Message, ctx: Context) -> Message:
        """Prove this node's ISV identity by signing the server's nonce (reads no rows)."""
        node = current_request().node
        nonce = msg.content.config_records[JOB_KEY][KEY_NONCE]
        assert isinstance(nonce, bytes)
        sig = node.signing_key().sign(identify_payload(nonce, node.isv_id))
        return Message(
            RecordDict({IDENTITY_KEY: ConfigRecord({KEY_ISV_ID: node.isv_id, KEY_SIGNATURE: sig})}),
            reply_to=msg,
        )

    @client.query(ACTION_SKETCH)
    @_data_errors
    def sketch(msg: Message, ctx: Context) -> Message:
        """Mergeable quantile sketches of the cohort's consented features (never rows)."""
        cohort = _cohort()
        if cohort.frame.empty:
            return _error(msg, ERR.NO_DATA, "no consented rows at this node")
        sk = QuantileSketch.from_frame(cohort.frame, list(cohort.features))
        current_usage().record(
            rows_used=len(cohort.frame),
            merchant_ids=cohort.merchant_ids,
            epsilon=0.0,
            delta=0.0,
            rows_read=cohort.rows_read,
            read_ids=cohort.merchant_ids,
        )
        arrays = ArrayRecord({k: _array(v) for k, v in sk.to_arrays().items()})
        return Message(
            RecordDict(
                {SKETCH_KEY: arrays, METRICS_KEY: MetricRecord({NUM_EXAMPLES: len(cohort.frame)})}
            ),
            reply_to=msg,
        )

    @client.train()
    @_data_errors
    def train(msg: Message, ctx: Context) -> Message:
        """Local training (DP-SGD when the job has a budget) from the global weights."""
        torch.set_num_threads(1)
        req = current_request()
        cfg = msg.content.config_records[JOB_KEY]
        # Read only what training uses: labelled merchants outside the held-out fifth.
        cohort = _cohort(_split(msg, held_out=False))
        part, y, ids = _labelled(cohort)
        if len(part) == 0:
            return _error(msg, ERR.NO_DATA, "no labelled consented rows to train on")
        X = _encoder(msg, cohort).transform(part)
        model = _model(msg, X.shape[1])
        budget = _budget(cfg)
        job_id = str(cfg["job-id"])
        common = dict(
            epochs=int(cfg[KEY_EPOCHS]),  # type: ignore[arg-type]
            batch_size=int(cfg[KEY_BATCH_SIZE]),  # type: ignore[arg-type]
            lr=float(cfg[KEY_LR]),  # type: ignore[arg-type]
            proximal_mu=float(cfg[KEY_PROXIMAL_MU]),  # type: ignore[arg-type]
            seed=int(cfg[KEY_SEED]) + int(cfg[KEY_ROUND]),  # type: ignore[arg-type]
        )
        epsilon, delta = 0.0, 0.0
        if budget is None:
            loss = train_local(model, X, y, **common)  # type: ignore[arg-type]
        else:
            ledger = PrivacyLedger(req.node.privacy_ledger_path)
            try:
                # Refuse before touching the optimiser, and charge nobody for a refused job:
                # first size the noise for the rounds left (pure; refuses when no noise can
                # cover them), then reserve every merchant's lifetime ε, then train.
                rounds_left = int(cfg[KEY_ROUNDS]) - int(cfg[KEY_ROUND]) + 1  # type: ignore[arg-type]
                history = ledger.job_history(job_id)
                sigma = round_noise(
                    len(part),
                    epochs=common["epochs"],  # type: ignore[arg-type]
                    batch_size=common["batch_size"],  # type: ignore[arg-type]
                    budget=budget,
                    history=history,
                    rounds_left=rounds_left,
                )
                ledger.reserve(job_id=job_id, budget=budget, merchant_ids=ids)
                result = train_dp_sgd(
                    model,
                    X,
                    y,
                    budget=budget,
                    history=history,
                    rounds_left=rounds_left,
                    noise_multiplier=sigma,
                    **common,  # type: ignore[arg-type]
                )
            except BudgetExceeded as exc:
                return _error(msg, ERR.BUDGET_EXCEEDED, f"BUDGET_EXCEEDED: {exc}")
            epsilon = ledger.record(job_id, result.steps)
            delta = budget.delta
            loss = result.loss
        current_usage().record(
            rows_used=len(part),
            merchant_ids=ids,
            epsilon=epsilon,
            delta=delta,
            rows_read=cohort.rows_read,
            read_ids=cohort.merchant_ids,
        )
        sent = msg.content.array_records[ARRAYS_KEY]
        weights = get_weights(model)
        arrays = ArrayRecord(
            {
                k: _array(np.asarray(w, dtype=sent[k].numpy().dtype))
                for k, w in zip(sent.keys(), weights, strict=True)
            }
        )
        metrics = MetricRecord(
            {NUM_EXAMPLES: len(part), "train-loss": float(loss), "epsilon": epsilon, "delta": delta}
        )
        return Message(RecordDict({ARRAYS_KEY: arrays, METRICS_KEY: metrics}), reply_to=msg)

    @client.evaluate()
    @_data_errors
    def evaluate(msg: Message, ctx: Context) -> Message:
        """AUC, KS and Brier of the global model on this node's held-out merchants."""
        torch.set_num_threads(1)
        cohort = _cohort(_split(msg, held_out=True))  # only labelled held-out merchants
        part, y, ids = _labelled(cohort)
        if len(part) == 0 or y.min() == y.max():
            return _error(msg, ERR.NO_DATA, "held-out merchants lack both classes")
        X = _encoder(msg, cohort).transform(part)
        p = predict_proba(_model(msg, X.shape[1]), X)
        cfg = msg.content.config_records[JOB_KEY]
        budget = _budget(cfg)
        req = current_request()
        eps = 0.0
        if budget is not None:
            eps = PrivacyLedger(req.node.privacy_ledger_path).job_epsilon(
                str(cfg["job-id"]), budget.delta
            )
        current_usage().record(
            rows_used=len(part),
            merchant_ids=ids,
            epsilon=eps,
            delta=budget.delta if budget else 0.0,
            rows_read=cohort.rows_read,
            read_ids=cohort.merchant_ids,
        )
        metrics = MetricRecord(
            {
                NUM_EXAMPLES: len(part),
                "auc": float(auc(y, p)),
                "ks": float(ks(y, p)),
                "brier": float(brier(y, p)),
                "n-pos": int(y.sum()),
            }
        )
        return Message(RecordDict({METRICS_KEY: metrics}), reply_to=msg)

    @client.query(ACTION_SCORE)
    @_data_errors
    def score(msg: Message, ctx: Context) -> Message:
        """Per-merchant g-scores for the merchants of a credit_scoring manifest."""
        torch.set_num_threads(1)
        cohort = _cohort()
        if cohort.frame.empty:
            return _error(msg, ERR.NO_DATA, "no consented rows at this node")
        X = _encoder(msg, cohort).transform(cohort.frame)
        p = predict_proba(_model(msg, X.shape[1]), X).astype(np.float64)
        ids = [str(m) for m in cohort.frame[MERCHANT_ID]]
        current_usage().record(
            rows_used=len(ids),
            merchant_ids=ids,
            epsilon=0.0,
            delta=0.0,
            rows_read=cohort.rows_read,
            read_ids=cohort.merchant_ids,
        )
        return Message(
            RecordDict(
                {
                    SCORES_KEY: ArrayRecord({"g": _array(p)}),
                    SCORE_IDS_KEY: ConfigRecord({KEY_MERCHANT_IDS: ids}),
                    METRICS_KEY: MetricRecord({NUM_EXAMPLES: len(ids)}),
                }
            ),
            reply_to=msg,
        )

    return client


def _array(value: np.ndarray) -> object:
    from flwr.app import Array

    return Array(np.ascontiguousarray(value))


app = build_client_app()
"""The ClientApp Flower loads (``federation.apps.client_app:app``)."""
