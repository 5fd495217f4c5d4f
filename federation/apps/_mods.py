"""The ClientApp's three mods, outermost first: manifest, egress guard, usage receipt.

* :func:`manifest_mod` refuses any train / evaluate / query message that does not
  carry a gateway-signed cohort manifest for this node, bound to the message's
  job, round and purpose; only then may the handler read rows (through
  :func:`federation.apps.load_cohort`).
* :func:`egress_guard_mod` lets a reply out only if it holds the declared
  records: model arrays of the shapes the server sent, whitelisted scalar
  metrics, a receipt, and per action a sketch (k-anonymous points only) or
  scores of bounded shape.
  Anything else turns the reply into an error and is logged (keys only).
* :func:`usage_receipt_mod` attaches the node's signed :class:`UsageReceipt`.

Each mod returns an error reply with a code from :class:`ERR` instead of raising.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord

from consent import ConsentError, ManifestRejected, verify_manifest

from .._errors import DataError
from ..features import DEFAULT_MIN_BUCKET_ROWS, DEFAULT_SKETCH_SIZE, QuantileSketch
from ..receipts import UsageReceipt, merchant_ids_hash, sign_receipt
from ..schema import erp_fields_for
from ._keys import (
    ACTION_IDENTIFY,
    ACTION_SCORE,
    ACTION_SKETCH,
    ALLOWED_METRIC_KEYS,
    ARRAYS_KEY,
    ERR,
    IDENTITY_KEY,
    JOB_KEY,
    KEY_ISV_ID,
    KEY_JOB_ID,
    KEY_MANIFEST,
    KEY_MERCHANT_IDS,
    KEY_NONCE,
    KEY_RECEIPT,
    KEY_ROUND,
    KEY_SIGNATURE,
    MAX_SKETCH_ARRAY_SIZE,
    METRICS_KEY,
    RECEIPT_KEY,
    SCORE_IDS_KEY,
    SCORES_KEY,
    SKETCH_KEY,
)
from ._node import NodeConfig
from ._request import Usage, VerifiedRequest, bind, current_request

__all__ = [
    "CallNext",
    "Clock",
    "PURPOSE_FOR_ACTION",
    "egress_guard_mod",
    "make_manifest_mod",
    "manifest_mod",
    "usage_receipt_mod",
]

log = logging.getLogger("fedgate.node")

CallNext = Callable[[Message, Context], Message]
Clock = Callable[[], datetime]

PURPOSE_FOR_ACTION: dict[str, str] = {
    "train": "model_training",
    "evaluate": "model_training",
    f"query.{ACTION_SKETCH}": "model_training",
    f"query.{ACTION_SCORE}": "credit_scoring",
}
"""The consent purpose a manifest must name for each action."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _action(msg: Message) -> str:
    mtype = msg.metadata.message_type
    return mtype if "." in mtype or mtype != "query" else "query.default"


def _error(msg: Message, code: int, reason: str) -> Message:
    log.warning("node refused %s: [%d] %s", msg.metadata.message_type, code, reason)
    return Message(Error(code=code, reason=reason), reply_to=msg)


