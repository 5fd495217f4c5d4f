"""Streamed cohort manifests over Flower messages: chunks first, then the work message.

The wire format and its checks are :mod:`consent._stream`'s. This module carries
them over Flower:

* the ServerApp builds a :class:`consent.ManifestStream` per node and round
  (:func:`consent.stream_manifest`, reading the cohort once), then sends every node
  its chunks side by side in ``query.manifest`` messages of at most
  :data:`CHUNKS_PER_MESSAGE` chunks each (:func:`send_streams`: one unacknowledged
  message per node, at most :data:`MAX_CHUNKS_IN_FLIGHT` chunks in flight in all);
  the train / evaluate / query message then carries only the signed header
  (``KEY_MANIFEST_HEADER``);
* the node (:func:`receive_chunks`, called by the manifest mod for a
  ``query.manifest`` message) re-verifies the header, resumes the stream where its
  own spool says it stopped, verifies each chunk against the signed root and
  appends the verified entry lines to ``<state_dir>/manifest-streams/<digest>.lines``;
  the last chunk finishes the stream (replay guard recorded). Any refusal deletes
  the spool, so a later chunk cannot complete a refused stream;
* the manifest mod, given a header, loads the finished stream's entries from the
  node's own spool (:func:`load_stream`) and re-checks every consent window at the
  node's clock before any row is read.

The node's state lives on disk because each message may run in another process
(simulation actors, ``subprocess`` isolation). The spool holds only lines this node
verified itself, so it is trusted as the node's own record.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Error, Message, RecordDict

from consent import (
    DEFAULT_CLOCK_SKEW,
    CohortManifest,
    ManifestRejected,
    ManifestStream,
    StreamVerifier,
    open_stream,
    parse_entry_table,
)

from ._keys import (
    ACTION_MANIFEST,
    ERR,
    JOB_KEY,
    KEY_JOB_ID,
    KEY_MANIFEST,
    KEY_MANIFEST_CHUNKS,
    KEY_MANIFEST_HEADER,
    KEY_ROUND,
    MANIFEST_ACK_KEY,
)
from ._node import NodeConfig

log = logging.getLogger("fedgate.node")

__all__ = [
    "CHUNKS_PER_MESSAGE",
    "chunk_content",
    "send_stream",
    "send_streams",
    "MAX_CHUNKS_IN_FLIGHT",
    "receive_chunks",
    "load_stream",
    "SPOOL_DIR",
    "DEFAULT_STREAM_ABOVE",
    "STREAM_ABOVE_KEY",
    "stream_above",
    "with_header",
]

CHUNKS_PER_MESSAGE = 16
"""Chunks per ``query.manifest`` message: 65,536 entries (≈ 12 MB) with the default size."""

SPOOL_DIR = "manifest-streams"


def chunk_content(stream: ManifestStream, start: int, *, job_id: str, round: int) -> RecordDict:
    """The content of the ``query.manifest`` message with the chunks from ``start`` on.

    It holds the signed header and up to :data:`CHUNKS_PER_MESSAGE` chunks, read
    from the stream's spool now.
    """
    stop = min(start + CHUNKS_PER_MESSAGE, stream.chunks)
    record = ConfigRecord(
        {
            KEY_JOB_ID: job_id,
            KEY_ROUND: round,
            KEY_MANIFEST_HEADER: stream.header,
            KEY_MANIFEST_CHUNKS: [stream.chunk(i) for i in range(start, stop)],
        }
    )
    return RecordDict({JOB_KEY: record})


def send_stream(
    send: Callable[[list[Message]], list[Message]],
    stream: ManifestStream,
    *,
    node_id: int,
    job_id: str,
    round: int,
) -> str | None:
    """Send every chunk of ``stream`` to one node (:func:`send_streams` with one node).

    Returns
    -------
    str | None
        ``None`` when the node acknowledged the whole stream, else the reason it did not.
    """
    return send_streams(send, {node_id: stream}, job_id=job_id, round=round)[node_id]


MAX_CHUNKS_IN_FLIGHT = 8 * CHUNKS_PER_MESSAGE
"""Chunks sent and not yet acknowledged, over all nodes (128 ≈ 96 MB of entry lines at the
default chunk size): the gateway's memory bound while it streams a round's manifests."""


def send_streams(
    send: Callable[[list[Message]], list[Message]],
    streams: Mapping[int, ManifestStream],
    *,
    job_id: str,
    round: int,
    max_in_flight: int = MAX_CHUNKS_IN_FLIGHT,
) -> dict[int, str | None]:
    """Send every node its own stream, the nodes side by side, each message acknowledged.

    The chunks go in waves: each wave sends the next ``query.manifest`` message of
    every node that still has chunks to receive (at most ``max_in_flight //
    CHUNKS_PER_MESSAGE`` nodes per wave, taken in turn) in one ``send`` call and waits
    for every reply. A node therefore has at most one message in flight, so its chunks
    arrive in order (the node refuses any other order, ``CHUNK_ORDER``), and the
    gateway holds at most ``max_in_flight`` chunks at once whatever the number of
    nodes — a round costs ``⌈chunks / CHUNKS_PER_MESSAGE⌉`` round trips of the largest
    stream rather than their sum over nodes. A node that refuses or does not answer a
    message gets no further chunks (its stream is refused as a whole); the others go on.
    An empty cohort still sends one message (no chunks), which finishes the stream.

    Parameters
    ----------
    send : Callable[[list[Message]], list[Message]]
        Sends messages and returns the replies (the job's ``grid.send_and_receive``).
    streams : Mapping[int, ManifestStream]
        Node id → that node's stream.
    max_in_flight : int, default ``MAX_CHUNKS_IN_FLIGHT`` (128)
        Chunks in unacknowledged messages at once; at least ``CHUNKS_PER_MESSAGE``.

    Returns
    -------
    dict[int, str | None]
        Node id → ``None`` when the node acknowledged its whole stream, else the reason
        it did not.
    """
    if max_in_flight < CHUNKS_PER_MESSAGE:
        raise ValueError(
            f"max_in_flight must be >= CHUNKS_PER_MESSAGE ({CHUNKS_PER_MESSAGE}), "
            f"got {max_in_flight}"
        )
    per_wave = max_in_flight // CHUNKS_PER_MESSAGE
    outcome: dict[int, str | None] = {}
    next_start = {node_id: 0 for node_id in streams}  # the next chunk each node is owed
    while next_start:
        wave = list(next_start)[:per_wave]
        msgs = [
            Message(
                chunk_content(streams[node_id], next_start[node_id], job_id=job_id, round=round),
                dst_node_id=node_id,
                message_type=f"query.{ACTION_MANIFEST}",
            )
            for node_id in wave
        ]
        replies = {r.metadata.src_node_id: r for r in send(msgs)}
        del msgs  # the wave's chunks: only ``max_in_flight`` are ever held
        for node_id in wave:
            start = next_start.pop(node_id)
            reply = replies.get(node_id)
            if reply is None:
                outcome[node_id] = "no reply to a manifest chunk message"
            elif reply.has_error():
                outcome[node_id] = f"[{reply.error.code}] {reply.error.reason}"
            elif start + CHUNKS_PER_MESSAGE < streams[node_id].chunks:
                next_start[node_id] = start + CHUNKS_PER_MESSAGE  # to the back: nodes in turn
            else:
                outcome[node_id] = None
    return outcome


DEFAULT_STREAM_ABOVE = 1 << 16
"""Cohorts larger than this are streamed (run-config ``manifest-stream-above``); smaller
ones travel whole inside the work message, which saves a round trip per node and round."""

STREAM_ABOVE_KEY = "manifest-stream-above"


def stream_above(run_config: Mapping[str, Any]) -> int:
    """The run config's ``manifest-stream-above`` (default :data:`DEFAULT_STREAM_ABOVE`)."""
    value = int(run_config.get(STREAM_ABOVE_KEY, DEFAULT_STREAM_ABOVE))
    if value < 0:
        raise ValueError(f"{STREAM_ABOVE_KEY} must be >= 0, got {value}")
    return value


def with_header(record: ConfigRecord, header: bytes) -> ConfigRecord:
    """A job record whose whole manifest is replaced by a streamed manifest's header."""
    record.pop(KEY_MANIFEST, None)
    record[KEY_MANIFEST_HEADER] = header
    return record


# --- the node's side -----------------------------------------------------------------------


def _spool(node: NodeConfig, digest: str) -> tuple[Path, Path]:
    d = node.state_dir / SPOOL_DIR
    return d / f"{digest}.lines", d / f"{digest}.json"


def _drop(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _open(node: NodeConfig, header: bytes, now: datetime) -> StreamVerifier:
    return open_stream(
        header,
        gateway_key=node.gateway_public_key(),
        data_provider=node.isv_id,
        now=now,
        replay_guard=node.replay_guard(),
        max_skew=DEFAULT_CLOCK_SKEW,
    )


def receive_chunks(msg: Message, node: NodeConfig, now: datetime) -> Message:
    """Verify and spool the chunks of one ``query.manifest`` message; reply with a count.

    Refusals come back as ``MANIFEST_REJECTED`` error replies with the consent code.
    """
    cfg = msg.content.config_records.get(JOB_KEY)
    header = cfg.get(KEY_MANIFEST_HEADER) if cfg is not None else None
    chunks = cfg.get(KEY_MANIFEST_CHUNKS) if cfg is not None else None
    if cfg is None or set(cfg.keys()) != {KEY_JOB_ID, KEY_ROUND, KEY_MANIFEST_HEADER,
                                          KEY_MANIFEST_CHUNKS}:  # fmt: skip
        return _refusal(msg, ERR.MANIFEST_MISSING, "a manifest message carries a header and chunks")
    if not isinstance(header, bytes) or not isinstance(chunks, list):
        return _refusal(msg, ERR.MANIFEST_MISSING, "manifest header and chunks must be bytes")
    with node.state_lock("manifests"):
        try:
            verifier = _open(node, header, now)
        except ManifestRejected as exc:
            return _refusal(msg, ERR.MANIFEST_REJECTED, f"{exc.code}: {exc}")
        if (
            cfg.get(KEY_JOB_ID) != verifier.manifest.job_id
            or cfg.get(KEY_ROUND) != verifier.manifest.round
        ):
            return _refusal(msg, ERR.MANIFEST_MISMATCH, "message and manifest name other rounds")
        lines_path, state_path = _spool(node, verifier.digest)
        state = _read_state(state_path)
        if state.get("done"):
            return _ack(msg, verifier.chunks)  # a re-delivery of a finished stream
        verifier.resume(int(state.get("accepted", 0)), str(state.get("last", "")))
        lines_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(lines_path, "ab") as out:
                out.truncate(int(state.get("size", 0)))  # drop what a crash left half-written
                for chunk in chunks:
                    if not isinstance(chunk, bytes):
                        raise ManifestRejected("a manifest chunk must be bytes", code="MALFORMED")
                    verifier.accept(chunk)  # raises before anything of this chunk is kept
                    body = chunk.partition(b"\n")[2]
                    out.write((b"\n" if out.tell() else b"") + body)
            done = verifier.accepted == verifier.chunks
            if done:
                verifier.finish()  # CHUNK_MISSING cannot happen here; the replay guard can refuse
        except ManifestRejected as exc:
            _drop(lines_path, state_path)
            return _refusal(msg, ERR.MANIFEST_REJECTED, f"{exc.code}: {exc}")
        _write_state(
            state_path,
            {"accepted": verifier.accepted, "last": verifier.last_merchant, "done": done,
             "size": lines_path.stat().st_size, "job_id": verifier.manifest.job_id,
             "round": verifier.manifest.round},
        )  # fmt: skip
        if done:
            _forget_older(node, verifier.manifest.job_id, verifier.manifest.round)
    return _ack(msg, verifier.accepted)


def load_stream(node: NodeConfig, header: bytes, now: datetime) -> CohortManifest:
    """The finished stream of ``header`` from the node's spool, every entry window re-checked.

    Raises
    ------
    ManifestRejected
        The header's own refusals, or ``CHUNK_MISSING`` when this node holds no
        finished stream for it.
    """
    verifier = _open(node, header, now)
    lines_path, state_path = _spool(node, verifier.digest)
    if not _read_state(state_path).get("done"):
        raise ManifestRejected(
            "no finished stream for this manifest at this node", code="CHUNK_MISSING"
        )
    # Columns, a batch of lines at a time: a node's 10^6 entries as objects would cost
    # ≈ 0.9 GB of this process (consent._entry_table).
    entries = (
        parse_entry_table(lines_path, verifier.count, now, DEFAULT_CLOCK_SKEW)
        if verifier.count
        else ()
    )
    return replace(verifier.manifest, entries=entries)


def _forget_older(node: NodeConfig, job_id: str, round: int) -> None:
    """Drop this job's spools of earlier rounds (the replay guard refuses those rounds now)."""
    for state_path in (node.state_dir / SPOOL_DIR).glob("*.json"):
        state = _read_state(state_path)
        if state.get("job_id") == job_id and int(state.get("round", round)) < round:
            _drop(state_path.with_suffix(".lines"), state_path)


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state), "utf-8")
    os.replace(tmp, path)


def _ack(msg: Message, accepted: int) -> Message:
    return Message(
        RecordDict({MANIFEST_ACK_KEY: ConfigRecord({"accepted": accepted})}), reply_to=msg
    )


def _refusal(msg: Message, code: int, reason: str) -> Message:
    log.warning("node refused manifest chunks: [%d] %s", code, reason)
    return Message(Error(code=code, reason=reason), reply_to=msg)
