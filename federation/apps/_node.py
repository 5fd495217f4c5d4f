"""The ISV node's own configuration and the one place where it reads ERP rows.

:func:`load_cohort` is the only reader of the node's ERP table in the apps. It
takes a *verified* manifest and returns only that manifest's merchants, only
their rows inside each entry's consented data range, only the consented
categories' columns. It reads through the node's connector
(:func:`federation.data.make_connector`: CSV, Parquet or a SQL table, with an
optional TOML column mapping), which pushes the manifest filter down — a
pyarrow filter on merchant ids and date bounds for Parquet, ``WHERE merchant IN
(…) AND as_of …`` in chunks for SQL, a chunked parse that keeps only selected
rows for CSV — before any sampling, split or statistic.

Node state (replay guard, privacy ledger) is shared by every job that runs on
the node, possibly from several processes at once: each read-modify-write of it
holds an exclusive ``flock`` on a file next to it (:meth:`NodeConfig.state_lock`).
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from consent import CohortManifest, EntryTable, ManifestEntry, ManifestReplayGuard

from .._errors import DataError
from ..data import Connector, RowSelection, load_mapping, make_connector
from ..node import ApprovalRegister, ModelRegister, NodePolicy, load_policy
from ..schema import AS_OF, MERCHANT_ID, FieldSpec, job_features

__all__ = [
    "NodeConfig",
    "Cohort",
    "load_cohort",
    "label_vector",
    "manifest_merchant_ids",
    "NODE_CONFIG_KEYS",
    "OPTIONAL_NODE_CONFIG_KEYS",
    "SIM_NODES_KEY",
]

NODE_CONFIG_KEYS = ("isv-id", "erp-path", "node-key", "gateway-key", "state-dir")
"""Keys a SuperNode's ``--node-config`` must carry (deployment runtime); a ``sql``
connector needs ``erp-url`` and ``erp-table`` instead of ``erp-path``."""

OPTIONAL_NODE_CONFIG_KEYS = (
    "erp-connector", "erp-mapping", "erp-url", "erp-table", "node-policy"
)
"""``erp-connector``: ``csv``, ``parquet`` or ``sql`` (default: from ``erp-path``'s
suffix); ``erp-mapping``: a column-mapping TOML; ``erp-url``/``erp-table``: the
ISV database (SQLAlchemy URL) and table of a ``sql`` connector; ``node-policy``: the
ISV's node TOML whose ``[policy]`` table is the node's privacy policy
(:class:`federation.node.NodePolicy`; safe defaults without one)."""

SIM_NODES_KEY = "sim-nodes"
"""Run-config key: JSON file listing one node config per simulated partition."""



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
    erp_path : Path | None
        Parquet file or directory, or CSV file (``None`` for a ``sql`` connector).
    node_key : Path
        The node's Ed25519 private key (PEM) that signs receipts.
    gateway_key : Path
        The gateway's Ed25519 public key (PEM) that signs manifests.
    state_dir : Path
        Replay guard and privacy ledger live here.
    connector : str, default ""
        ``csv``, ``parquet`` or ``sql``; ``""`` infers csv/parquet from ``erp_path``.
    mapping : Path | None, default None
        Column-mapping TOML (ISV names and units → ERP schema). With one, the whole
        table must match it and values are scaled and typed; without one, columns
        are read by their schema names as stored.
    erp_url : str | None, default None
        SQLAlchemy URL of the ISV database (``sql``); hidden from ``repr``.
    erp_table : str | None, default None
        The ERP table (``sql``).
    policy : Path | None, default None
        The node TOML holding the ``[policy]`` table (node-config ``node-policy``);
        ``None``: :data:`federation.node.SAFE_DEFAULTS`.
    """

    isv_id: str
    erp_path: Path | None
    node_key: Path
    gateway_key: Path
    state_dir: Path
    connector: str = ""
    mapping: Path | None = None
    erp_url: str | None = field(default=None, repr=False)
    erp_table: str | None = None
    policy: Path | None = None

    def __post_init__(self) -> None:
        if self.connector not in ("", "csv", "parquet", "sql"):
            raise ValueError(f"connector must be csv, parquet or sql, got {self.connector!r}")
        if self.connector == "sql":
            if not self.erp_url or not self.erp_table:
                raise ValueError("a sql connector needs erp_url and erp_table")
        elif self.erp_path is None:
            raise ValueError("a file connector needs erp_path")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> NodeConfig:
        """Build from node-config keys (required and optional, see :data:`NODE_CONFIG_KEYS`)."""
        kind = str(cfg.get("erp-connector", ""))
        required = [k for k in NODE_CONFIG_KEYS if not (kind == "sql" and k == "erp-path")]
        if kind == "sql":
            required += ["erp-url", "erp-table"]
        missing = [k for k in required if k not in cfg]
        if missing:
            raise ValueError(f"node config lacks {', '.join(missing)}")

        def opt(key: str) -> str | None:
            value = cfg.get(key)
            return str(value) if value not in (None, "") else None

        erp_path = opt("erp-path")
        mapping = opt("erp-mapping")
        policy = opt("node-policy")
        return cls(
            isv_id=str(cfg["isv-id"]),
            erp_path=Path(erp_path) if erp_path else None,
            node_key=Path(str(cfg["node-key"])),
            gateway_key=Path(str(cfg["gateway-key"])),
            state_dir=Path(str(cfg["state-dir"])),
            connector=kind,
            mapping=Path(mapping) if mapping else None,
            erp_url=opt("erp-url"),
            erp_table=opt("erp-table"),
            policy=Path(policy) if policy else None,
        )

    def to_mapping(self) -> dict[str, str]:
        """The node-config mapping :meth:`from_mapping` reads (optional keys only when set)."""
        out = {
            "isv-id": self.isv_id,
            "node-key": str(self.node_key),
            "gateway-key": str(self.gateway_key),
            "state-dir": str(self.state_dir),
        }
        if self.erp_path is not None:
            out["erp-path"] = str(self.erp_path)
        for key, value in (
            ("erp-connector", self.connector),
            ("erp-mapping", str(self.mapping) if self.mapping else ""),
            ("erp-url", self.erp_url or ""),
            ("erp-table", self.erp_table or ""),
            ("node-policy", str(self.policy) if self.policy else ""),
        ):
            if value:
                out[key] = value
        return out

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

    def erp_connector(self) -> Connector:
        """The connector over the node's ERP table (``DataError`` if misconfigured)."""
        mapping = load_mapping(self.mapping) if self.mapping is not None else None
        return make_connector(
            self.connector, path=self.erp_path, url=self.erp_url, table=self.erp_table,
            mapping=mapping,
        )

    @contextmanager
    def state_lock(self, name: str) -> Iterator[None]:
        """Hold an exclusive ``flock`` on ``<state_dir>/<name>.lock`` (across processes)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / f"{name}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def replay_guard(self) -> ManifestReplayGuard:
        """A replay guard over the node's persisted (job, round) → root memory.

        Read fresh per message: simulated nodes may run in several worker processes,
        and several jobs may run at once. Build it and check a manifest while holding
        :meth:`state_lock` ``("manifests")``, so no process reads the file while
        another appends to it and no two accept conflicting roots.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return ManifestReplayGuard(self.state_dir / "manifests.jsonl")

    def node_policy(self) -> NodePolicy:
        """The node's privacy policy (``FederationError`` ``BAD_POLICY`` if unreadable)."""
        return load_policy(self.policy)

    def approvals(self, policy: NodePolicy, *, check_legacy: bool = True) -> ApprovalRegister:
        """The node's register of merchant approvals (countersigned with the node key).

        ``check_legacy=False`` only to import an earlier version's JSON-lines register
        (``fedgate node import-approvals``).
        """
        from ..receipts import hash_key

        path = Path(policy.approvals)
        return ApprovalRegister(
            path if path.is_absolute() else self.state_dir / path,
            self.signing_key(),
            hash_key(self.state_dir),
            check_legacy=check_legacy,
        )

    def model_register(self) -> ModelRegister:
        """Hashes of the global models and encoders this node received in training jobs."""
        return ModelRegister(self.state_dir / "models.jsonl")

    @property
    def privacy_ledger_path(self) -> Path:
        """Where the node's cumulative DP accounting lives (an SQLite file).

        An earlier version's ``privacy.json`` beside it is imported on first open
        (:class:`~federation.dp.PrivacyLedger`).
        """
        return self.state_dir / "privacy.sqlite"


