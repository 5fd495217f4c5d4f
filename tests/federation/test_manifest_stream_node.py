"""Streamed manifests at the node: chunk messages through the real manifest mod, then the work.

The curious or faulty platform sends chunks that were tampered with, belong to another
manifest, come twice or out of order, or never arrive; the node refuses each, keeps
nothing of a refused stream, and no handler runs without the whole verified stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from consent import ManifestEntry, ManifestStream, Use, build_manifest, stream_manifest
from federation.apps import ERR, job_record, make_manifest_mod
from federation.apps import _stream as streaming
from federation.apps._keys import (
    ACTION_MANIFEST,
    JOB_KEY,
    KEY_MANIFEST,
    KEY_MANIFEST_CHUNKS,
    KEY_MANIFEST_HEADER,
    MANIFEST_ACK_KEY,
)
from federation.apps._request import current_request
from federation.specs import get_spec

from ._flworld import CONSUMER, World, incoming, make_world, node_context

CATS = ("margins", "cash_and_debt")
SPEC = replace(get_spec("pd-erp"), categories=CATS, batch_size=16)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One small world shared by this module's tests (each test uses its own job id)."""
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(autouse=True)
def small_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two chunks per message, so a cohort of 60 travels in several messages."""
    monkeypatch.setattr(streaming, "CHUNKS_PER_MESSAGE", 2)


def _entries(world: World, isv: str) -> list[ManifestEntry]:
    return sorted(
        world.cohort.entries(
            Use(data_provider=isv, data_consumer=CONSUMER, purpose="model_training",
                categories=CATS, at=datetime.now(UTC))
        ),
        key=attrgetter("merchant_id"),
    )  # fmt: skip


def _stream(
    world: World, job_id: str, *, round: int = 1, drop: int = 0, isv: str = "isv0"
) -> ManifestStream:
    return stream_manifest(
        job_id=job_id,
        round=round,
        data_provider=isv,
        data_consumer=CONSUMER,
        purpose="model_training",
        categories=CATS,
        entries=_entries(world, isv)[drop:],
        issued_at=datetime.now(UTC),
        ttl=timedelta(minutes=5),
        key=world.gateway_key,
        chunk_size=8,
    )


class _Node:
    """The node's ClientApp mod chain as far as the manifest mod, with a fake handler."""

    def __init__(self, world: World, isv: str = "isv0") -> None:
        self.ctx = node_context(world.node(isv))
        self.mod = make_manifest_mod()
        self.seen: list[tuple[ManifestEntry, ...]] = []

    def _handler(self, msg: Message, ctx: Context) -> Message:
        manifest = current_request().manifest
        assert manifest is not None
        self.seen.append(manifest.entries)
        return Message(RecordDict(), reply_to=msg)

    def send(self, msg: Message) -> Message:
        return self.mod(msg, self.ctx, self._handler)

    def chunks(self, stream: ManifestStream, job_id: str, round: int = 1) -> Iterator[Message]:
        for start in range(0, max(stream.chunks, 1), streaming.CHUNKS_PER_MESSAGE):
            content = streaming.chunk_content(stream, start, job_id=job_id, round=round)
            yield incoming(content, f"query.{ACTION_MANIFEST}")

    def work(self, stream: ManifestStream, job_id: str, round: int = 1) -> Message:
        cfg = job_record(spec=SPEC, job_id=job_id, round=round, manifest=b"")
        del cfg[KEY_MANIFEST]
        cfg[KEY_MANIFEST_HEADER] = stream.header
        return self.send(incoming(RecordDict({JOB_KEY: cfg}), "query.sketch"))


def _code(reply: Message) -> str:
    assert reply.has_error(), "expected a refusal"
    return reply.error.reason.split(":", 1)[0]


def test_streamed_manifest_reaches_the_handler_with_every_entry(world: World) -> None:
    """Acknowledged chunk messages, then a header-only request: the handler sees the cohort."""
    node = _Node(world)
    with _stream(world, "stream-ok") as stream:
        acks = [node.send(m) for m in node.chunks(stream, "stream-ok")]
        reply = node.work(stream, "stream-ok")
    whole = build_manifest(
        job_id="stream-ok", round=1, data_provider="isv0", data_consumer=CONSUMER,
        purpose="model_training", categories=CATS, entries=_entries(world, "isv0"),
        issued_at=datetime.now(UTC), ttl=timedelta(minutes=5),
    )  # fmt: skip

    assert len(acks) > 2 and not any(a.has_error() for a in acks)
    assert acks[-1].content.config_records[MANIFEST_ACK_KEY]["accepted"] == stream.chunks
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    assert node.seen == [whole.entries] and stream.root == whole.root