def make_manifest_mod(
    clock: Clock = _utcnow, run_config_defaults: Mapping[str, Any] | None = None
) -> Callable[[Message, Context, CallNext], Message]:
    """A manifest mod.

    Parameters
    ----------
    clock : Clock, default ``datetime.now(UTC)``
        The node's clock (tests pass a fixed one).
    run_config_defaults : Mapping[str, Any] | None, default None
        Run-config values used where ``context.run_config`` has none (simulation).
    """
    defaults = dict(run_config_defaults or {})

    def manifest_mod(msg: Message, ctx: Context, call_next: CallNext) -> Message:
        """Verify the message's cohort manifest before any handler may read a row."""
        action = _action(msg)
        try:
            node = NodeConfig.from_context(ctx.node_config, {**defaults, **dict(ctx.run_config)})
        except (ValueError, OSError, KeyError) as exc:
            return _error(msg, ERR.NODE_FAILURE, f"node misconfigured: {exc}")
        content = msg.content
        if action == f"query.{ACTION_IDENTIFY}":
            # The handshake reads no rows; it may carry a nonce and nothing else, so no data
            # request can ride along without a manifest.
            cfg = content.config_records.get(JOB_KEY)
            if set(content.keys()) != {JOB_KEY} or cfg is None or set(cfg.keys()) != {KEY_NONCE}:
                return _error(msg, ERR.MANIFEST_MISSING, "identify carries only a nonce")
            with bind(request=VerifiedRequest(node=node, manifest=None, action=action)):
                return call_next(msg, ctx)
        purpose = PURPOSE_FOR_ACTION.get(action)
        if purpose is None:
            return _error(msg, ERR.MANIFEST_MISMATCH, f"action {action!r} is not served")
        cfg = content.config_records.get(JOB_KEY)
        token = cfg.get(KEY_MANIFEST) if cfg is not None else None
        if not isinstance(token, bytes) or not token:
            return _error(msg, ERR.MANIFEST_MISSING, "message carries no signed cohort manifest")
        now = clock()
        try:
            # The replay guard's file is shared by every job on this node, in whichever
            # process: read it and record the manifest under one exclusive file lock.
            with node.state_lock("manifests"):
                manifest = verify_manifest(
                    token,
                    gateway_key=node.gateway_public_key(),
                    data_provider=node.isv_id,
                    now=now,
                    replay_guard=node.replay_guard(),
                )
        except ManifestRejected as exc:
            return _error(msg, ERR.MANIFEST_REJECTED, f"{exc.code}: {exc}")
        except ConsentError as exc:  # e.g. a corrupt replay-guard file
            return _error(msg, ERR.NODE_FAILURE, f"{exc.code}: {exc}")
        assert cfg is not None
        if cfg.get(KEY_JOB_ID) != manifest.job_id or cfg.get(KEY_ROUND) != manifest.round:
            return _error(
                msg,
                ERR.MANIFEST_MISMATCH,
                f"message is for job {cfg.get(KEY_JOB_ID)!r} round {cfg.get(KEY_ROUND)!r}, "
                f"manifest for {manifest.job_id!r} round {manifest.round}",
            )
        if manifest.purpose != purpose:
            return _error(
                msg,
                ERR.MANIFEST_MISMATCH,
                f"{action} needs purpose {purpose!r}, manifest says {manifest.purpose!r}",
            )
        # Defence in depth: re-check every consent window here, not only inside consent/.
        stale = [
            e.merchant_id for e in manifest.entries if not e.consent_start <= now < e.consent_expiry
        ]
        bad_range = [e.merchant_id for e in manifest.entries if e.data_from > e.data_to]
        if stale or bad_range:
            return _error(
                msg,
                ERR.MANIFEST_REJECTED,
                f"ENTRY_INVALID: {len(stale)} entries outside their consent window, "
                f"{len(bad_range)} with an empty data range",
            )
        with bind(request=VerifiedRequest(node=node, manifest=manifest, action=action)):
            return call_next(msg, ctx)

    return manifest_mod


manifest_mod = make_manifest_mod()


def _scalar_metrics_ok(record: MetricRecord) -> str | None:
    for key, value in record.items():
        if key not in ALLOWED_METRIC_KEYS:
            return f"metric {key!r} is not whitelisted"
        if isinstance(value, list):
            return f"metric {key!r} is a list (per-row data is never sent)"
    return None


def _arrays_match(reply: ArrayRecord, sent: ArrayRecord | None) -> str | None:
    if sent is None:
        return "a model reply to a message that declared no model"
    if list(reply.keys()) != list(sent.keys()):
        return f"model arrays {sorted(reply.keys())} differ from the declared {sorted(sent.keys())}"
    for key, arr in reply.items():
        if tuple(arr.shape) != tuple(sent[key].shape) or arr.dtype != sent[key].dtype:
            return f"array {key!r} has shape {arr.shape}/{arr.dtype}, declared {sent[key].shape}"
    return None


