"""A signals job: every node's coarse ERP signals under manifests for the kind's purpose.

``mode = "signals"``: after identification, each node gets one ``query.signals``
message with a freshly signed manifest for the kind's purpose and categories
(:data:`federation.signals.SIGNAL_PURPOSE`, :data:`~federation.signals.SIGNAL_CATEGORIES`),
the kind, the ``as_of`` day and the ``since`` days of that node's own manifest
merchants. The job record carries nothing else: no model, no rounding (the node's
policy decides it). Replies are handled as scoring's are: a node's signed refusal
is verified and ledgered (``refusal``), every receipt verified and ledgered
(``data.used``, ε 0), and the released values written to :data:`SIGNALS_FILE`
as ``merchant_id,isv_id,signal,value`` (changes as decimals, ``revenue_3m`` as
whole fen). A manifest merchant the node left out (no two snapshots in the
window, a zero base) is counted in ``signals_missing``.
"""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import ConfigRecord, Message, RecordDict

from .._errors import FederationError
from ..signals import SIGNAL_NAMES, SIGNAL_PURPOSE
from ._identify import identify
from ._keys import (
    ACTION_SIGNALS,
    JOB_KEY,
    KEY_JOB_ID,
    KEY_MANIFEST,
    KEY_MANIFEST_HEADER,
    KEY_MERCHANT_IDS,
    KEY_ROUND,
    KEY_SIGNAL_AS_OF,
    KEY_SIGNAL_KIND,
    KEY_SIGNAL_SINCE,
    KEY_SINCE_DATES,
    KEY_SINCE_IDS,
    SIGNAL_IDS_KEY,
    SIGNALS_KEY,
)
from ._outputs import SIGNALS_FILE

if TYPE_CHECKING:
    from ._job import Job

__all__ = ["signals", "read_since_file", "SIGNALS_COLUMNS"]

SIGNALS_COLUMNS = ("merchant_id", "isv_id", "signal", "value")
"""The columns of :data:`SIGNALS_FILE`, in order."""


def read_since_file(path: Path) -> dict[str, date]:
    """``merchant_id → since`` from a CSV with those two columns (``BAD_CONFIG`` if bad)."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"merchant_id", "since"} <= set(reader.fieldnames):
                raise ValueError("needs the columns merchant_id,since")
            return {str(r["merchant_id"]): date.fromisoformat(r["since"]) for r in reader}
    except (OSError, ValueError, TypeError) as exc:
        raise FederationError(f"signal-since-file {path}: {exc}", code="BAD_CONFIG") from exc


def _request(job: Job, cfg: ConfigRecord, isv: str, since: dict[str, date]) -> ConfigRecord:
    """The node's record: job id, round, the signed manifest (or its header), the request."""
    s = job.settings
    out = ConfigRecord({KEY_JOB_ID: cfg[KEY_JOB_ID], KEY_ROUND: cfg[KEY_ROUND]})
    for key in (KEY_MANIFEST, KEY_MANIFEST_HEADER):
        if key in cfg:
            out[key] = cfg[key]
    members = [m for m in job.manifest_members.pop((0, isv), []) if m in since]
    as_of = s.signal_as_of or datetime.now(UTC).date()
    out[KEY_SIGNAL_KIND] = s.signal_kind
    out[KEY_SIGNAL_AS_OF] = as_of.isoformat()
    out[KEY_SIGNAL_SINCE] = s.signal_since.isoformat() if s.signal_since else ""
    out[KEY_SINCE_IDS] = members
    out[KEY_SINCE_DATES] = [since[m].isoformat() for m in members]
    return out


def _value(name: str, v: Any) -> str:
    """A released value as text: whole fen for ``revenue_3m``, else the decimal's repr."""
    return str(int(v)) if name == "revenue_3m" else repr(round(float(v), 10))


def signals(job: Job) -> dict[str, Any]:
    """Ask every node for the ``signal-kind`` release; write :data:`SIGNALS_FILE`."""
    s = job.settings
    purpose = SIGNAL_PURPOSE[s.signal_kind]
    since = read_since_file(s.signal_since_file) if s.signal_since_file else {}
    identify(job)
    action = f"query.{ACTION_SIGNALS}"
    msgs, roots, sizes = [], {}, {}
    job.prepare_configs(0, job.nodes.values(), purpose)  # streamed ones side by side
    for nid, isv in job.nodes.items():
        cfg, root, count = job.job_config(0, isv, purpose)
        roots[isv], sizes[isv] = root, count
        content = RecordDict({JOB_KEY: _request(job, cfg, isv, since)})
        msgs.append(Message(content, dst_node_id=nid, message_type=action))
    rows: list[tuple[str, str, str, str]] = []
    released: dict[str, int] = {}
    for reply in job.send(msgs):
        isv = job.nodes.get(reply.metadata.src_node_id, "?")
        if reply.has_error():
            note = job.check_refusal(reply.error.reason or "", isv, 0, action, roots[isv])
            job.failures.append(
                f"signals@{isv}: [{reply.error.code}] {reply.error.reason}"
                + (f" ({note})" if note else "")
            )
            continue
        problem = job.record_reply_receipt(reply, isv, 0, action, roots[isv])
        if problem:
            job.failures.append(f"signals@{isv}: RECEIPT_INVALID: {problem}")
            continue
        ids = [str(m) for m in reply.content.config_records[SIGNAL_IDS_KEY][KEY_MERCHANT_IDS]]  # type: ignore[union-attr]
        arrays = reply.content.array_records[SIGNALS_KEY]
        names = SIGNAL_NAMES[s.signal_kind]
        if list(arrays.keys()) != list(names) or any(
            arrays[n].shape != (len(ids),) for n in names
        ):
            job.failures.append(f"signals@{isv}: BAD_REPLY: arrays {list(arrays.keys())}")
            continue
        values = {n: arrays[n].numpy().tolist() for n in names}
        for i, m in enumerate(ids):
            rows.extend((m, isv, n, _value(n, values[n][i])) for n in names)
        released[isv] = len(ids)
    s.out_dir.mkdir(parents=True, exist_ok=True)
    path = s.out_dir / SIGNALS_FILE
    rows.sort()
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(SIGNALS_COLUMNS)
        writer.writerows(rows)
    missing = {isv: sizes[isv] - n for isv, n in released.items()}
    return {
        "signals_path": str(path),
        "signal_kind": s.signal_kind,
        "n_signals": len(rows),
        "signals_released": released,
        "signals_missing": missing,
    }
