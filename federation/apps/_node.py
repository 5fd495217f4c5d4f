"""The ISV node's own configuration and the one place where it reads ERP rows.

:func:`load_cohort` is the only reader of the node's ERP table in the apps. It
takes a *verified* manifest and returns only that manifest's merchants, only
their rows inside each entry's consented data range, only the consented
categories' columns — the filter is applied while reading (a pyarrow filter
for Parquet), before any sampling, split or statistic.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from consent import CohortManifest, ManifestEntry, ManifestReplayGuard

from ..schema import AS_OF, MERCHANT_ID, erp_fields_for

__all__ = [
    "NodeConfig",
    "Cohort",
    "load_cohort",
    "is_holdout",
    "label_vector",
    "NODE_CONFIG_KEYS",
    "SIM_NODES_KEY",
]

NODE_CONFIG_KEYS = ("isv-id", "erp-path", "node-key", "gateway-key", "state-dir")
"""Keys a SuperNode's ``--node-config`` must carry (deployment runtime)."""

SIM_NODES_KEY = "sim-nodes"
"""Run-config key: JSON file listing one node config per simulated partition."""

HOLDOUT_BUCKETS = 5  # one merchant in five (by id hash) is held out for evaluation


def _private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def _public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Where one ISV node keeps its data, keys and state.

    Parameters
    ----------
    isv_id : str
        This node's data-provider id (what manifests must be addressed to).
    erp_path : Path
        Parquet file or directory, or CSV file, in the ERP schema.
    node_key : Path
        The node's Ed25519 private key (PEM) that signs receipts.
    gateway_key : Path
        The gateway's Ed25519 public key (PEM) that signs manifests.
    state_dir : Path
        Replay guard and privacy ledger live here.
    """

    isv_id: str
    erp_path: Path
    node_key: Path
    gateway_key: Path
    state_dir: Path

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> NodeConfig:
        """Build from node-config keys (:data:`NODE_CONFIG_KEYS`)."""
        missing = [k for k in NODE_CONFIG_KEYS if k not in cfg]
        if missing:
            raise ValueError(f"node config lacks {', '.join(missing)}")
        return cls(
            isv_id=str(cfg["isv-id"]),
            erp_path=Path(str(cfg["erp-path"])),
            node_key=Path(str(cfg["node-key"])),
            gateway_key=Path(str(cfg["gateway-key"])),
            state_dir=Path(str(cfg["state-dir"])),
        )

    @classmethod
    def from_context(
        cls, node_config: Mapping[str, Any], run_config: Mapping[str, Any]
    ) -> NodeConfig:
        """The node's config: its own node config, or (simulation) its partition's entry."""
        if "isv-id" in node_config:
            return cls.from_mapping(node_config)
        if SIM_NODES_KEY in run_config and "partition-id" in node_config:
            nodes = json.loads(Path(str(run_config[SIM_NODES_KEY])).read_text("utf-8"))
            return cls.from_mapping(nodes[int(node_config["partition-id"])])
        raise ValueError("no node identity: set node config 'isv-id' etc. (see NODE_CONFIG_KEYS)")

    def signing_key(self) -> Ed25519PrivateKey:
        """The node's receipt-signing key."""
        return _private_key(self.node_key)

    def gateway_public_key(self) -> Ed25519PublicKey:
        """The key manifests must be signed with."""
        return _public_key(self.gateway_key)

    def replay_guard(self) -> ManifestReplayGuard:
        """A replay guard over the node's persisted (job, round) → root memory.

        Read fresh per message: simulated nodes may run in several worker processes.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return ManifestReplayGuard(self.state_dir / "manifests.jsonl")

    @property
    def privacy_ledger_path(self) -> Path:
        """Where the node's cumulative DP accounting lives."""
        return self.state_dir / "privacy.json"


@dataclass(frozen=True, slots=True)
class Cohort:
    """The manifest-filtered slice of the node's ERP table (latest row per merchant).

    ``frame`` holds :data:`MERCHANT_ID`, :data:`AS_OF` and exactly ``features``.
    ``labels`` maps merchant id → label for entries that carry one.
    """

    frame: pd.DataFrame
    features: tuple[str, ...]
    labels: Mapping[str, int]
    rows_read: int

    @property
    def merchant_ids(self) -> list[str]:
        """Merchants present (sorted)."""
        return sorted(self.frame[MERCHANT_ID].astype(str))


def is_holdout(merchant_id: str) -> bool:
    """Deterministic evaluation split: a fixed fifth of merchants, by id hash."""
    return hashlib.sha256(merchant_id.encode()).digest()[0] % HOLDOUT_BUCKETS == 0


def _read_filtered(path: Path, ids: list[str], columns: list[str]) -> pd.DataFrame:
    if path.suffix.lower() == ".csv":
        # CSV has no predicate push-down: filter straight after parsing, before anything else.
        raw = pd.read_csv(path, usecols=columns, dtype={MERCHANT_ID: str})
        return raw[raw[MERCHANT_ID].isin(ids)].reset_index(drop=True)
    dataset = pads.dataset(path, format="parquet")
    table = dataset.to_table(columns=columns, filter=pads.field(MERCHANT_ID).isin(ids))
    return table.to_pandas()


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return pd.Timestamp(value).date()


def load_cohort(node: NodeConfig, manifest: CohortManifest, *, now: datetime) -> Cohort:
    """Read exactly the rows a verified manifest allows.

    Parameters
    ----------
    node : NodeConfig
    manifest : CohortManifest
        Already verified with :func:`consent.verify_manifest` for this node.
    now : datetime
        The node's clock; entries whose consent window does not cover it are dropped.

    Returns
    -------
    Cohort
        One row per merchant: its latest ERP snapshot inside its consented data range.
    """
    live: dict[str, ManifestEntry] = {
        e.merchant_id: e
        for e in manifest.entries
        if e.consent_start <= now.astimezone(UTC) < e.consent_expiry
    }
    features = tuple(erp_fields_for(manifest.categories))
    frame = _read_filtered(node.erp_path, sorted(live), [MERCHANT_ID, AS_OF, *features])
    rows_read = len(frame)
    if len(frame):
        frame[MERCHANT_ID] = frame[MERCHANT_ID].astype(str)
        as_of = frame[AS_OF].map(_as_date)
        lo = frame[MERCHANT_ID].map(lambda m: live[m].data_from)
        hi = frame[MERCHANT_ID].map(lambda m: live[m].data_to)
        frame = frame[(as_of >= lo) & (as_of <= hi)]
        # The latest snapshot per merchant within the consented range.
        frame = frame.assign(_d=frame[AS_OF].map(_as_date)).sort_values([MERCHANT_ID, "_d"])
        frame = frame.groupby(MERCHANT_ID, sort=True).tail(1).drop(columns="_d")
    frame = frame.reset_index(drop=True)
    labels = {m: int(e.label) for m, e in live.items() if e.label is not None}
    return Cohort(frame=frame, features=features, labels=labels, rows_read=rows_read)


def label_vector(cohort: Cohort, frame: pd.DataFrame) -> np.ndarray:
    """Labels aligned with ``frame`` rows (float32); rows without a label must be removed first."""
    return np.asarray([cohort.labels[m] for m in frame[MERCHANT_ID]], dtype=np.float32)
