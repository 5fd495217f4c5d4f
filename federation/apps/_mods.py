"""The ClientApp's three mods, outermost first: manifest, egress guard, usage receipt.

* :func:`manifest_mod` refuses any train / evaluate / query message that does not
  carry a gateway-signed cohort manifest for this node, bound to the message's
  job, round and purpose; only then may the handler read rows (through
  :func:`federation.apps.load_cohort`).
* :func:`egress_guard_mod` lets a reply out only if it holds the declared
  records: model arrays of the shapes the server sent, whitelisted scalar
  metrics, a receipt, and per action a sketch (k-anonymous points only),
  scores of bounded shape, or ERP signals on the node's own grid
  (:func:`federation.signals.release_problem`).
  Anything else turns the reply into an error and is logged (keys only).
* :func:`usage_receipt_mod` attaches the node's signed :class:`UsageReceipt`.

Each mod returns an error reply with a code from :class:`ERR` instead of raising.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord

from consent import ConsentError, ManifestRejected, verify_manifest

from .._errors import DataError, FederationError
from ..features import QuantileSketch
from ..node import PUBLIC_GRID, SKETCH_SIZE, check_request, field_problem
from ..receipts import UsageReceipt, entry_bitmap, hash_key, merchant_ids_hash, sign_receipt
from ..schema import fields_from_json, job_features
from ..specs import EXTRA_FIELDS_KEY
from ._keys import (
    ACTION_IDENTIFY,
    ACTION_MANIFEST,
    ACTION_SCORE,
    ACTION_SIGNALS,
    ACTION_SKETCH,
    ALLOWED_METRIC_KEYS,
    ARRAYS_KEY,
    ERR,
    IDENTITY_KEY,
    JOB_KEY,
    KEY_ARCH,
    KEY_DP_DELTA,
    KEY_DP_EPSILON,
    KEY_ISV_ID,
    KEY_JOB_ID,
    KEY_MANIFEST,
    KEY_MANIFEST_HEADER,
    KEY_MERCHANT_IDS,
    KEY_NONCE,
    KEY_RECEIPT,
    KEY_ROUND,
    KEY_SIGNAL_KIND,
    KEY_SIGNATURE,
    KEY_SPEC,
    MAX_SKETCH_ARRAY_SIZE,
    METRICS_KEY,
    NUM_EXAMPLES,
    RECEIPT_KEY,
    SCORE_IDS_KEY,
    SCORES_KEY,
    SIGNAL_IDS_KEY,
    SIGNALS_KEY,
    SKETCH_KEY,
)
from ._node import NodeConfig, manifest_merchant_ids
from ._request import Usage, VerifiedRequest, bind, current_request, secagg_active
from ._secagg import remember_policy
from ._stream import load_stream, receive_chunks

__all__ = [
    "CallNext",
    "Clock",
    "PURPOSE_FOR_ACTION",
    "TEST_CLOCK_SKEW_ENV",
    "egress_guard_mod",
    "make_manifest_mod",
    "manifest_mod",
    "refuse",
    "usage_receipt_mod",
]

log = logging.getLogger("fedgate.node")

CallNext = Callable[[Message, Context], Message]
Clock = Callable[[], datetime]

PURPOSE_FOR_ACTION: dict[str, tuple[str, ...]] = {
    "train": ("model_training",),
    "evaluate": ("model_training",),
    f"query.{ACTION_SKETCH}": ("model_training",),
    f"query.{ACTION_SCORE}": ("credit_scoring", "post_loan_monitoring"),
    f"query.{ACTION_SIGNALS}": ("credit_scoring", "post_loan_monitoring"),
}
"""The consent purposes a manifest may name for each action: scoring serves origination
(``credit_scoring``) and the re-scoring of merchants with open loans
(``post_loan_monitoring``); every entry must still match an approval for that purpose.
A signals query's handler narrows it to its kind's one purpose
(:data:`federation.signals.SIGNAL_PURPOSE`)."""


TEST_CLOCK_SKEW_ENV = "FEDGATE_TEST_ONLY_NODE_CLOCK_SKEW_S"
"""Tests only: seconds added to this node's clock for its manifest checks (negative: behind).

