"""The ISV node's ClientApp: sketch, train, evaluate, score and release ERP signals on
manifest-filtered ERP rows.

Mods, outermost first: the error guard, SecAgg+ and its legacy bridge,
:func:`manifest_mod`, :func:`egress_guard_mod`, :func:`usage_receipt_mod`. Every
handler starts from :func:`current_request` (which exists only after the manifest
mod verified the message) and reads rows only through :func:`load_cohort`; each
records what it used for the receipt. One module per handler: ``identify`` here,
:mod:`._handle_sketch`, :mod:`._handle_train`, :mod:`._handle_evaluate`,
:mod:`._handle_score`, :mod:`._handle_signals`; what they share is in :mod:`._handling`.

Deployment: ``flwr-clientapp`` loads ``federation.apps.client_app:app``; the
SuperNode's ``--node-config`` carries ``isv-id``, ``erp-path``, ``node-key``,
``gateway-key``, ``state-dir``. Simulation: ``run_config["sim-nodes"]`` lists
those per partition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from .._errors import FederationError
from ..node import error_guard_mod
from ._handle_evaluate import evaluate
from ._handle_score import score
from ._handle_signals import signals
from ._handle_sketch import sketch
from ._handle_train import train
from ._handling import data_errors
from ._keys import (
    ACTION_IDENTIFY,
    ACTION_MANIFEST,
    ACTION_SCORE,
    ACTION_SIGNALS,
    ACTION_SKETCH,
    ERR,
    IDENTITY_KEY,
    JOB_KEY,
    KEY_ISV_ID,
    KEY_NONCE,
    KEY_SIGNATURE,
)
from ._mods import egress_guard_mod, make_manifest_mod, manifest_mod, usage_receipt_mod
from ._request import current_request
from ._secagg import legacy_bridge_mod, secagg_mod

__all__ = ["app", "identify_payload", "build_client_app"]


def identify_payload(nonce: bytes, isv_id: str) -> bytes:
    """The bytes a node signs to prove it holds ``isv_id``'s key."""
    return b"fedgate-identify\n" + isv_id.encode() + b"\n" + nonce


def identify(msg: Message, ctx: Context) -> Message:
    """Prove this node's ISV identity by signing the server's nonce (reads no rows)."""
    node = current_request().node
    nonce = msg.content.config_records[JOB_KEY][KEY_NONCE]
    if not isinstance(nonce, bytes):
        raise FederationError("the identify nonce must be bytes", code="BAD_REQUEST")
    sig = node.signing_key().sign(identify_payload(nonce, node.isv_id))
    return Message(
        RecordDict({IDENTITY_KEY: ConfigRecord({KEY_ISV_ID: node.isv_id, KEY_SIGNATURE: sig})}),
        reply_to=msg,
    )


def manifest_chunks(msg: Message, ctx: Context) -> Message:
    """Never reached: the manifest mod answers ``query.manifest`` messages itself."""
    return Message(Error(code=ERR.NODE_FAILURE, reason="manifest chunks reached a handler"),
                   reply_to=msg)  # fmt: skip


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

    client.query(ACTION_IDENTIFY)(identify)
    # Chunks of a streamed manifest: the manifest mod verifies, spools and answers them;
    # the handler only gives Flower a route for the message type and is never reached.
    client.query(ACTION_MANIFEST)(manifest_chunks)
    client.query(ACTION_SKETCH)(data_errors(sketch))
    client.train()(data_errors(train))
    client.evaluate()(data_errors(evaluate))
    client.query(ACTION_SCORE)(data_errors(score))
    client.query(ACTION_SIGNALS)(data_errors(signals))
    return client


app = build_client_app()
"""The ClientApp Flower loads (``federation.apps.client_app:app``)."""