def _egress_problem(msg: Message, reply: Message, request: VerifiedRequest) -> str | None:
    content = reply.content
    action = request.action
    allowed: dict[str, type] = {METRICS_KEY: MetricRecord, RECEIPT_KEY: ConfigRecord}
    if action == "train":
        allowed[ARRAYS_KEY] = ArrayRecord
    elif action == f"query.{ACTION_SKETCH}":
        allowed[SKETCH_KEY] = ArrayRecord
    elif action == f"query.{ACTION_SCORE}":
        allowed[SCORES_KEY] = ArrayRecord
        allowed[SCORE_IDS_KEY] = ConfigRecord
    elif action == f"query.{ACTION_IDENTIFY}":
        allowed = {IDENTITY_KEY: ConfigRecord}
    for key, record in content.items():
        if key not in allowed or not isinstance(record, allowed[key]):
            return f"record {key!r} ({type(record).__name__}) is not allowed in a {action} reply"
    if METRICS_KEY in content and (p := _scalar_metrics_ok(content.metric_records[METRICS_KEY])):
        return p
    if RECEIPT_KEY in content:
        rec = content.config_records[RECEIPT_KEY]
        if set(rec.keys()) != {KEY_RECEIPT} or not isinstance(rec[KEY_RECEIPT], bytes):
            return "the receipt record holds something besides the signed token"
    if action == "train":
        if ARRAYS_KEY not in content:
            return "a train reply must carry the model arrays"
        sent = msg.content.array_records.get(ARRAYS_KEY)
        if p := _arrays_match(content.array_records[ARRAYS_KEY], sent):
            return p
    if SKETCH_KEY in content and (p := _sketch_problem(content.array_records[SKETCH_KEY], request)):
        return p
    if action == f"query.{ACTION_SCORE}":
        return _scores_problem(content, request)
    if action == f"query.{ACTION_IDENTIFY}":
        ident = content.config_records.get(IDENTITY_KEY)
        if ident is None or set(ident.keys()) != {KEY_ISV_ID, KEY_SIGNATURE}:
            return "an identify reply carries only the ISV id and its signature"
    return None


def _integral(x: float) -> bool:
    return bool(np.isfinite(x)) and float(x) == float(np.floor(x)) and x >= 0


def _sketch_problem(record: ArrayRecord, request: VerifiedRequest) -> str | None:
    """A sketch leaves only as k-anonymous bucket means of the job's declared features.

    Independent of the handler, the guard parses the reply with
    :meth:`QuantileSketch.from_arrays` (key grammar, four complete parts per
    column, a valid point budget) and then requires:

    * at most ``4 x features + 1`` arrays, every column one of the manifest's
      declared features, keys numbered ``0000``… in order (nothing in a name);
    * per column at most ``cohort // k`` points, each weighing ``k`` rows or more,
      and counts (``missing``, ``suppressed``, total) that are whole numbers of
      rows no larger than the manifest's cohort;
    * a point budget no larger than :data:`DEFAULT_SKETCH_SIZE`.
    """
    k = DEFAULT_MIN_BUCKET_ROWS
    manifest = request.manifest
    cohort = len(manifest.entries) if manifest is not None else 0
    features = erp_fields_for(manifest.categories) if manifest is not None else []
    if len(record) > 4 * len(features) + 1:
        return (
            f"sketch has {len(record)} arrays; {len(features)} declared features allow "
            f"at most {4 * len(features) + 1}"
        )
    arrays: dict[str, np.ndarray] = {}
    for key, arr in record.items():
        size = int(np.prod(arr.shape)) if arr.shape else 1
        if size > MAX_SKETCH_ARRAY_SIZE:
            return f"sketch array {key!r} has {size} values (max {MAX_SKETCH_ARRAY_SIZE})"
        arrays[key] = np.asarray(arr.numpy(), dtype=np.float64).ravel()
    try:
        sketch = QuantileSketch.from_arrays(arrays)
    except DataError as exc:
        return f"not a sketch: {exc}"
    undeclared = [c for c in sketch.columns if c not in features]
    if undeclared:
        return f"sketch columns {undeclared} are not among the job's declared features"
    canonical = sketch.to_arrays()
    if set(canonical) != set(arrays):
        return "sketch array names are not the canonical 0000:<feature>:<part> sequence"
    if sketch.size > DEFAULT_SKETCH_SIZE:
        return f"sketch point budget {sketch.size} exceeds {DEFAULT_SKETCH_SIZE}"
    for key, values in canonical.items():
        if key.endswith(":values") and values.size > cohort // k:
            return f"sketch array {key!r} has {values.size} points for {cohort} merchants (k={k})"
        if key.endswith(":weights") and values.size and float(values.min()) < k:
            return f"sketch array {key!r} has a point aggregating fewer than {k} rows"
        if key.endswith((":missing", ":suppressed")) and not _integral(float(values[0])):
            return f"sketch count {key!r} is not a whole number of rows"
    for col in sketch.columns:
        total = sketch.count(col)
        if not _integral(total) or total > cohort:
            return f"sketch column {col!r} counts {total} rows for {cohort} merchants"
    return None