How ``tests/deployment/test_skewed_clock.py`` runs a real SuperNode whose clock is wrong.
The real mechanism, Debian's libfaketime, breaks Python 3.11 under a negative offset
(``time.sleep`` fails with EINVAL when the monotonic clock is left alone, and
``threading.Event.wait`` hangs when it is shifted), so the node could not run at all.
Only the node's own environment sets it; a platform message never can, and a node's
operator could move its clock anyway. Unset (the default) it is zero.
"""

_TEST_SKEW = timedelta(seconds=float(os.environ.get(TEST_CLOCK_SKEW_ENV) or 0))
if _TEST_SKEW:
    log.warning("TEST ONLY: this node's manifest clock is skewed by %s", _TEST_SKEW)


def _utcnow() -> datetime:
    return datetime.now(UTC) + _TEST_SKEW


def _action(msg: Message) -> str:
    mtype = msg.metadata.message_type
    return mtype if "." in mtype or mtype != "query" else "query.default"


def _error(msg: Message, code: int, reason: str) -> Message:
    log.warning("node refused %s: [%d] %s", msg.metadata.message_type, code, reason)
    return Message(Error(code=code, reason=reason), reply_to=msg)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def refuse(
    msg: Message,
    code: int,
    rule: str,
    counts: Mapping[str, int | float] | None = None,
    *,
    request: VerifiedRequest | None = None,
) -> Message:
    """A policy refusal: ``<ERR name>: <rule> <counts> receipt=<signed receipt>``.

    The node signs a receipt with ``refusal = rule`` and nothing used or read, so
    the refusal is on record under the node's key wherever the reason is kept.
    """
    req = request or current_request()
    manifest = req.manifest
    name = next((k for k, v in vars(ERR).items() if v == code and k.isupper()), "POLICY_REFUSED")
    parts = [f"{name}: {rule}"] if name != rule else [name]
    parts += [
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={int(v)}"
        for k, v in (counts or {}).items()
    ]
    if manifest is not None:
        empty = merchant_ids_hash([], key=hash_key(req.node.state_dir))
        receipt = UsageReceipt(
            job_id=manifest.job_id,
            round=manifest.round,
            data_provider=req.node.isv_id,
            action=req.action,
            rows_used=0,
            merchants_used=0,
            merchants_hash=empty,
            rows_read=0,
            merchants_read=0,
            merchants_read_hash=empty,
            manifest_root=manifest.root,
            epsilon_spent=0.0,
            delta=0.0,
            issued_at=_stamp(),
            refusal=rule,
        )
        parts.append("receipt=" + sign_receipt(receipt, req.node.signing_key()).decode("ascii"))
    log.warning("node refused %s: %s %s", msg.metadata.message_type, rule, dict(counts or {}))
    return Message(Error(code=code, reason=" ".join(parts)), reply_to=msg)


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
        run_config = {**defaults, **dict(ctx.run_config)}
        try:
            node = NodeConfig.from_context(ctx.node_config, run_config)
        except (ValueError, OSError, KeyError) as exc:
            return _error(msg, ERR.NODE_FAILURE, f"node misconfigured: {exc}")
        content = msg.content
        if action == f"query.{ACTION_IDENTIFY}":
            # The handshake reads no rows; it may carry a nonce and nothing else, so no data
            # request can ride along without a manifest.
            cfg = content.config_records.get(JOB_KEY)
            if set(content.keys()) != {JOB_KEY} or cfg is None or set(cfg.keys()) != {KEY_NONCE}:
                return _error(msg, ERR.MANIFEST_MISSING, "identify carries only a nonce")
            # Noted for SecAgg+'s setup, later; a bad policy is refused with the first data
            # request.
            with contextlib.suppress(FederationError):
                remember_policy(ctx, node.node_policy())
            with bind(request=VerifiedRequest(node=node, manifest=None, action=action)):
                return call_next(msg, ctx)
        if action == f"query.{ACTION_MANIFEST}":
            # Chunks of a streamed manifest: verified and spooled here, where the node's
            # clock is; the message reaches no handler and reads no row.
            if set(content.keys()) != {JOB_KEY}:
                return _error(msg, ERR.MANIFEST_MISSING, "a manifest message carries chunks only")
            return receive_chunks(msg, node, clock())
        purposes = PURPOSE_FOR_ACTION.get(action)
        if purposes is None:
            return _error(msg, ERR.MANIFEST_MISMATCH, f"action {action!r} is not served")
        cfg = content.config_records.get(JOB_KEY)
        token = cfg.get(KEY_MANIFEST) if cfg is not None else None
        header = cfg.get(KEY_MANIFEST_HEADER) if cfg is not None else None
        if token is not None and header is not None:
            return _error(msg, ERR.MANIFEST_MISMATCH, "message carries a manifest twice")
        if not (isinstance(token, bytes) and token) and not isinstance(header, bytes):
            return _error(msg, ERR.MANIFEST_MISSING, "message carries no signed cohort manifest")
        now = clock()
        try:
            # The replay guard's file is shared by every job on this node, in whichever
            # process: read it and record the manifest under one exclusive file lock.
            with node.state_lock("manifests"):
                manifest = (
                    load_stream(node, header, now)  # chunks verified and spooled before
                    if isinstance(header, bytes)
                    else verify_manifest(
                        token,  # type: ignore[arg-type]
                        gateway_key=node.gateway_public_key(),
                        data_provider=node.isv_id,
                        now=now,
                        replay_guard=node.replay_guard(),
                    )
                )
        except ManifestRejected as exc:
            return _error(msg, ERR.MANIFEST_REJECTED, f"{exc.code}: {exc}")
        except ConsentError as exc:  # e.g. a corrupt replay-guard file
            return _error(msg, ERR.NODE_FAILURE, f"{exc.code}: {exc}")
        if cfg is None:  # the manifest was read from this record above
            raise FederationError("the job record vanished", code="BAD_REQUEST")
        if cfg.get(KEY_JOB_ID) != manifest.job_id or cfg.get(KEY_ROUND) != manifest.round:
            return _error(
                msg,
                ERR.MANIFEST_MISMATCH,
                f"message is for job {cfg.get(KEY_JOB_ID)!r} round {cfg.get(KEY_ROUND)!r}, "
                f"manifest for {manifest.job_id!r} round {manifest.round}",
            )
        if manifest.purpose not in purposes:
            return _error(
                msg,
                ERR.MANIFEST_MISMATCH,
                f"{action} needs purpose {' or '.join(map(repr, purposes))}, "
                f"manifest says {manifest.purpose!r}",
            )
        # Defence in depth: re-check every consent window here, not only inside consent/.
        stale, bad_range = 0, 0
        for e in manifest.entries:  # one pass: a streamed cohort's entries are rebuilt to read
            stale += not e.consent_start <= now < e.consent_expiry
            bad_range += e.data_from > e.data_to
        if stale or bad_range:
            return _error(
                msg,
                ERR.MANIFEST_REJECTED,
                f"ENTRY_INVALID: {stale} entries outside their consent window, "
                f"{bad_range} with an empty data range",
            )
        request = VerifiedRequest(node=node, manifest=manifest, action=action)
        try:
            policy = node.node_policy()
            remember_policy(ctx, policy)
            unapproved = (
                node.approvals(policy).unmatched(manifest, manifest.entries)
                if policy.require_approval
                else 0
            )
        except (FederationError, OSError, ValueError, sqlite3.Error) as exc:  # refuse, clearly
            return _error(msg, ERR.NODE_FAILURE, f"BAD_POLICY: {exc}")
        refusal = check_request(
            policy,
            purpose=manifest.purpose,
            spec=str(cfg.get(KEY_SPEC, "")),
            arch=str(cfg.get(KEY_ARCH, "")),
            categories=manifest.categories,
            dp_epsilon=float(cfg.get(KEY_DP_EPSILON, 0.0)),  # type: ignore[arg-type]
            dp_delta=float(cfg.get(KEY_DP_DELTA, 0.0)),  # type: ignore[arg-type]
            unapproved=unapproved,
            model=action != f"query.{ACTION_SIGNALS}",
        )
        if refusal is not None:
            rule, counts = refusal
            code = (
                ERR.CONSENT_NOT_APPROVED if rule == "CONSENT_NOT_APPROVED" else ERR.POLICY_REFUSED
            )
            return refuse(msg, code, rule, counts, request=request)
        # The job's extra fields must match the node's own declarations before a row is read.
        try:
            extras = fields_from_json(str(run_config.get(EXTRA_FIELDS_KEY, "[]")))
        except DataError:
            return refuse(msg, ERR.POLICY_REFUSED, "FIELD_MISMATCH", {"fields": 1},
                          request=request)
        if extras:
            try:
                declared = node.erp_connector().mapping.declared
            except DataError as exc:
                return _error(msg, ERR.NODE_FAILURE, f"DATA_ERROR: {exc.code}")
            if mismatch := field_problem(extras, declared, manifest.categories):
                return refuse(msg, ERR.POLICY_REFUSED, *mismatch, request=request)
        with bind(request=replace(request, policy=policy, extras=extras)):
            return call_next(msg, ctx)

    return manifest_mod


manifest_mod = make_manifest_mod()


def _scalar_metrics_ok(record: MetricRecord, allowed: frozenset[str]) -> str | None:
    for key, value in record.items():
        if key not in allowed:
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
    elif action == f"query.{ACTION_SIGNALS}":
        allowed[SIGNALS_KEY] = ArrayRecord
        allowed[SIGNAL_IDS_KEY] = ConfigRecord
    elif action == f"query.{ACTION_IDENTIFY}":
        allowed = {IDENTITY_KEY: ConfigRecord}
    for key, record in content.items():
        if key not in allowed or not isinstance(record, allowed[key]):
            return f"record {key!r} ({type(record).__name__}) is not allowed in a {action} reply"
    allowed_metrics = ALLOWED_METRIC_KEYS
    if request.policy is not None:  # the count and ε are the accounting: always allowed
        listed = {*request.policy.allowed_metrics, NUM_EXAMPLES, "epsilon", "delta"}
        allowed_metrics = allowed_metrics & frozenset(listed)
    metrics = content.metric_records.get(METRICS_KEY)
    if metrics is not None and (p := _scalar_metrics_ok(metrics, allowed_metrics)):
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
    if action == f"query.{ACTION_SIGNALS}":
        return _signals_problem(msg, content, request)
    if action == f"query.{ACTION_IDENTIFY}":
        ident = content.config_records.get(IDENTITY_KEY)
        if ident is None or set(ident.keys()) != {KEY_ISV_ID, KEY_SIGNATURE}:
            return "an identify reply carries only the ISV id and its signature"
    return None


def _integral(x: float) -> bool:
    return bool(np.isfinite(x)) and float(x) == float(np.floor(x)) and x >= 0


def _sketch_problem(record: ArrayRecord, request: VerifiedRequest) -> str | None:
    """A sketch leaves only as a DP histogram of the job's features on the public grid.

    Independent of the handler, the guard parses the reply with
    :meth:`QuantileSketch.from_arrays` (key grammar, four parts per column) and
    requires: at most ``4 x features + 1`` arrays, every column a declared
    feature, keys numbered in order, the grid's point budget, every point a value
    of :data:`federation.node.PUBLIC_GRID` (so no point can be a row's value or a
    mean of rows) and whole, non-negative counts.
    """
    manifest = request.manifest
    features = job_features(manifest.categories, request.extras) if manifest is not None else []
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
    if sketch.size != SKETCH_SIZE:
        return f"sketch point budget {sketch.size} is not the public grid's {SKETCH_SIZE}"
    grid = set(PUBLIC_GRID.tolist())
    for key, values in canonical.items():
        if key.endswith(":values") and not set(values.tolist()) <= grid:
            return f"sketch array {key!r} has points off the public grid"
        if key.endswith((":weights", ":missing", ":suppressed")) and not all(
            _integral(float(v)) for v in values
        ):
            return f"sketch counts {key!r} are not whole numbers of rows"
    return None


def _scores_problem(content: object, request: VerifiedRequest) -> str | None:
    from flwr.app import RecordDict

    if not isinstance(content, RecordDict):
        return "a score reply carries a record dict"
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
    allowed = set(manifest_merchant_ids(request.manifest)) if request.manifest else set()
    if not set(map(str, ids)) <= allowed or len(set(ids)) != len(ids):
        return "scores name merchants outside the scoring manifest"
    return None


def _signals_problem(msg: Message, content: object, request: VerifiedRequest) -> str | None:
    """A signals reply leaves only as the node's own coarse release for the asked kind.

    Independent of the handler: the kind must be one the node's policy serves, for the
    manifest's purpose; then :func:`federation.signals.release_problem` checks the
    arrays against the policy's grid, clip and minimum cohort and the ids against the
    manifest. The metrics carry the count only.
    """
    from flwr.app import RecordDict

    from ..signals import SIGNAL_PURPOSE, release_problem

    if not isinstance(content, RecordDict) or request.policy is None or not request.manifest:
        return "a signals reply needs a verified request"
    if SIGNALS_KEY not in content or SIGNAL_IDS_KEY not in content:
        return "a signals reply carries signals and their merchant ids"
    kind = str(msg.content.config_records[JOB_KEY].get(KEY_SIGNAL_KIND, ""))
    policy = request.policy
    if kind not in policy.allowed_signals or SIGNAL_PURPOSE.get(kind) != request.manifest.purpose:
        return f"signal kind {kind!r} is not released under {request.manifest.purpose!r}"
    ids_rec = content.config_records[SIGNAL_IDS_KEY]
    ids = ids_rec.get(KEY_MERCHANT_IDS)
    if set(ids_rec.keys()) != {KEY_MERCHANT_IDS} or not isinstance(ids, list):
        return "a signals reply carries exactly one merchant id list"
    metrics = content.metric_records.get(METRICS_KEY)
    if metrics is not None and set(metrics.keys()) - {NUM_EXAMPLES}:
        return "a signals reply's metrics carry the count only"
    values = {k: np.asarray(v.numpy()) for k, v in content.array_records[SIGNALS_KEY].items()}
    return release_problem(
        kind, ids, values, policy.signal_rules(), set(manifest_merchant_ids(request.manifest))
    )


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
    listed = manifest_merchant_ids(manifest)
    if not read <= set(listed):
        return _error(msg, ERR.NODE_FAILURE, "handler read merchants outside its manifest")
    key = hash_key(request.node.state_dir)  # keyed: no one without it can test guesses
    used = set(usage.merchant_ids)
    receipt = UsageReceipt(
        job_id=manifest.job_id,
        round=manifest.round,
        data_provider=request.node.isv_id,
        action=request.action,
        rows_used=usage.rows_used,
        merchants_used=len(set(usage.merchant_ids)),
        merchants_hash=merchant_ids_hash(usage.merchant_ids, key=key),
        rows_read=usage.rows_read,
        merchants_read=len(set(usage.read_ids)),
        merchants_read_hash=merchant_ids_hash(usage.read_ids, key=key),
        manifest_root=manifest.root,
        epsilon_spent=usage.epsilon,
        delta=usage.delta,
        issued_at=_stamp(),
        aggregation="secagg+" if request.action == "train" and secagg_active() else "",
        unused_entries=entry_bitmap(
            (i for i, m in enumerate(listed) if m not in used), len(listed)
        ),
    )
    token = sign_receipt(receipt, request.node.signing_key())
    reply.content[RECEIPT_KEY] = ConfigRecord({KEY_RECEIPT: token})
    return reply
