"""Names shared by the ServerApp and the ClientApp: record keys, config keys, actions, codes.

Both sides import these constants instead of repeating string literals, so a
renamed key breaks loudly at import time rather than silently at run time.
"""

from __future__ import annotations

__all__ = [
    "ACTION_IDENTIFY",
    "ACTION_MANIFEST",
    "ACTION_SCORE",
    "ACTION_SIGNALS",
    "ACTION_SKETCH",
    "ALLOWED_METRIC_KEYS",
    "ARRAYS_KEY",
    "CONFIG_KEY",
    "ENCODER_KEY",
    "ERR",
    "JOB_KEY",
    "KEY_DP_DELTA",
    "KEY_DP_EPSILON",
    "KEY_DP_MAX_GRAD_NORM",
    "KEY_EPOCHS",
    "KEY_BATCH_SIZE",
    "KEY_JOB_ID",
    "KEY_LR",
    "KEY_MANIFEST",
    "KEY_MANIFEST_CHUNKS",
    "KEY_MANIFEST_HEADER",
    "KEY_NONCE",
    "KEY_PROXIMAL_MU",
    "KEY_ROUND",
    "KEY_ROUNDS",
    "KEY_ARCH",
    "KEY_HIDDEN",
    "KEY_CATEGORIES",
    "KEY_SEED",
    "KEY_HOLDOUT_BUCKETS",
    "KEY_SPEC",
    "KEY_LIFETIME_EPSILON",
    "METRICS_KEY",
    "RECEIPT_KEY",
    "KEY_RECEIPT",
    "IDENTITY_KEY",
    "KEY_ISV_ID",
    "KEY_SIGNATURE",
    "SCORES_KEY",
    "SCORE_IDS_KEY",
    "SIGNALS_KEY",
    "SIGNAL_IDS_KEY",
    "KEY_SIGNAL_KIND",
    "KEY_SIGNAL_AS_OF",
    "KEY_SIGNAL_SINCE",
    "KEY_SINCE_IDS",
    "KEY_SINCE_DATES",
    "MANIFEST_ACK_KEY",
    "KEY_MERCHANT_IDS",
    "SKETCH_KEY",
    "NUM_EXAMPLES",
    "AUC_STD",
    "MAX_SKETCH_ARRAY_SIZE",
]

# --- record names inside a Message's RecordDict -------------------------------------------
ARRAYS_KEY = "arrays"  # ArrayRecord: model weights (Flower's strategies use this name)
CONFIG_KEY = "config"  # ConfigRecord: the strategy's per-round config
JOB_KEY = "fedgate"  # ConfigRecord: job id, round, signed manifest, training settings
ENCODER_KEY = "encoder"  # ArrayRecord: the BinEncoder built from federated sketches
METRICS_KEY = "metrics"  # MetricRecord: whitelisted scalar metrics
RECEIPT_KEY = "receipt"  # ConfigRecord: the node's signed usage receipt
IDENTITY_KEY = "identity"  # ConfigRecord: reply to ACTION_IDENTIFY
SKETCH_KEY = "sketch"  # ArrayRecord: mergeable quantile sketch arrays
SCORES_KEY = "scores"  # ArrayRecord: one float array of per-merchant g-scores
SCORE_IDS_KEY = "score-ids"  # ConfigRecord: the merchant ids, aligned with SCORES_KEY
MANIFEST_ACK_KEY = "manifest-ack"  # ConfigRecord: chunks of a streamed manifest accepted
SIGNALS_KEY = "signals"  # ArrayRecord: one array per released ERP signal (federation.signals)
SIGNAL_IDS_KEY = "signal-ids"  # ConfigRecord: the merchant ids, aligned with SIGNALS_KEY