def _scores_problem(content: object, request: VerifiedRequest) -> str | None:
    from flwr.app import RecordDict

    assert isinstance(content, RecordDict)
    if SCORES_KEY not in content or SCORE_IDS_KEY not in content:
        return "a score reply carries scores and their merchant ids"
    scores = content.array_records[SCORES_KEY]
    ids_rec = content.config_records[SCORE_IDS_KEY]
    if list(scores.keys()) != ["g"] or set(ids_rec.keys()) != {KEY_MERCHANT_IDS}:
        return "a score reply carries exactly one score array 'g' and one id list"
    ids = ids_rec[KEY_MERCHANT_IDS]
    g = scores["g"]
    if not isinstance(ids, list) or tuple(g.shape) != (len(ids),):
        return "scores and merchant ids differ in length"
    allowed = {e.merchant_id for e in request.manifest.entries} if request.manifest else set()
    if not set(map(str, ids)) <= allowed or len(set(ids)) != len(ids):
        return "scores name merchants outside the credit_scoring manifest"
    return None


def egress_guard_mod(msg: Message, ctx: Context, call_next: CallNext) -> Message:
    """Let a reply leave only with declared arrays, whitelisted metrics and a receipt."""
    reply = call_next(msg, ctx)
    if reply.has_error():
        return reply
    problem = _egress_problem(msg, reply, current_request())
    if problem is not None:
        # Log the record names only: the blocked content may be exactly what must not leak.
        log.error("egress guard blocked a %s reply: %s", msg.metadata.message_type, problem)
        return Message(
            Error(code=ERR.EGRESS_BLOCKED, reason=f"EGRESS_BLOCKED: {problem}"), reply_to=msg
        )
    return reply


def usage_receipt_mod(msg: Message, ctx: Context, call_next: CallNext) -> Message:
    """Sign what the handler read and used (job, round, rows, merchant hashes, ε) into the reply."""
    usage = Usage()
    with bind(usage=usage):
        reply = call_next(msg, ctx)
    request = current_request()
    if reply.has_error() or request.manifest is None:
        return reply
    if not usage.recorded:
        return _error(msg, ERR.NODE_FAILURE, "handler did not record its data usage")
    manifest = request.manifest
    read = set(usage.read_ids)
    if not set(usage.merchant_ids) <= read or usage.rows_used > usage.rows_read:
        return _error(msg, ERR.NODE_FAILURE, "handler used rows it did not record reading")
    if not read <= {e.merchant_id for e in manifest.entries}:
        return _error(msg, ERR.NODE_FAILURE, "handler read merchants outside its manifest")
    receipt = UsageReceipt(
        job_id=manifest.job_id,
        round=manifest.round,
        data_provider=request.node.isv_id,
        action=request.action,
        rows_used=usage.rows_used,
        merchants_used=len(set(usage.merchant_ids)),
        merchants_hash=merchant_ids_hash(usage.merchant_ids),
        rows_read=usage.rows_read,
        merchants_read=len(set(usage.read_ids)),
        merchants_read_hash=merchant_ids_hash(usage.read_ids),
        manifest_root=manifest.root,
        epsilon_spent=usage.epsilon,
        delta=usage.delta,
        issued_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    )
    token = sign_receipt(receipt, request.node.signing_key())
    reply.content[RECEIPT_KEY] = ConfigRecord({KEY_RECEIPT: token})
    return reply
