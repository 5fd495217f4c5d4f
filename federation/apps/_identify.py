"""Phase 1 of every job: map Flower node ids to ISV ids by a signed challenge."""

from __future__ import annotations

import secrets
from logging import INFO
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log

from .._errors import JobFailed
from ._keys import ACTION_IDENTIFY, IDENTITY_KEY, JOB_KEY, KEY_ISV_ID, KEY_NONCE, KEY_SIGNATURE
from .client_app import identify_payload

if TYPE_CHECKING:
    from ._job import Job

__all__ = ["identify"]


def identify(job: Job) -> None:
    """Each node signs a fresh nonce; only nodes whose signature verifies with a registered
    ISV key take part (``job.nodes``). ``NO_NODES`` when none does."""
    msgs, nonces = [], {}
    for node_id in job.wait_for_nodes():
        nonce = secrets.token_bytes(32)
        nonces[node_id] = nonce
        content = RecordDict({JOB_KEY: ConfigRecord({KEY_NONCE: nonce})})
        msgs.append(Message(content, dst_node_id=node_id, message_type=f"query.{ACTION_IDENTIFY}"))
    for reply in job.send(msgs):
        nid = reply.metadata.src_node_id
        if reply.has_error():
            job.failures.append(f"identify@node-{nid}: [{reply.error.code}] {reply.error.reason}")
            continue
        ident = reply.content.config_records[IDENTITY_KEY]
        isv, sig = str(ident[KEY_ISV_ID]), ident[KEY_SIGNATURE]
        key = job.node_keys.get(isv)
        try:
            if key is None or not isinstance(sig, bytes):
                raise InvalidSignature
            key.verify(sig, identify_payload(nonces[nid], isv))
        except InvalidSignature:
            job.failures.append(f"identify@node-{nid}: UNKNOWN_NODE: claims {isv!r}")
            continue
        if isv in job.nodes.values():
            job.failures.append(f"identify@node-{nid}: DUPLICATE_NODE: {isv!r} twice")
            continue
        job.nodes[nid] = isv
    log(INFO, "fedgate: identified nodes %s", sorted(job.nodes.values()))
    if not job.nodes:
        raise JobFailed("no node proved its identity", code="NO_NODES", reasons=job.failures)
