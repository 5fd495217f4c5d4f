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

import logging
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
from ..dp import PrivacyLedger, epsilon_of, noise_for_budget, round_noise, train_dp_sgd
from ..features import BinEncoder
from ..metrics import auc, brier, ks
from ..models import build_g_erp, get_weights, predict_proba, set_weights, train_local
from ..node import (
    NodePolicy,
    dp_sketch,
    encoder_hash,
    encoder_problem,
    error_guard_mod,
    node_budget,
    node_seed,
    numpy_generator,
    torch_generator,
    weights_hash,
)
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
    KEY_JOB_ID,
    KEY_LR,
    KEY_MERCHANT_IDS,
    KEY_NONCE,
    KEY_PROXIMAL_MU,
    KEY_ROUND,
    KEY_ROUNDS,
    KEY_SIGNATURE,
    METRICS_KEY,
    NUM_EXAMPLES,
    SCORE_IDS_KEY,
    SCORES_KEY,
    SKETCH_KEY,
)
from ._mods import egress_guard_mod, make_manifest_mod, manifest_mod, refuse, usage_receipt_mod
from ._node import HOLDOUT_BUCKETS, Cohort, is_holdout, label_vector, load_cohort
from ._request import current_request, current_usage
from ._secagg import legacy_bridge_mod, secagg_mod

__all__ = ["app", "identify_payload", "build_client_app"]

log = logging.getLogger("fedgate.node")


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
            # The text may hold a raw cell or merchant ids: it stays in the node's log.
            log.warning("ERP data error (node log only): %s: %s", exc.code, exc)
            return _error(msg, ERR.NODE_FAILURE, f"DATA_ERROR: {exc.code}")

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


def _model_hashes(msg: Message) -> tuple[str, str]:
    """Hashes of the message's global model and encoder (what the model register keeps)."""
    cfg = msg.content.config_records[JOB_KEY]
    weights = msg.content.array_records[ARRAYS_KEY].to_numpy_ndarrays()
    enc = {k: v.numpy() for k, v in msg.content.array_records[ENCODER_KEY].items()}
    return weights_hash(str(cfg[KEY_ARCH]), weights), encoder_hash(enc)


def _labelled(cohort: Cohort) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """The cohort (read with a labelled selection), its labels and its merchant ids."""
    part = cohort.frame
    return part, label_vector(cohort, part), [str(m) for m in part[MERCHANT_ID]]


def _policy() -> NodePolicy:
    policy = current_request().policy
    assert policy is not None, "the manifest mod binds the node policy"
    return policy


def _budget(cfg: ConfigRecord) -> DPBudget | None:
    """The DP budget the node enforces: the message's ε/δ capped by policy, policy's lifetime."""
    return node_budget(
        _policy(),
        dp_epsilon=float(cfg[KEY_DP_EPSILON]),  # type: ignore[arg-type]
        dp_delta=float(cfg[KEY_DP_DELTA]),  # type: ignore[arg-type]
        max_grad_norm=float(cfg[KEY_DP_MAX_GRAD_NORM]),  # type: ignore[arg-type]
    )