def test_tampered_chunk_is_refused_and_the_stream_is_dropped(world: World) -> None:
    """A changed entry fails its proof; the request then finds no stream at the node."""
    node = _Node(world)
    with _stream(world, "stream-tampered") as stream:
        messages = list(node.chunks(stream, "stream-tampered"))
        first = node.send(messages[0])
        cfg = messages[1].content.config_records[JOB_KEY]
        chunks = list(cfg[KEY_MANIFEST_CHUNKS])  # type: ignore[arg-type]
        chunks[0] = chunks[0].replace(b"2025-12-31", b"2026-12-31", 1)
        cfg[KEY_MANIFEST_CHUNKS] = chunks
        tampered = node.send(messages[1])
        rest = [node.send(m) for m in messages[2:]]
        work = node.work(stream, "stream-tampered")

    assert not first.has_error()
    assert tampered.error.code == ERR.MANIFEST_REJECTED and _code(tampered) == "ROOT_MISMATCH"
    assert rest and _code(rest[0]) == "CHUNK_ORDER"  # the spool was dropped: start again
    assert _code(work) == "CHUNK_MISSING" and node.seen == []


def test_chunk_of_another_manifest_is_refused(world: World) -> None:
    """Round 2's chunk inside round 1's stream message names another manifest."""
    node = _Node(world)
    with _stream(world, "stream-foreign") as one, _stream(world, "stream-foreign", drop=3) as two:
        msg = next(node.chunks(one, "stream-foreign"))
        cfg = msg.content.config_records[JOB_KEY]
        cfg[KEY_MANIFEST_CHUNKS] = [two.chunk(0), two.chunk(1)]
        reply = node.send(msg)

    assert _code(reply) == "CHUNK_FOREIGN"


def test_duplicated_and_reordered_chunk_messages_are_refused(world: World) -> None:
    """The same chunk message twice, or the second before the first, is refused."""
    for order in ([0, 0], [1, 0]):
        node = _Node(world)
        job = f"stream-order-{order[0]}{order[1]}"
        with _stream(world, job) as stream:
            messages = list(node.chunks(stream, job))
            replies = [node.send(messages[i]) for i in order]
            work = node.work(stream, job)

        refused = [r for r in replies if r.has_error()]
        assert len(refused) == 1 and _code(refused[0]) == "CHUNK_ORDER"
        assert _code(work) == "CHUNK_MISSING" and node.seen == []


def test_missing_chunks_leave_the_request_refused(world: World) -> None:
    """All but the last chunk message: no handler runs, whatever the request says."""
    node = _Node(world)
    with _stream(world, "stream-missing") as stream:
        messages = list(node.chunks(stream, "stream-missing"))
        acks = [node.send(m) for m in messages[:-1]]
        work = node.work(stream, "stream-missing")

    assert not any(a.has_error() for a in acks)
    assert work.error.code == ERR.MANIFEST_REJECTED and _code(work) == "CHUNK_MISSING"
    assert node.seen == []


def test_chunk_message_must_carry_only_chunks(world: World) -> None:
    """A chunk message with anything besides the job record (a model, say) is refused."""
    node = _Node(world)
    with _stream(world, "stream-extra") as stream:
        msg = next(node.chunks(stream, "stream-extra"))
        content = RecordDict(
            {JOB_KEY: msg.content.config_records[JOB_KEY], "extra": ConfigRecord({"x": 1})}
        )
        reply = node.send(incoming(content, f"query.{ACTION_MANIFEST}"))

    assert reply.error.code == ERR.MANIFEST_MISSING


