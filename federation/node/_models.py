"""The global models and encoders this node received in training jobs it joined.

Scoring returns one value per merchant, so with a model and encoder of the
platform's choosing it is a raw-value oracle. The node therefore keeps the
hashes of every (global model, encoder) pair that reached it in a training or
evaluation message of a job in which it trained, and scores only with one of
them (:meth:`ModelRegister.known`). The register is a JSON-lines file in the
node's state directory, appended under a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["ModelRegister", "weights_hash", "encoder_hash"]


def _arrays_hash(tag: bytes, arrays: Sequence[tuple[str, np.ndarray]]) -> str:
    h = hashlib.sha256(tag)
    for name, arr in arrays:
        a = np.ascontiguousarray(arr)
        h.update(f"\n{name}:{a.dtype.str}:{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def weights_hash(arch: str, weights: Sequence[np.ndarray]) -> str:
    """SHA-256 over the architecture and the weights (dtype, shape and bytes)."""
    named = [(str(i), w) for i, w in enumerate(weights)]
    return _arrays_hash(f"fedgate-model\n{arch}".encode(), named)


def encoder_hash(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over an encoder's arrays (names sorted)."""
    return _arrays_hash(b"fedgate-encoder", sorted(arrays.items()))


class ModelRegister:
    """Per job: the rounds the node trained and the model/encoder hashes it received.

    Parameters
    ----------
    path : Path
        The JSON-lines file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _lines(self) -> list[dict[str, object]]:
        if not self.path.exists():
            return []
        out = []
        for raw in self.path.read_text("utf-8").splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
        return out

    def record(self, *, job_id: str, action: str, model: str, encoder: str) -> None:
        """Note that a ``train`` or ``evaluate`` message of ``job_id`` carried this pair."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"job": job_id, "action": action, "model": model, "encoder": encoder})
        with open(self.path, "a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.write(line + "\n")
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def trained_jobs(self) -> set[str]:
        """Jobs in which this node trained at least once."""
        return {str(x["job"]) for x in self._lines() if x.get("action") == "train"}

    def known(self, model: str, encoder: str) -> bool:
        """Was this pair received in a job the node trained in?"""
        trained = self.trained_jobs()
        return any(
            x.get("model") == model and x.get("encoder") == encoder and str(x["job"]) in trained
            for x in self._lines()
        )

    def jobs_with(self, model: str) -> list[str]:
        """Jobs whose messages carried ``model`` (lineage)."""
        return sorted({str(x["job"]) for x in self._lines() if x.get("model") == model})