def _only(cohort_frame: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    keep = set(ids)
    return cohort_frame[cohort_frame[MERCHANT_ID].astype(str).isin(keep)].reset_index(drop=True)


def _check_encoder(msg: Message, cohort: Cohort) -> tuple[BinEncoder | None, Message | None]:
    """The message's encoder if the policy accepts it, else a refusal."""
    encoder = _encoder(msg, cohort)
    problem = encoder_problem(encoder, cohort.features, _policy().max_bins)
    if problem is not None:
        return None, refuse(msg, ERR.POLICY_REFUSED, problem)
    return encoder, None


def _noisy_metrics(
    y: np.ndarray, p: np.ndarray, sigma: float, rng: np.random.Generator
) -> dict[str, float]:
    """AUC, KS, Brier and the count, each with Gaussian noise scaled to its sensitivity.

    Adding or removing one held-out merchant moves AUC and KS by at most
    ``1 / min(n_pos, n_neg)``, Brier by at most ``1 / n`` and the count by 1; the
    four values scaled by those bounds form a vector of L2 sensitivity 2, so noise
    of ``sigma · 2 · bound`` each makes the release the Gaussian mechanism with
    multiplier ``sigma``. (The bounds use the node's own class counts.)
    """
    n = len(y)
    n_min = max(1, int(min(y.sum(), n - y.sum())))
    scale = 2.0 * sigma
    out = {
        "auc": float(auc(y, p)) + rng.normal(0, scale / n_min),
        "ks": float(ks(y, p)) + rng.normal(0, scale / n_min),
        "brier": float(brier(y, p)) + rng.normal(0, scale / n),
    }
    clipped = {k: float(np.clip(v, 0.0, 1.0)) for k, v in out.items()}
    clipped[NUM_EXAMPLES] = float(max(1, int(round(n + rng.normal(0, scale)))))
    return clipped


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
    # The error guard is outermost: every reply, errors and exceptions of any mod below
    # included, leaves as codes and counts only.
    client = ClientApp(
        mods=[
            error_guard_mod,
            secagg_mod,
            legacy_bridge_mod,
            first,
            egress_guard_mod,
            usage_receipt_mod,
        ]
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
        """A DP histogram of the cohort's features on the public grid (never rows or means)."""
        req, policy = current_request(), _policy()
        cfg = msg.content.config_records[JOB_KEY]
        cohort = _cohort()
        if len(cohort.frame) < policy.min_cohort:
            return refuse(msg, ERR.POLICY_REFUSED, "MIN_COHORT", {"min": policy.min_cohort})
        z = policy.sketch_noise_multiplier
        budget = _budget(cfg)
        if budget is None:  # a no-DP job (the policy allows it): the sketch is still DP
            budget = DPBudget(
                epsilon=epsilon_of([(z, 1.0, 1)], policy.delta) * (1 + 1e-9),
                delta=policy.delta,
                lifetime_epsilon=policy.max_epsilon_lifetime,
            )
        ledger = PrivacyLedger(req.node.privacy_ledger_path)
        job_id = str(cfg[KEY_JOB_ID])
        try:
            admitted, _ = ledger.admit(
                job_id=job_id,
                budget=budget,
                merchant_ids=cohort.merchant_ids,
                lifetime_epsilon=policy.max_epsilon_lifetime,
                dry_run=True,
            )
            if len(admitted) < policy.min_cohort:
                return refuse(msg, ERR.POLICY_REFUSED, "MIN_COHORT", {"min": policy.min_cohort})
            admitted, _ = ledger.admit(
                job_id=job_id,
                budget=budget,
                merchant_ids=admitted,
                lifetime_epsilon=policy.max_epsilon_lifetime,
            )
        except BudgetExceeded:
            return refuse(msg, ERR.BUDGET_EXCEEDED, "BUDGET_EXCEEDED")
        frame = _only(cohort.frame, admitted)
        sk = dp_sketch(
            frame, list(cohort.features), noise_multiplier=z, rng=numpy_generator(policy, 1)
        )
        epsilon = ledger.record(job_id, [(z, 1.0, 1)], streams=("train", "eval"))
        current_usage().record(
            rows_used=len(frame),
            merchant_ids=admitted,
            epsilon=epsilon,
            delta=budget.delta,
            rows_read=cohort.rows_read,
            read_ids=cohort.merchant_ids,
        )
        arrays = ArrayRecord({k: _array(v) for k, v in sk.to_arrays().items()})
        return Message(RecordDict({SKETCH_KEY: arrays}), reply_to=msg)

    @client.train()
    @_data_errors
    def train(msg: Message, ctx: Context) -> Message:
        """Local training (DP-SGD unless the node's policy allows a job without it)."""
        torch.set_num_threads(1)
        req, policy = current_request(), _policy()
        cfg = msg.content.config_records[JOB_KEY]
        job_id = str(cfg[KEY_JOB_ID])
        # Read only what training uses: labelled merchants outside the held-out fifth.
        cohort = _cohort(_split(msg, held_out=False))
        encoder, refusal = _check_encoder(msg, cohort)
        if refusal is not None:
            return refusal
        assert encoder is not None
        budget = _budget(cfg)
        ledger = PrivacyLedger(req.node.privacy_ledger_path)
        ids_all = [str(m) for m in cohort.frame[MERCHANT_ID]]
        try:
            admitted = ids_all
            if budget is not None:  # who this round may use: spent merchants sit it out
                admitted, _ = ledger.admit(
                    job_id=job_id,
                    budget=budget,
                    merchant_ids=ids_all,
                    lifetime_epsilon=policy.max_epsilon_lifetime,
                    dry_run=True,
                )
            if len(admitted) < policy.min_cohort:
                return refuse(msg, ERR.POLICY_REFUSED, "MIN_COHORT", {"min": policy.min_cohort})
            part = _only(cohort.frame, admitted)
            y, ids = label_vector(cohort, part), [str(m) for m in part[MERCHANT_ID]]
            X = encoder.transform(part)
            model = _model(msg, X.shape[1])
            common = dict(
                epochs=int(cfg[KEY_EPOCHS]),  # type: ignore[arg-type]
                batch_size=int(cfg[KEY_BATCH_SIZE]),  # type: ignore[arg-type]
                lr=float(cfg[KEY_LR]),  # type: ignore[arg-type]
                proximal_mu=float(cfg[KEY_PROXIMAL_MU]),  # type: ignore[arg-type]
            )
            epsilon, delta = 0.0, 0.0
            generator = torch_generator(policy, int(cfg[KEY_ROUND]))  # type: ignore[arg-type]
            if budget is None:
                train_local(model, X, y, seed=node_seed(policy), **common)  # type: ignore[arg-type]
            else:
                # Refuse before touching the optimiser, and charge nobody for a refused
                # round: size the noise for the rounds left (pure; refuses when none can
                # cover them), then charge the admitted merchants, then train.
                rounds_left = int(cfg[KEY_ROUNDS]) - int(cfg[KEY_ROUND]) + 1  # type: ignore[arg-type]
                history = ledger.job_history(job_id)
                sigma = max(
                    policy.min_noise_multiplier,
                    round_noise(
                        len(part),
                        epochs=common["epochs"],  # type: ignore[arg-type]
                        batch_size=common["batch_size"],  # type: ignore[arg-type]
                        budget=budget,
                        history=history,
                        rounds_left=rounds_left,
                    ),
                )
                ids, _ = ledger.admit(
                    job_id=job_id,
                    budget=budget,
                    merchant_ids=ids,
                    lifetime_epsilon=policy.max_epsilon_lifetime,
                )
                if len(ids) < len(part):  # another job spent someone since the dry run
                    if len(ids) < policy.min_cohort:
                        return refuse(
                            msg, ERR.POLICY_REFUSED, "MIN_COHORT", {"min": policy.min_cohort}
                        )
                    part = _only(part, ids)
                    y, X = label_vector(cohort, part), encoder.transform(part)
                result = train_dp_sgd(
                    model,
                    X,
                    y,
                    budget=budget,
                    history=history,
                    rounds_left=rounds_left,
                    noise_multiplier=sigma,
                    generator=generator,
                    **common,  # type: ignore[arg-type]
                )
                epsilon = ledger.record(job_id, result.steps)
                delta = budget.delta
        except BudgetExceeded:
            return refuse(msg, ERR.BUDGET_EXCEEDED, "BUDGET_EXCEEDED")
        model_hash, enc_hash = _model_hashes(msg)
        req.node.model_register().record(
            job_id=job_id, action="train", model=model_hash, encoder=enc_hash
        )
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
        # No training loss: on a small cohort it is a function of a few rows.
        metrics = MetricRecord({NUM_EXAMPLES: len(part), "epsilon": epsilon, "delta": delta})
        return Message(RecordDict({ARRAYS_KEY: arrays, METRICS_KEY: metrics}), reply_to=msg)

    @client.evaluate()
    @_data_errors
    def evaluate(msg: Message, ctx: Context) -> Message:
        """Noisy AUC, KS and Brier of the global model on this node's held-out merchants."""
        torch.set_num_threads(1)
        req, policy = current_request(), _policy()
        cfg = msg.content.config_records[JOB_KEY]
        job_id = str(cfg[KEY_JOB_ID])
        cohort = _cohort(_split(msg, held_out=True))  # labelled held-out merchants only
        encoder, refusal = _check_encoder(msg, cohort)
        if refusal is not None:
            return refusal
        assert encoder is not None
        registry = req.node.model_register()
        if job_id not in registry.trained_jobs():
            return refuse(msg, ERR.MODEL_UNKNOWN, "MODEL_UNKNOWN")
        model_hash, enc_hash = _model_hashes(msg)
        registry.record(job_id=job_id, action="evaluate", model=model_hash, encoder=enc_hash)
        part, y, ids = _labelled(cohort)
        if len(part) < policy.min_score_cohort or np.unique(y).size < 2:
            # NO_DATA: a fact about the node's held-out merchants, the job goes on.
            return refuse(msg, ERR.NO_DATA, "MIN_COHORT", {"min": policy.min_score_cohort})
        budget = _budget(cfg)
        ledger = PrivacyLedger(req.node.privacy_ledger_path)
        sigma = policy.eval_noise_multiplier
        eps, delta = 0.0, 0.0
        if budget is not None:
            try:
                ids, _ = ledger.admit(
                    job_id=job_id,
                    budget=budget,
                    merchant_ids=ids,
                    lifetime_epsilon=policy.max_epsilon_lifetime,
                )
                rounds_left = int(cfg[KEY_ROUNDS]) - int(cfg[KEY_ROUND]) + 1  # type: ignore[arg-type]
                sigma = max(
                    sigma,
                    noise_for_budget(
                        ledger.job_history(job_id, "eval"),
                        target_epsilon=budget.epsilon,
                        delta=budget.delta,
                        sample_rate=1.0,
                        steps=max(rounds_left, 1),
                    ),
                )
            except BudgetExceeded:
                return refuse(msg, ERR.BUDGET_EXCEEDED, "BUDGET_EXCEEDED")
            part = _only(part, ids)
            y = label_vector(cohort, part)
            if len(part) < policy.min_score_cohort or np.unique(y).size < 2:
                return refuse(msg, ERR.NO_DATA, "MIN_COHORT", {"min": policy.min_score_cohort})
            eps = ledger.record(job_id, [(sigma, 1.0, 1)], streams=("eval",))
            delta = budget.delta
        X = encoder.transform(part)
        p = predict_proba(_model(msg, X.shape[1]), X)
        values = _noisy_metrics(y, p, sigma, numpy_generator(policy, 2))
        current_usage().record(
            rows_used=len(part),
            merchant_ids=ids,
            epsilon=eps,
            delta=delta,
            rows_read=cohort.rows_read,
            read_ids=cohort.merchant_ids,
        )
        allowed = set(policy.allowed_metrics)
        metrics = MetricRecord(
            {k: v for k, v in {**values, "epsilon": eps, "delta": delta}.items() if k in allowed}
        )
        return Message(RecordDict({METRICS_KEY: metrics}), reply_to=msg)

    @client.query(ACTION_SCORE)
    @_data_errors
    def score(msg: Message, ctx: Context) -> Message:
        """Per-merchant g-scores, only with a model and encoder the node helped train."""
        torch.set_num_threads(1)
        req, policy = current_request(), _policy()
        model_hash, enc_hash = _model_hashes(msg)
        if not req.node.model_register().known(model_hash, enc_hash):
            return refuse(msg, ERR.MODEL_UNKNOWN, "MODEL_UNKNOWN")
        cohort = _cohort()
        if len(cohort.frame) < policy.min_score_cohort:
            return refuse(msg, ERR.POLICY_REFUSED, "MIN_COHORT", {"min": policy.min_score_cohort})
        encoder, refusal = _check_encoder(msg, cohort)
        if refusal is not None:
            return refusal
        assert encoder is not None
        X = encoder.transform(cohort.frame)
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