@dataclass(frozen=True, slots=True)
class Cohort:
    """The manifest-filtered slice of the node's ERP table (latest row per merchant).

    ``frame`` holds :data:`MERCHANT_ID`, :data:`AS_OF` and exactly ``features``.
    ``labels`` maps merchant id → label for the selected entries that carry one.
    ``rows_read`` counts the rows the connector returned (every snapshot inside a
    merchant's consented range), before keeping the latest one per merchant.
    """

    frame: pd.DataFrame
    features: tuple[str, ...]
    labels: Mapping[str, int]
    rows_read: int

    @property
    def merchant_ids(self) -> list[str]:
        """Merchants present (sorted, once each); also every merchant any read row belonged to."""
        return sorted(self.frame[MERCHANT_ID].astype(str).unique())


def load_cohort(
    node: NodeConfig,
    manifest: CohortManifest,
    *,
    now: datetime,
    select: Callable[[ManifestEntry], bool] | None = None,
    extras: Sequence[FieldSpec] | None = None,
    fields: Sequence[str] | None = None,
    history: bool = False,
) -> Cohort:
    """Read exactly the rows a verified manifest allows (and the handler needs).

    Parameters
    ----------
    node : NodeConfig
    manifest : CohortManifest
        Already verified with :func:`consent.verify_manifest` for this node.
    now : datetime
        The node's clock; entries whose consent window does not cover it are dropped.
    select : Callable[[ManifestEntry], bool] | None, default None
        Narrow the read further to the entries a handler uses (training reads only
        its labelled training merchants); ``None`` reads every live entry.
    extras : Sequence[FieldSpec] | None, default None
        The job's extra fields (already checked against the node's mapping by the
        manifest mod); ``None`` takes them from the current verified request.
    fields : Sequence[str] | None, default None
        Read only these of the consented features (a signals query reads four);
        ``None`` reads every consented feature. A field the manifest's categories do
        not cover raises ``DataError`` (``FIELD_NOT_CONSENTED``).
    history : bool, default False
        Keep every snapshot inside each merchant's consented range (sorted by merchant
        and date) instead of only the latest one.

    Returns
    -------
    Cohort
        One row per merchant (every snapshot with ``history``) inside its consented
        data range.

    Raises
    ------
    DataError
        The connector is misconfigured or the table unreadable or invalid.
    """
    at = now.astimezone(UTC)
    # One pass that keeps only what the read needs: a manifest's entries may be a
    # node's 10^6 streamed ones (columns, rebuilt when iterated), never held as objects.
    ids: list[str] = []
    data_from: list[date] = []
    data_to: list[date] = []
    labels: dict[str, int] = {}
    for e in manifest.entries:
        if e.consent_start <= at < e.consent_expiry and (select is None or select(e)):
            ids.append(e.merchant_id)
            data_from.append(e.data_from)
            data_to.append(e.data_to)
            if e.label is not None:
                labels[e.merchant_id] = int(e.label)
    if extras is None:
        from ._request import _request  # the manifest mod's verified request, if bound

        req = _request.get()
        extras = req.extras if req is not None else ()
    features = tuple(job_features(manifest.categories, extras))
    if fields is not None:
        outside = [f for f in fields if f not in features]
        if outside:
            raise DataError(
                f"{len(outside)} field(s) outside the manifest's categories",
                code="FIELD_NOT_CONSENTED",
            )
        features = tuple(fields)
    selection = RowSelection(ids, data_from, data_to)
    del ids, data_from, data_to
    connector = node.erp_connector()
    frame = connector.read_selected(selection, features, coerce=connector.strict)
    rows_read = len(frame)
    # The latest snapshot per merchant within its consented range (vectorised).
    frame = frame.sort_values([MERCHANT_ID, AS_OF], kind="stable")
    if not history:
        frame = frame.drop_duplicates(MERCHANT_ID, keep="last")
    frame = frame.reset_index(drop=True)
    frame[MERCHANT_ID] = frame[MERCHANT_ID].astype(str)
    return Cohort(
        frame=frame[[MERCHANT_ID, AS_OF, *features]],
        features=features,
        labels=labels,
        rows_read=rows_read,
    )


def manifest_merchant_ids(manifest: CohortManifest) -> list[str]:
    """Every merchant the manifest lists, in its order.

    A streamed manifest's come straight from its id column (0.25 s for 10^6, where
    rebuilding the entries to read one field takes 2 s).
    """
    if isinstance(manifest.entries, EntryTable):
        return manifest.entries.merchant_ids()
    return [e.merchant_id for e in manifest.entries]


def label_vector(cohort: Cohort, frame: pd.DataFrame) -> np.ndarray:
    """Labels aligned with ``frame`` rows (float32); rows without a label must be removed first."""
    labels = frame[MERCHANT_ID].map(cohort.labels)
    if labels.isna().any():
        raise KeyError("label_vector: rows without a label")
    return np.asarray(labels.to_numpy(dtype=np.float32), dtype=np.float32)