# --- keys inside the JOB_KEY ConfigRecord ---------------------------------------------------
KEY_JOB_ID = "job-id"
KEY_ROUND = "round"
KEY_ROUNDS = "rounds"
KEY_MANIFEST = "manifest"  # bytes: the gateway-signed cohort manifest
KEY_MANIFEST_HEADER = "manifest-header"  # bytes: a streamed manifest's signed header
KEY_MANIFEST_CHUNKS = "manifest-chunks"  # list[bytes]: chunks of a streamed manifest
KEY_NONCE = "nonce"  # bytes: identification challenge
KEY_EPOCHS = "local-epochs"
KEY_BATCH_SIZE = "batch-size"
KEY_LR = "lr"
KEY_PROXIMAL_MU = "proximal-mu"
KEY_ARCH = "arch"
KEY_HIDDEN = "hidden"
KEY_CATEGORIES = "categories"
KEY_SEED = "seed"  # the platform's own seed (initial weights); a node never reads it
KEY_SPEC = "spec"  # the model spec's name (the node's policy lists the specs it serves)
KEY_HOLDOUT_BUCKETS = "holdout-buckets"
"""Job record: the hold-out rule (merchant m held out iff sha256(m)[0] % buckets == 0)."""
KEY_DP_EPSILON = "dp-epsilon"  # 0.0 means "no DP"
KEY_DP_DELTA = "dp-delta"
KEY_DP_MAX_GRAD_NORM = "dp-max-grad-norm"
KEY_LIFETIME_EPSILON = "dp-lifetime-epsilon"
KEY_SIGNAL_KIND = "signal-kind"  # which release a signals query asks for (erp-changes, …)
KEY_SIGNAL_AS_OF = "signal-as-of"  # ISO date: "now" is the latest snapshot at or before it
KEY_SIGNAL_SINCE = "signal-since"  # ISO date or "": "then" for merchants not listed below
KEY_SINCE_IDS = "since-merchant-ids"  # list[str]: merchants with their own "since" …
KEY_SINCE_DATES = "since-dates"  # list[str]: … and those ISO dates, aligned

# --- keys inside reply records ---------------------------------------------------------------
KEY_RECEIPT = "token"
KEY_ISV_ID = "isv-id"
KEY_SIGNATURE = "signature"
KEY_MERCHANT_IDS = "merchant-ids"
NUM_EXAMPLES = "num-examples"  # the weighting key of Flower's FedAvg
AUC_STD = "auc-std"  # a bound on the noise of a node's released AUC (federation.bestround)

# --- message actions (``query.<action>``) ----------------------------------------------------
ACTION_IDENTIFY = "identify"
ACTION_SKETCH = "sketch"
ACTION_SCORE = "score"
ACTION_SIGNALS = "signals"  # coarse per-merchant ERP signals (federation.signals)
ACTION_MANIFEST = "manifest"  # chunks of a streamed manifest (federation.apps._stream)

# --- egress whitelist ------------------------------------------------------------------------
ALLOWED_METRIC_KEYS: frozenset[str] = frozenset(
    {NUM_EXAMPLES, "auc", AUC_STD, "ks", "brier", "epsilon", "delta"}
)
"""The only metric names a node's reply may carry; each must be a single scalar.

The node's policy (``allowed-metrics``) may narrow it further. No training loss
and no raw class count leave: on a small cohort they are functions of a few rows
(``auc-std`` is computed from noisy class counts only, see ``noisy_metrics``)."""

MAX_SKETCH_ARRAY_SIZE = 4096
"""Largest array a sketch reply may carry: a sketch summarises, it never lists rows."""


class ERR:
    """Error-reply codes a node sends back (``Error.code`` is an int in Flower)."""

    MANIFEST_MISSING = 4001
    MANIFEST_REJECTED = 4002  # reason starts with the consent ManifestRejected code
    MANIFEST_MISMATCH = 4003  # job id / round / purpose in the message differ from the manifest
    EGRESS_BLOCKED = 4010
    BUDGET_EXCEEDED = 4020
    NO_DATA = 4030
    POLICY_REFUSED = 4040  # reason: POLICY_REFUSED: <rule> <counts> receipt=<signed receipt>
    CONSENT_NOT_APPROVED = 4041  # an entry matches no approval the node holds
    MODEL_UNKNOWN = 4042  # a model/encoder the node did not receive in a job it trained in
    NODE_FAILURE = 4090

    def __new__(cls) -> ERR:  # noqa: D102 - a namespace, never instantiated
        raise TypeError("ERR is a namespace")