def test_streams_go_to_the_nodes_side_by_side_within_the_bound(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``send_streams``: every wave carries the next message of each node still owed chunks,
    one unacknowledged message per node (so each node's chunks arrive in order), never more
    than ``max_in_flight`` chunks; a node that refuses gets nothing more, the others finish."""
    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)  # as a ServerApp process sets them
    nodes = {1: _Node(world, "isv0"), 2: _Node(world, "isv1"), 3: _Node(world, "isv2")}
    waves: list[list[tuple[int, int]]] = []  # per send call: (node id, chunks in its message)

    def send(messages: list[Message]) -> list[Message]:
        waves.append([(m.metadata.dst_node_id,
                       len(m.content.config_records[JOB_KEY][KEY_MANIFEST_CHUNKS]))
                      for m in messages])  # fmt: skip
        return [nodes[m.metadata.dst_node_id].send(
                    incoming(m.content, m.metadata.message_type,
                             dst_node_id=m.metadata.dst_node_id))
                for m in messages]  # fmt: skip

    job = "stream-side-by-side"
    with (
        _stream(world, job, isv="isv0") as s0,
        _stream(world, job, isv="isv1", drop=16) as s1,  # a shorter stream: fewer messages
        _stream(world, job, isv="isv0", drop=1) as foreign,  # isv0's, sent to isv2
    ):
        outcome = streaming.send_streams(
            send, {1: s0, 2: s1, 3: foreign}, job_id=job, round=1,
            max_in_flight=2 * streaming.CHUNKS_PER_MESSAGE,
        )  # fmt: skip
        work = [nodes[1].work(s0, job), nodes[2].work(s1, job)]

    per_node = {nid: sum(n for w in waves for i, n in w if i == nid) for nid in nodes}
    assert outcome[1] is None and outcome[2] is None
    assert outcome[3] is not None and outcome[3].startswith(f"[{ERR.MANIFEST_REJECTED}]")
    assert per_node[1] == s0.chunks and per_node[2] == s1.chunks
    assert per_node[3] == streaming.CHUNKS_PER_MESSAGE  # refused at once, sent nothing more
    assert all(len(w) <= 2 and len({i for i, _ in w}) == len(w) for w in waves)
    assert all(sum(n for _, n in w) <= 2 * streaming.CHUNKS_PER_MESSAGE for w in waves)
    assert any(len(w) == 2 for w in waves)  # nodes side by side, not one after another
    # as many waves as the longest stream needs plus one per bound-deferred message
    assert len(waves) < sum(-(-c // streaming.CHUNKS_PER_MESSAGE) for c in (s0.chunks, s1.chunks))
    assert not any(r.has_error() for r in work)
    assert [len(n.seen[0]) for n in (nodes[1], nodes[2])] == [s0.count, s1.count]


def test_send_streams_refuses_a_bound_below_one_message(world: World) -> None:
    """The in-flight bound must hold at least one message's chunks."""
    with pytest.raises(ValueError, match="max_in_flight"):
        streaming.send_streams(lambda m: [], {}, job_id="x", round=1, max_in_flight=1)


class _Grid:
    """A grid whose nodes are real manifest mods; records each ``send_and_receive`` call."""

    def __init__(self, nodes: dict[int, _Node]) -> None:
        self.nodes = nodes
        self.calls: list[list[int]] = []  # destination node ids per call

    def send_and_receive(self, messages: list[Message], timeout: float | None = None
                         ) -> list[Message]:  # fmt: skip
        self.calls.append([m.metadata.dst_node_id for m in messages])
        return [self.nodes[m.metadata.dst_node_id].send(
                    incoming(m.content, m.metadata.message_type,
                             dst_node_id=m.metadata.dst_node_id))
                for m in messages]  # fmt: skip


def test_job_streams_a_rounds_manifests_side_by_side(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Job.prepare_configs``: every node's stream of a round goes out in shared waves, then
    ``job_config`` hands each node its header-only record once, which its node accepts."""
    from federation.apps.server_app import Job, ServerSettings

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)
    isvs = ("isv0", "isv1", "isv2")
    grid = _Grid({i + 1: _Node(world, isv) for i, isv in enumerate(isvs)})
    rc = world.run_config(job_id="job-side-by-side", db_url=f"sqlite:///{tmp_path / 'p.db'}",
                          out="job-side-by-side", categories=",".join(CATS),
                          **{streaming.STREAM_ABOVE_KEY: 0})  # fmt: skip
    job = Job(settings=ServerSettings.from_run_config(rc), grid=grid,  # type: ignore[arg-type]
              cohort=world.cohort, nodes={i + 1: isv for i, isv in enumerate(isvs)})  # fmt: skip

    job.prepare_configs(1, isvs, "model_training")
    sent = list(grid.calls)
    configs = {isv: job.job_config(1, isv, "model_training") for isv in isvs}

    assert sent and all(sorted(c) == [1, 2, 3] for c in sent)  # every wave carries all three
    assert grid.calls == sent  # handed out what was prepared: nothing sent again
    for nid, isv in enumerate(isvs, start=1):
        cfg, root, count = configs[isv]
        assert KEY_MANIFEST not in cfg and isinstance(cfg[KEY_MANIFEST_HEADER], bytes)
        node = grid.nodes[nid]  # the work message finds the node's whole verified stream
        reply = node.send(incoming(RecordDict({JOB_KEY: cfg}), "query.sketch", dst_node_id=nid))
        assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
        assert len(node.seen[-1]) == count == len(_entries(world, isv)) and len(root) == 64
    job.job_config(1, "isv0", "model_training")  # not held any more: built and sent anew
    assert len(grid.calls) > len(sent) and set(grid.calls[-1]) == {1}
