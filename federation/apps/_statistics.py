"""Round 0 of a training job: the nodes' feature sketches merged into the job's encoder
(quantile bins, or standardisation read off the same DP sketches)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flwr.app import Message, RecordDict

from .._errors import JobFailed
from ..features import BinEncoder, QuantileSketch
from ..standardise import StandardEncoder, make_encoder
from ._keys import ACTION_SKETCH, JOB_KEY, SKETCH_KEY

if TYPE_CHECKING:
    from ._job import Job

__all__ = ["statistics"]


def statistics(job: Job) -> BinEncoder | StandardEncoder:
    """Ask every identified node for its sketch; merge them into the job's bin edges.

    Each sketch is taken under its own round-0 manifest and its receipt recorded;
    ``NO_STATISTICS`` when no node returned one.
    """
    spec = job.settings.spec
    msgs = []
    job.prepare_configs(0, job.nodes.values(), spec.purpose)  # streamed ones side by side
    for nid, isv in job.nodes.items():
        cfg, root, _ = job.job_config(0, isv, spec.purpose)
        job.stats_roots[isv] = root
        msgs.append(
            Message(RecordDict({JOB_KEY: cfg}), dst_node_id=nid,
                    message_type=f"query.{ACTION_SKETCH}")
        )
    sketches = []
    for reply in job.send(msgs):
        isv = job.nodes.get(reply.metadata.src_node_id, "?")
        if reply.has_error():
            note = job.check_refusal(
                reply.error.reason, isv, 0, f"query.{ACTION_SKETCH}", job.stats_roots[isv]
            )
            job.failures.append(
                f"sketch@{isv}: [{reply.error.code}] {reply.error.reason}"
                + (f" ({note})" if note else "")
            )
            continue
        problem = job.record_reply_receipt(
            reply, isv, 0, f"query.{ACTION_SKETCH}", job.stats_roots[isv]
        )
        if problem:
            job.failures.append(f"sketch@{isv}: RECEIPT_INVALID: {problem}")
            continue
        arrays = reply.content.array_records[SKETCH_KEY]
        sketches.append(QuantileSketch.from_arrays({k: v.numpy() for k, v in arrays.items()}))
    if not sketches:
        raise JobFailed("no node returned a sketch", code="NO_STATISTICS", reasons=job.failures)
    return make_encoder(QuantileSketch.merge(sketches), scaling=spec.scaling, n_bins=spec.n_bins)
