"""A scoring job: a trained model's g-scores from every node, under manifests for the job's
purpose (``credit_scoring`` at origination, ``post_loan_monitoring`` for open loans)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from flwr.app import Message, RecordDict

from .._errors import FederationError
from ..schema import MERCHANT_ID
from ._identify import identify
from ._keys import (
    ACTION_SCORE,
    ARRAYS_KEY,
    ENCODER_KEY,
    JOB_KEY,
    KEY_MERCHANT_IDS,
    SCORE_IDS_KEY,
    SCORES_KEY,
)
from ._outputs import MODEL_FILE, SCORES_FILE
from ._wire import arrays_record, weights_record

if TYPE_CHECKING:
    from ._job import Job

__all__ = ["score"]


def score(job: Job) -> dict[str, Any]:
    """Load a trained model and collect g-scores under manifests for ``score-purpose``."""
    s = job.settings
    if s.model_dir is None:
        raise FederationError("score mode needs model-dir", code="BAD_CONFIG")
    identify(job)
    stored = np.load(s.model_dir / MODEL_FILE)
    weights = [stored[f"w{i}"] for i in range(sum(1 for k in stored.files if k.startswith("w")))]
    encoder = arrays_record({k[5:]: stored[k] for k in stored.files if k.startswith("enc::")})
    msgs, roots = [], {}
    job.prepare_configs(0, job.nodes.values(), s.score_purpose)  # streamed ones side by side
    for nid, isv in job.nodes.items():
        cfg, root, _ = job.job_config(0, isv, s.score_purpose)
        roots[isv] = root
        content = RecordDict(
            {JOB_KEY: cfg, ARRAYS_KEY: weights_record(weights), ENCODER_KEY: encoder}
        )
        msgs.append(Message(content, dst_node_id=nid, message_type=f"query.{ACTION_SCORE}"))
    frames = []
    for reply in job.send(msgs):
        isv = job.nodes.get(reply.metadata.src_node_id, "?")
        if reply.has_error():
            note = job.check_refusal(
                reply.error.reason, isv, 0, f"query.{ACTION_SCORE}", roots[isv]
            )
            job.failures.append(
                f"score@{isv}: [{reply.error.code}] {reply.error.reason}"
                + (f" ({note})" if note else "")
            )
            continue
        problem = job.record_reply_receipt(reply, isv, 0, f"query.{ACTION_SCORE}", roots[isv])
        if problem:
            job.failures.append(f"score@{isv}: RECEIPT_INVALID: {problem}")
            continue
        ids = reply.content.config_records[SCORE_IDS_KEY][KEY_MERCHANT_IDS]
        g = reply.content.array_records[SCORES_KEY]["g"].numpy()
        frames.append(pd.DataFrame({MERCHANT_ID: list(ids), "isv_id": isv, "g": g}))  # type: ignore[arg-type]
    s.out_dir.mkdir(parents=True, exist_ok=True)
    scores = pd.concat(frames) if frames else pd.DataFrame(columns=[MERCHANT_ID, "isv_id", "g"])
    scores.to_csv(s.out_dir / SCORES_FILE, index=False)
    return {"scores_path": str(s.out_dir / SCORES_FILE), "n_scores": len(scores)}
