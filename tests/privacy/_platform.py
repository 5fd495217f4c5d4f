"""The curious platform: it holds the gateway key and signs whatever manifest it likes.

Every attack here talks to the **real** ClientApp (``build_client_app()``) through
Flower's message interface, as the SuperLink would deliver it. The platform may
set any job field, any manifest entry and any model or encoder; what it cannot
do is read the node's configuration, its randomness or its state directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from consent import ManifestEntry
from federation.apps import NodeConfig, build_client_app, job_record
from federation.apps._keys import ARRAYS_KEY, ENCODER_KEY, JOB_KEY, KEY_RECEIPT, RECEIPT_KEY
from federation.features import BinEncoder, QuantileSketch
from federation.models import build_g_erp, get_weights
from federation.node import snap_edges
from federation.receipts import UsageReceipt, verify_receipt
from federation.schema import LABEL, MERCHANT_ID, erp_fields_for
from federation.specs import ModelSpec, get_spec

from ..federation._flworld import (
    World,
    approve_at_node,
    incoming,
    node_context,
    signed_manifest,
)

CATS = ("margins", "cash_and_debt")
FEATURES = erp_fields_for(CATS)
SPEC = replace(get_spec("pd-erp"), categories=CATS, batch_size=16, rounds=2)


def own_node(world: World, isv: str, tmp: Path, policy: str = "") -> NodeConfig:
    """``isv``'s node with its own state directory, approvals and node TOML ``[policy]``."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"{isv}.toml"
    path.write_text(f"[policy]\n{policy}\n", "utf-8")
    node = replace(world.node(isv), state_dir=tmp / f"{isv}-state", policy=path)
    approve_at_node(node, world.cohort.by_isv[isv], scoring_ok=world.cohort.scoring_ok)
    return node


def labels(world: World) -> dict[str, int]:
    """The platform's training labels."""
    tab = pd.read_parquet(world.labels_path)
    return dict(zip(tab[MERCHANT_ID], tab[LABEL].astype(int), strict=True))


def manifest(
    world: World,
    isv: str,
    entries: Sequence[ManifestEntry],
    *,
    job_id: str,
    round: int,
    purpose: str = "model_training",
    categories: Sequence[str] = CATS,
    with_labels: bool = True,
) -> bytes:
    """A manifest the platform signs with its gateway key over ``entries`` of its choice."""
    return signed_manifest(
        world,
        isv,
        job_id=job_id,
        round=round,
        purpose=purpose,
        categories=categories,
        labels=labels(world) if with_labels else None,
        entries=entries,
    )


def grid_encoder(world: World, isv: str, n_bins: int = 4) -> BinEncoder:
    """An honest encoder: quantile edges moved onto the public grid."""
    sk = QuantileSketch.from_frame(world.erp[isv], FEATURES)
    return BinEncoder(snap_edges(sk.bin_edges(n_bins)))


def model_message(
    token: bytes,
    *,
    job_id: str,
    round: int,
    encoder: BinEncoder,
    action: str = "train",
    model_spec: ModelSpec = SPEC,
    weights: Sequence[np.ndarray] | None = None,
    **job_fields: object,
) -> Message:
    """A train/evaluate/score message with the platform's weights, encoder and job fields."""
    if weights is None:
        weights = get_weights(
            build_g_erp(model_spec.arch, encoder.n_outputs, hidden=model_spec.hidden)
        )
    cfg = job_record(spec=model_spec, job_id=job_id, round=round, manifest=token)
    record = ConfigRecord({**dict(cfg.items()), **job_fields})  # type: ignore[dict-item]
    content = RecordDict(
        {
            JOB_KEY: record,
            ARRAYS_KEY: ArrayRecord({str(i): Array(np.asarray(w)) for i, w in enumerate(weights)}),
            ENCODER_KEY: ArrayRecord({k: Array(v) for k, v in encoder.to_arrays().items()}),
        }
    )
    return incoming(content, action)


def sketch_message(token: bytes, *, job_id: str, spec: ModelSpec = SPEC) -> Message:
    """A statistics request."""
    content = RecordDict({JOB_KEY: job_record(spec=spec, job_id=job_id, round=0, manifest=token)})
    return incoming(content, "query.sketch")


def send(node: NodeConfig, msg: Message) -> Message:
    """Deliver ``msg`` to the node's real ClientApp."""
    return build_client_app()(msg, node_context(node))


def refusal_receipt(node: NodeConfig, reply: Message) -> UsageReceipt:
    """The signed receipt inside a refusal's reason, verified with the node's key."""
    from federation.apps._node import _public_key

    token = reply.error.reason.rsplit("receipt=", 1)[1]
    return verify_receipt(token.encode("ascii"), _public_key(node.node_key.with_suffix(".pub.pem")))


def reply_receipt(node: NodeConfig, reply: Message) -> UsageReceipt:
    """The signed receipt of a successful reply."""
    from federation.apps._node import _public_key

    token = reply.content.config_records[RECEIPT_KEY][KEY_RECEIPT]
    return verify_receipt(token, _public_key(node.node_key.with_suffix(".pub.pem")))  # type: ignore[arg-type]
