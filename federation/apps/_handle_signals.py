"""ERP signals at the node: coarse per-merchant changes or a floored turnover, never a row.

The request names a kind (:data:`federation.signals.SIGNAL_KINDS`), an ``as_of`` day
and, for ``erp-changes``, a ``since`` day (one for all, or per merchant). Everything
else is the node's own: whether the kind is served at all (``allowed-signals``),
which purpose and categories it needs, the rounding grid, the clip range and the
minimum cohort (:meth:`federation.node.NodePolicy.signal_rules`). Any other key in
the request (a finer step, other fields) is never read.

Refusals, in order: an unknown kind (``SIGNAL_UNKNOWN``), a kind the policy does not
serve (``SIGNAL_NOT_ALLOWED``), a manifest for another purpose than the kind's
(``PURPOSE_MISMATCH``), a manifest whose categories do not cover the kind's
(``CATEGORY_NOT_CONSENTED``), a malformed date (``BAD_REQUEST``), fewer released
merchants than the policy's minimum (``MIN_COHORT``). Each is signed into a receipt.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from ..signals import (
    ERP_CHANGES,
    SIGNAL_CATEGORIES,
    SIGNAL_FIELDS,
    SIGNAL_KINDS,
    SIGNAL_PURPOSE,
    release,
)
from ._handling import as_array, request_policy
from ._keys import (
    ERR,
    JOB_KEY,
    KEY_MERCHANT_IDS,
    KEY_SIGNAL_AS_OF,
    KEY_SIGNAL_KIND,
    KEY_SIGNAL_SINCE,
    KEY_SINCE_DATES,
    KEY_SINCE_IDS,
    METRICS_KEY,
    NUM_EXAMPLES,
    SIGNAL_IDS_KEY,
    SIGNALS_KEY,
)
from ._mods import refuse
from ._node import load_cohort, manifest_merchant_ids
from ._request import current_request, current_usage

__all__ = ["signals", "parse_day"]


def parse_day(value: object) -> date | None:
    """An ISO day from a request field; ``None`` when it is not exactly one."""
    if not isinstance(value, str) or len(value) != 10:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def signals(msg: Message, ctx: Context) -> Message:
    """The release of the requested kind over the manifest's merchants (module docstring)."""
    req, policy = current_request(), request_policy()
    manifest = req.manifest
    if manifest is None:  # the manifest mod binds it before any handler runs
        return refuse(msg, ERR.MANIFEST_MISSING, "MANIFEST_MISSING")
    cfg = msg.content.config_records[JOB_KEY]
    kind = cfg.get(KEY_SIGNAL_KIND)
    if kind not in SIGNAL_KINDS:
        return refuse(msg, ERR.POLICY_REFUSED, "SIGNAL_UNKNOWN")
    kind = str(kind)
    if kind not in policy.allowed_signals:
        return refuse(msg, ERR.POLICY_REFUSED, "SIGNAL_NOT_ALLOWED")
    if manifest.purpose != SIGNAL_PURPOSE[kind]:
        return refuse(msg, ERR.MANIFEST_MISMATCH, "PURPOSE_MISMATCH")
    missing = [c for c in SIGNAL_CATEGORIES[kind] if c not in manifest.categories]
    if missing:
        return refuse(msg, ERR.POLICY_REFUSED, "CATEGORY_NOT_CONSENTED",
                      {"categories": len(missing)})  # fmt: skip
    as_of = parse_day(cfg.get(KEY_SIGNAL_AS_OF))
    raw_since = cfg.get(KEY_SIGNAL_SINCE, "")
    since = parse_day(raw_since) if raw_since else None
    ids, days = cfg.get(KEY_SINCE_IDS, []), cfg.get(KEY_SINCE_DATES, [])
    per = [parse_day(d) for d in days] if isinstance(days, list) else [None]
    if (
        as_of is None
        or (raw_since and since is None)
        or not isinstance(ids, list)
        or len(ids) != len(per)
        or any(d is None for d in per)
    ):
        return refuse(msg, ERR.POLICY_REFUSED, "BAD_REQUEST")
    listed = set(manifest_merchant_ids(manifest))
    # Ids outside the manifest are ignored: the cohort is the manifest's, whatever is listed.
    since_by = {str(m): d for m, d in zip(ids, per, strict=True) if str(m) in listed and d}
    if kind == ERP_CHANGES and since is None and not since_by:
        return refuse(msg, ERR.POLICY_REFUSED, "BAD_REQUEST")
    cohort = load_cohort(
        req.node, manifest, now=datetime.now(UTC), fields=SIGNAL_FIELDS[kind], history=True
    )
    rules = policy.signal_rules()
    out = release(
        kind, cohort.frame, as_of=as_of, since=since, since_by_merchant=since_by, rules=rules
    )
    if len(out.merchant_ids) < rules.min_cohort:
        return refuse(msg, ERR.POLICY_REFUSED, "MIN_COHORT", {"min": rules.min_cohort})
    current_usage().record(
        rows_used=out.rows_used,
        merchant_ids=out.merchant_ids,
        epsilon=0.0,
        delta=0.0,
        rows_read=cohort.rows_read,
        read_ids=cohort.merchant_ids,
    )
    return Message(
        RecordDict(
            {
                SIGNALS_KEY: ArrayRecord({k: as_array(v) for k, v in out.values.items()}),
                SIGNAL_IDS_KEY: ConfigRecord({KEY_MERCHANT_IDS: out.merchant_ids}),
                METRICS_KEY: MetricRecord({NUM_EXAMPLES: len(out.merchant_ids)}),
            }
        ),
        reply_to=msg,
    )
