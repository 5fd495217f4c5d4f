"""The platform's ServerApp: identify nodes, federated statistics, training rounds, scoring.

A training job (``mode = "train"``):

1. **identify** — each node signs a fresh nonce; only nodes whose signature
   verifies with a registered ISV key take part;
2. **statistics round** (round 0) — nodes return mergeable quantile sketches of
   their consented features; the merged sketch gives the bin edges;
3. **training rounds** 1..R — FedAvg or FedProx through :class:`ConsentedStrategy`;
   every node gets its own cohort manifest per round, rebuilt from live consent;
4. every reply's usage receipt is verified with that node's key and written to
   the ledger as ``data.used``; in the same transaction, the first verified
   receipt of each node and round counts one use of every consent in that
   round's manifest (``consent.record_uses``, one ``consent.uses`` entry), so a
   consent's frequency limit takes it out of later manifests;
5. the model is saved with its lineage (job, rounds, receipts, manifest roots, ε).

A scoring job (``mode = "score"``) loads a saved model and asks each node for
g-scores under ``credit_scoring`` manifests.

Run config keys (kebab-case) are read once in :func:`main` into :class:`ServerSettings`.
The cohort comes from consent's cohort check, which verifies every artefact's
signature with the consent manager's public key (``consent-key``, a PEM path).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from logging import INFO, WARNING
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx, Strategy
from sqlalchemy.orm import Session, sessionmaker

from consent import ConsentError, ManifestEntry, build_manifest, record_uses, sign_manifest
from ledger import append_entry

from .._errors import FederationError, JobFailed, ReceiptInvalid
from ..bestround import BestRound
from ..features import BinEncoder, QuantileSketch
from ..lifetime import PRIVACY_ACCOUNT_KEY, MerchantPrivacyAccount
from ..models import build_g_erp, get_weights
from ..receipts import verify_receipt
from ..schema import MERCHANT_ID, erp_fields_for
from ..specs import ModelSpec, spec_from_run_config, spec_to_run_config
from ._db import open_sessions
from ._keys import (
    ACTION_IDENTIFY,
    ACTION_SCORE,
    ACTION_SKETCH,
    ARRAYS_KEY,
    ENCODER_KEY,
    IDENTITY_KEY,
    JOB_KEY,
    KEY_ARCH,
    KEY_BATCH_SIZE,
    KEY_CATEGORIES,
    KEY_DP_DELTA,
    KEY_DP_EPSILON,
    KEY_DP_MAX_GRAD_NORM,
    KEY_EPOCHS,
    KEY_HIDDEN,
    KEY_HOLDOUT_BUCKETS,
    KEY_ISV_ID,
    KEY_JOB_ID,
    KEY_LIFETIME_EPSILON,
    KEY_LR,
    KEY_MANIFEST,
    KEY_MERCHANT_IDS,
    KEY_NONCE,
    KEY_PROXIMAL_MU,
    KEY_RECEIPT,
    KEY_ROUND,
    KEY_ROUNDS,
    KEY_SIGNATURE,
    KEY_SPEC,
    RECEIPT_KEY,
    SCORE_IDS_KEY,
    SCORES_KEY,
    SKETCH_KEY,
)
from ._strategy import ConsentedStrategy, RoundLog
from .client_app import identify_payload

__all__ = [
    "ServerSettings",
    "CohortSource",
    "make_server_app",
    "consent_cohort_source",
    "cohort_source_from_run_config",
    "load_public_key",
    "job_record",
    "ExpectedReceipt",
    "LabelLookup",
    "record_receipt",
    "DATA_USED",
    "app",
    "RESULT_FILE",
    "MODEL_FILE",
    "LINEAGE_FILE",
    "SCORES_FILE",
]

RESULT_FILE = "result.json"
MODEL_FILE = "model.npz"
LINEAGE_FILE = "lineage.json"
SCORES_FILE = "scores.csv"
DATA_USED = "data.used"
DEFAULT_MANIFEST_TTL = timedelta(minutes=15)
DEFAULT_TIMEOUT = 3600.0


class CohortSource(Protocol):
    """Where the platform learns which merchants may be used: the live consent state."""

    def entries(
        self,
        *,
        data_provider: str,
        data_consumer: str,
        purpose: str,
        categories: Sequence[str],
        at: datetime,
    ) -> list[ManifestEntry]:
        """Manifest entries (label unset) for every merchant whose consent allows this use."""
        ...


def consent_cohort_source(db_url: str, consent_key: Ed25519PublicKey) -> CohortSource:
    """The consent package's cohort check over the platform database.

    Parameters
    ----------
    db_url : str
        The platform database (consent state).
    consent_key : Ed25519PublicKey
        The consent manager's public key: every artefact's signature is verified,
        so a forged one is denied (``SIGNATURE_INVALID``) and never enters a manifest.
    """
    from consent import cohort_entries

    _, sessions = open_sessions(db_url)

    class _Source:
        def entries(self, **kw: Any) -> list[ManifestEntry]:
            with sessions() as s:
                return list(cohort_entries(s, consent_manager_key=consent_key, **kw))

    return _Source()


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; ``FederationError`` (``BAD_CONFIG``) otherwise."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise FederationError(f"cannot read public key {path}: {exc}", code="BAD_CONFIG") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise FederationError(f"{path} is not an Ed25519 public key", code="BAD_CONFIG")
    return key


def cohort_source_from_run_config(rc: Mapping[str, Any]) -> CohortSource:
    """:func:`consent_cohort_source` on ``db-url``, verifying with the ``consent-key`` PEM.

    Raises
    ------
    FederationError
        ``BAD_CONFIG`` when ``db-url`` or ``consent-key`` is missing or the key unreadable.
    """
    if not rc.get("db-url") or not rc.get("consent-key"):
        raise FederationError(
            "run config needs db-url and consent-key (the consent manager's public key PEM) "
            "to read the cohort from consent",
            code="BAD_CONFIG",
        )
    return consent_cohort_source(str(rc["db-url"]), load_public_key(Path(str(rc["consent-key"]))))


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """The ServerApp's configuration, read once from ``context.run_config``.

    Parameters
    ----------
    job_id : str
    mode : str
        ``"train"`` or ``"score"``.
    spec : ModelSpec
    db_url : str
        Platform database (consent state, ledger).
    gateway_key : Path
        The gateway's Ed25519 private key (PEM) that signs manifests.
    node_keys : Path
        JSON ``{isv_id: path to the node's public key PEM}``.
    data_consumer : str
    consent_key : Path | None, default None
        The consent manager's public key (PEM), run-config ``consent-key``; required
        when the cohort comes from consent (no custom :class:`CohortSource`). When
        set, each node's and round's consent uses are counted in the consent store.
    out_dir : Path
        Where the model, lineage, scores and ``result.json`` go.
    labels_path : Path | None
        Platform table (Parquet/CSV) with ``merchant_id`` and the spec's label (train mode).
    model_dir : Path | None
        A trained job's ``out_dir`` (score mode).
    manifest_ttl : timedelta, default 15 min
    seed : int, default 0
    timeout : float, default 3600
        Seconds to wait for replies per round (and for nodes to connect).
    min_nodes : int, default 1
        Nodes to wait for before the job starts.
    secagg : str, default "auto"
        Aggregate training updates with SecAgg+ (FedAvg or FedProx): ``"auto"`` does
        wherever three or more nodes join, ``"on"`` always, ``"off"`` never (run-config
        ``secagg``: true/false/auto).
    secagg_num_shares, secagg_threshold : float, default 0.0
        SecAgg+ shares and reconstruction threshold (Flower's meaning: a count above 1,
        else a fraction); ``0`` sizes both for the cohort (:func:`secagg_parameters`).
    privacy_account : Path | None, default None
        The platform's per-merchant lifetime ε account (run-config
        ``privacy-account``, :class:`~federation.lifetime.MerchantPrivacyAccount`).
        When set, each DP training manifest is charged to it before it is sent, and
        merchants the charge would push past their lifetime are left out.
    """

    job_id: str
    mode: str
    spec: ModelSpec
    db_url: str
    gateway_key: Path
    node_keys: Path
    data_consumer: str
    out_dir: Path
    consent_key: Path | None = None
    labels_path: Path | None = None
    model_dir: Path | None = None
    manifest_ttl: timedelta = DEFAULT_MANIFEST_TTL
    seed: int = 0
    timeout: float = DEFAULT_TIMEOUT
    min_nodes: int = 1
    secagg: str = "auto"
    secagg_num_shares: float = 0.0
    secagg_threshold: float = 0.0
    privacy_account: Path | None = None
    holdout_buckets: int = 5

    @classmethod
    def from_run_config(cls, rc: Mapping[str, Any]) -> ServerSettings:
        """Parse the run config (kebab-case keys)."""

        def opt_path(key: str) -> Path | None:
            v = str(rc.get(key, ""))
            return Path(v) if v else None

        mode = str(rc.get("mode", "train"))
        if mode not in ("train", "score"):
            raise FederationError(f"mode must be train or score, got {mode!r}", code="BAD_CONFIG")
        try:
            return cls(
                job_id=str(rc["job-id"]),
                mode=mode,
                spec=spec_from_run_config(rc),
                db_url=str(rc["db-url"]),
                gateway_key=Path(str(rc["gateway-key"])),
                node_keys=Path(str(rc["node-keys"])),
                data_consumer=str(rc["data-consumer"]),
                out_dir=Path(str(rc["out-dir"])),
                consent_key=opt_path("consent-key"),
                labels_path=opt_path("labels-path"),
                model_dir=opt_path("model-dir"),
                manifest_ttl=timedelta(seconds=float(rc.get("manifest-ttl-s", 900))),
                seed=int(rc.get("seed", 0)),
                timeout=float(rc.get("timeout-s", DEFAULT_TIMEOUT)),
                min_nodes=int(rc.get("min-nodes", 1)),
                secagg=_secagg_mode(rc.get("secagg", "auto")),
                secagg_num_shares=float(rc.get("secagg-num-shares", 0.0)),
                secagg_threshold=float(rc.get("secagg-threshold", 0.0)),
                privacy_account=opt_path(PRIVACY_ACCOUNT_KEY),
                holdout_buckets=int(rc.get(KEY_HOLDOUT_BUCKETS, 5)),
            )
        except KeyError as exc:
            raise FederationError(f"run config lacks {exc}", code="BAD_CONFIG") from None


def _secagg_mode(value: object) -> str:
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return "on"
    if text in ("0", "false", "no", "off"):
        return "off"
    if text == "auto":
        return "auto"
    raise FederationError(f"secagg must be true, false or auto, got {value!r}", code="BAD_CONFIG")


def secagg_parameters(n_nodes: int) -> tuple[int, int]:
    """SecAgg+ shares and reconstruction threshold sized for ``n_nodes``.

    Up to 10 nodes every node holds a share of every other's secrets (SecAgg); above,
    each shares with ``2·⌈log2 n⌉ + 1`` neighbours (SecAgg+, Bell et al. 2020). The
    threshold is ``⌈2/3⌉`` of the shares: more than half, so the server can never
    reconstruct both a node's mask key and its self-mask, and one dropout in three
    is survived.
    """
    import math

    shares = n_nodes if n_nodes <= 10 else min(n_nodes, 2 * math.ceil(math.log2(n_nodes)) + 1)
    return shares, max(2, math.ceil(2 * shares / 3))


def _load_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise FederationError(f"{path} is not an Ed25519 private key", code="BAD_CONFIG")
    return key


def _same_key(private: Ed25519PrivateKey, public_pem: Path) -> bool:
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    mine = private.public_key().public_bytes(*raw)
    return load_public_key(public_pem).public_bytes(*raw) == mine


def _load_node_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    out: dict[str, Ed25519PublicKey] = {}
    for isv, pem_path in json.loads(path.read_text("utf-8")).items():
        key = serialization.load_pem_public_key(Path(pem_path).read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise FederationError(f"node key of {isv} is not Ed25519", code="BAD_CONFIG")
        out[str(isv)] = key
    return out


_LABEL_BATCH = 1 << 16  # platform-table rows converted at a time


class LabelLookup:
    """Merchant id → training label, compact enough for millions of merchants.

    Sorted fixed-width UTF-8 ids (``numpy`` bytes) and one ``int8`` per label —
    about ``max id length + 1`` bytes per merchant, against ~100 B for a dict —
    looked up for a whole manifest at once with :func:`numpy.searchsorted`.

    Parameters
    ----------
    ids : numpy.ndarray
        Merchant ids as a ``numpy`` bytes (``S``) array.
    labels : numpy.ndarray
        0/1 labels aligned with ``ids``.
    """

    def __init__(self, ids: np.ndarray, labels: np.ndarray) -> None:
        order = np.argsort(ids, kind="stable")
        self._ids = ids[order]
        self._labels = labels[order].astype(np.int8)

    def __len__(self) -> int:
        return int(self._ids.size)

    @classmethod
    def from_table(cls, path: Path, label: str) -> LabelLookup:
        """Read ``merchant_id`` and ``label`` (rows without a label skipped), batch by batch."""
        ids: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        if path.suffix.lower() == ".csv":
            batches: Iterator[pd.DataFrame] = pd.read_csv(
                path, usecols=[MERCHANT_ID, label], dtype={MERCHANT_ID: str},
                chunksize=_LABEL_BATCH,
            )
            for chunk in batches:
                chunk = chunk.dropna(subset=[label])
                ids.append(np.char.encode(chunk[MERCHANT_ID].to_numpy(dtype=str), "utf-8"))
                labels.append(chunk[label].to_numpy().astype(np.int8))
        else:
            import pyarrow as pa
            import pyarrow.compute as pc
            import pyarrow.dataset as pads

            dataset = pads.dataset(path, format="parquet")
            for batch in dataset.to_batches(columns=[MERCHANT_ID, label], batch_size=_LABEL_BATCH):
                keep = pc.is_valid(batch.column(1))
                mids = pc.filter(batch.column(0), keep).cast(pa.string()).cast(pa.binary())
                ids.append(np.asarray(mids.to_numpy(zero_copy_only=False), dtype=np.bytes_))
                labels.append(
                    np.asarray(pc.filter(batch.column(1), keep).to_numpy(zero_copy_only=False))
                    .astype(np.int8)
                )
            pa.default_memory_pool().release_unused()  # the scan's buffers, not kept
        if not ids:
            return cls(np.empty(0, dtype="S1"), np.empty(0, dtype=np.int8))
        return cls(np.concatenate(ids), np.concatenate(labels))

    def lookup(self, merchant_ids: Sequence[str]) -> np.ndarray:
        """Labels aligned with ``merchant_ids``; ``-1`` where the platform has none."""
        if not merchant_ids or self._ids.size == 0:
            return np.full(len(merchant_ids), -1, dtype=np.int8)
        query = np.char.encode(np.asarray(merchant_ids, dtype=str), "utf-8")
        pos = np.searchsorted(self._ids, query)
        pos = np.minimum(pos, self._ids.size - 1)
        found = self._ids[pos] == query
        return np.where(found, self._labels[pos], np.int8(-1)).astype(np.int8)


def _arrays(values: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in values.items()})


def _weights_record(weights: Sequence[np.ndarray]) -> ArrayRecord:
    return ArrayRecord({str(i): Array(np.ascontiguousarray(w)) for i, w in enumerate(weights)})


@dataclass
class _Job:
    """One job's server-side state; :meth:`run` is the whole job."""

    settings: ServerSettings
    grid: Grid
    cohort: CohortSource
    on_round: Callable[[RoundLog], None] | None = None
    context: Context | None = None
    nodes: dict[int, str] = field(default_factory=dict)
    receipts: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    epsilon: dict[str, float] = field(default_factory=dict)
    stats_roots: dict[str, str] = field(default_factory=dict)
    count_uses: bool = False  # the cohort comes from consent: count each round's uses there
    # Consent ids of each (round, node) manifest whose use is still to be counted: kept
    # only when uses are counted, dropped once counted (or once the round is over).
    # (UTF-8 bytes in one numpy array: ~13 B per merchant instead of ~65 B as str objects)
    manifest_consents: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    uses_counted: set[tuple[int, str]] = field(default_factory=set)
    manifest_sizes: dict[tuple[int, str], int] = field(default_factory=dict)
    # How the updates were aggregated, from what actually ran (strategy, SecAgg+ evidence).
    aggregation: dict[str, Any] = field(default_factory=dict)
    best_round: int | None = None  # the saved model's round (None: the last, e.g. SecAgg+)

    def __post_init__(self) -> None:
        s = self.settings
        self.gateway_key = _load_private(s.gateway_key)
        if s.consent_key is not None and _same_key(self.gateway_key, s.consent_key):
            # The coordinator signs manifests; consents are signed by the consent manager.
            # One key for both would let the job coordinator mint the consents it needs.
            raise FederationError(
                "the consent manager's key must not be the job coordinator's (gateway) key",
                code="BAD_CONFIG",
            )
        self.node_keys = _load_node_keys(s.node_keys)
        self.engine, self.sessions = open_sessions(s.db_url)
        self.labels = LabelLookup(np.empty(0, dtype="S1"), np.empty(0, dtype=np.int8))
        if s.mode == "train":
            if s.labels_path is None:
                raise FederationError("train mode needs labels-path", code="BAD_CONFIG")
            self.labels = LabelLookup.from_table(s.labels_path, s.spec.label)

    # -- messages --------------------------------------------------------------------------
    def _send(self, messages: list[Message]) -> list[Message]:
        return list(self.grid.send_and_receive(messages, timeout=self.settings.timeout))

    def _wait_for_nodes(self) -> list[int]:
        # Nodes register with the SuperLink (or the simulation engine) concurrently with the
        # ServerApp's start: wait for the expected number, like Flower's own node sampling.
        deadline = time.monotonic() + self.settings.timeout
        while True:
            ids = list(self.grid.get_node_ids())
            if len(ids) >= self.settings.min_nodes or time.monotonic() > deadline:
                return ids
            time.sleep(0.2)

    def identify(self) -> None:
        """Map Flower node ids to ISV ids by a signed challenge."""
        msgs, nonces = [], {}
        for node_id in self._wait_for_nodes():
            nonce = secrets.token_bytes(32)
            nonces[node_id] = nonce
            content = RecordDict({JOB_KEY: ConfigRecord({KEY_NONCE: nonce})})
            msgs.append(
                Message(content, dst_node_id=node_id, message_type=f"query.{ACTION_IDENTIFY}")
            )
        for reply in self._send(msgs):
            nid = reply.metadata.src_node_id
            if reply.has_error():
                self.failures.append(
                    f"identify@node-{nid}: [{reply.error.code}] {reply.error.reason}"
                )
                continue
            ident = reply.content.config_records[IDENTITY_KEY]
            isv, sig = str(ident[KEY_ISV_ID]), ident[KEY_SIGNATURE]
            key = self.node_keys.get(isv)
            try:
                if key is None or not isinstance(sig, bytes):
                    raise InvalidSignature
                key.verify(sig, identify_payload(nonces[nid], isv))
            except InvalidSignature:
                self.failures.append(f"identify@node-{nid}: UNKNOWN_NODE: claims {isv!r}")
                continue
            if isv in self.nodes.values():
                self.failures.append(f"identify@node-{nid}: DUPLICATE_NODE: {isv!r} twice")
                continue
            self.nodes[nid] = isv
        log(INFO, "fedgate: identified nodes %s", sorted(self.nodes.values()))
        if not self.nodes:
            raise JobFailed("no node proved its identity", code="NO_NODES", reasons=self.failures)

    def job_config(
        self, server_round: int, isv: str, purpose: str
    ) -> tuple[ConfigRecord, str, int]:
        """The per-node job record: settings plus a freshly built, signed manifest."""
        s, spec = self.settings, self.settings.spec
        now = datetime.now(UTC)
        entries = self.cohort.entries(
            data_provider=isv,
            data_consumer=s.data_consumer,
            purpose=purpose,
            categories=spec.categories,
            at=now,
        )
        if purpose == "model_training" and server_round >= 1 and spec.dp is not None:
            entries = self._charge_lifetime(isv, entries)
        if purpose == "model_training":
            labels = self.labels.lookup([e.merchant_id for e in entries])
            # Relabel in place: each unlabelled entry is dropped as its copy replaces it,
            # so the cohort is never held twice.
            for i, lab in enumerate(labels.tolist()):
                entries[i] = replace(entries[i], label=None if lab < 0 else int(lab))
            del labels
        for key in [k for k in self.manifest_consents if k[0] < server_round]:
            del self.manifest_consents[key]  # an earlier round's uses that were never counted
        if self.count_uses:
            self.manifest_consents[(server_round, isv)] = np.char.encode(
                np.asarray([e.consent_id for e in entries], dtype=str), "utf-8"
            )
        self.manifest_sizes[(server_round, isv)] = len(entries)
        manifest = build_manifest(
            job_id=s.job_id,
            round=server_round,
            data_provider=isv,
            data_consumer=s.data_consumer,
            purpose=purpose,
            categories=spec.categories,
            entries=entries,
            issued_at=now,
            ttl=s.manifest_ttl,
        )
        cfg = job_record(
            spec=spec,
            job_id=s.job_id,
            round=server_round,
            manifest=sign_manifest(manifest, self.gateway_key),
            seed=s.seed,
        )
        cfg[KEY_HOLDOUT_BUCKETS] = s.holdout_buckets
        return cfg, manifest.root, len(entries)

    def _charge_lifetime(self, isv: str, entries: list[ManifestEntry]) -> list[ManifestEntry]:
        """Charge a DP training manifest to the platform account; drop who would overrun."""
        s = self.settings
        if s.privacy_account is None or s.spec.dp is None:
            return entries
        over = MerchantPrivacyAccount(s.privacy_account).charge(
            job_id=s.job_id,
            budget=s.spec.dp,
            isv=isv,
            merchant_ids=[e.merchant_id for e in entries],
        )
        if not over:
            return entries
        log(
            WARNING,
            "fedgate: %d merchant(s) of %s left out: lifetime ε spent across ISVs",
            len(over),
            isv,
        )
        out = set(over)
        return [e for e in entries if e.merchant_id not in out]

    # -- receipts --------------------------------------------------------------------------
    def check_token(
        self, token: bytes | None, isv: str, server_round: int, action: str, root: str
    ) -> str | None:
        """Verify a receipt token against the node's key and this request; ledger it."""
        if not isinstance(token, bytes):
            return "reply carries no receipt"
        expected = ExpectedReceipt(
            job_id=self.settings.job_id,
            round=server_round,
            data_provider=isv,
            action=action,
            manifest_root=root,
        )
        key = (server_round, isv)
        expected = replace(expected, manifest_merchants=self.manifest_sizes.get(key))
        # One use per node and round (train and evaluate share the round's manifest).
        held = self.manifest_consents.get(key)
        uses = [] if held is None or key in self.uses_counted else np.char.decode(held).tolist()
        try:
            body = record_receipt(self.sessions, token, self.node_keys[isv], expected, uses=uses)
        except ReceiptInvalid as exc:
            return f"{exc.code}: {exc}"
        except ConsentError as exc:  # uses not countable (e.g. OUT_OF_ORDER): nothing written
            return f"USES_NOT_RECORDED: {exc.code}: {exc}"
        if key in self.manifest_consents:
            self.uses_counted.add(key)
            del self.manifest_consents[key]  # counted: the ids are not needed any more
        self.receipts.append(body)
        if body["epsilon_spent"] > self.epsilon.get(isv, 0.0):
            self.epsilon[isv] = body["epsilon_spent"]
        return None

    def check_receipt(
        self, reply: Message, isv: str, server_round: int, action: str, root: str
    ) -> str | None:
        """:meth:`check_token` on the receipt record of a reply."""
        rec = reply.content.config_records.get(RECEIPT_KEY)
        token = rec.get(KEY_RECEIPT) if rec is not None else None
        return self.check_token(
            token if isinstance(token, bytes) else None, isv, server_round, action, root
        )

    # -- phases ----------------------------------------------------------------------------
    def statistics(self) -> BinEncoder:
        """Round 0: merge the nodes' sketches into bin edges."""
        spec = self.settings.spec
        msgs = []
        for nid, isv in self.nodes.items():
            cfg, root, _ = self.job_config(0, isv, spec.purpose)
            self.stats_roots[isv] = root
            msgs.append(
                Message(
                    RecordDict({JOB_KEY: cfg}),
                    dst_node_id=nid,
                    message_type=f"query.{ACTION_SKETCH}",
                )
            )
        sketches = []
        for reply in self._send(msgs):
            isv = self.nodes.get(reply.metadata.src_node_id, "?")
            if reply.has_error():
                self.failures.append(f"sketch@{isv}: [{reply.error.code}] {reply.error.reason}")
                continue
            problem = self.check_receipt(
                reply, isv, 0, f"query.{ACTION_SKETCH}", self.stats_roots[isv]
            )
            if problem:
                self.failures.append(f"sketch@{isv}: RECEIPT_INVALID: {problem}")
                continue
            arrays = reply.content.array_records[SKETCH_KEY]
            sketches.append(QuantileSketch.from_arrays({k: v.numpy() for k, v in arrays.items()}))
        if not sketches:
            raise JobFailed(
                "no node returned a sketch", code="NO_STATISTICS", reasons=self.failures
            )
        return BinEncoder(QuantileSketch.merge(sketches).bin_edges(spec.n_bins))

    def strategy(self) -> Strategy:
        """FedAvg or FedProx over exactly the identified nodes."""
        spec, n = self.settings.spec, len(self.nodes)
        common: dict[str, Any] = dict(
            fraction_train=1.0,
            fraction_evaluate=1.0,
            min_train_nodes=n,
            min_evaluate_nodes=n,
            min_available_nodes=n,
            arrayrecord_key=ARRAYS_KEY,
        )
        if spec.strategy == "fedprox":
            return FedProx(proximal_mu=spec.proximal_mu, **common)
        return FedAvg(**common)

    def train(self) -> dict[str, Any]:
        """Statistics, then the training rounds; returns the result document."""
        s, spec = self.settings, self.settings.spec
        self.identify()
        encoder = self.statistics()
        # Seeded so a job's starting point, and hence its result, is reproducible.
        with torch.random.fork_rng():
            torch.manual_seed(s.seed)
            model = build_g_erp(spec.arch, encoder.n_outputs, hidden=spec.hidden)
        initial = _weights_record(get_weights(model))
        roots: dict[tuple[int, str], str] = {}

        def manifest_for(server_round: int, isv: str) -> tuple[ConfigRecord, str, int]:
            cfg, root, count = self.job_config(server_round, isv, spec.purpose)
            roots[(server_round, isv)] = root
            return cfg, root, count

        def check(reply: Message, isv: str, server_round: int, action: str) -> str | None:
            return self.check_receipt(reply, isv, server_round, action, roots[(server_round, isv)])

        use_secagg = s.secagg == "on" or (s.secagg == "auto" and len(self.nodes) >= 3)
        if use_secagg:
            shares, threshold = secagg_parameters(len(self.nodes))
            final, rounds, _ = self._train_secagg(
                encoder,
                initial,
                manifest_for,
                roots,
                num_shares=s.secagg_num_shares or shares,
                threshold=s.secagg_threshold or threshold,
            )
            # Evidence the nodes signed, not the server's word: each node's train receipt
            # says whether its update left through SecAgg+'s mod.
            signed: dict[str, list[str]] = {}
            for rc in self.receipts:
                if rc["action"] == "train" and rc.get("aggregation") == "secagg+":
                    signed.setdefault(str(rc["round"]), []).append(rc["data_provider"])
            self.aggregation = {
                "strategy": spec.strategy,
                "secure": "secagg+",
                "num_shares": s.secagg_num_shares or shares,
                "reconstruction_threshold": s.secagg_threshold or threshold,
                "node_signed_rounds": {r: sorted(v) for r, v in sorted(signed.items())},
            }
            if spec.strategy == "fedprox":
                self.aggregation["proximal_mu"] = float(spec.proximal_mu)
            unsigned = [
                r for r in range(1, spec.rounds + 1)
                if sorted(signed.get(str(r), [])) != sorted(rounds.get(r, {}).get("train", {}))
            ]
            if unsigned:
                self.failures.append(
                    f"SECAGG_NOT_APPLIED: in rounds {unsigned} some node's signed receipt "
                    "does not say its update was masked"
                )
        else:
            inner = self.strategy()
            self.aggregation = {"strategy": "fedavg", "secure": "none"}
            if isinstance(inner, FedProx):
                self.aggregation = {
                    "strategy": "fedprox",
                    "proximal_mu": float(inner.proximal_mu),
                    "secure": "none",
                }
            wrapper = ConsentedStrategy(
                inner,
                nodes=self.nodes,
                manifest_for=manifest_for,
                check_receipt=check,
                encoder=_arrays(encoder.to_arrays()),
                on_round=self.on_round,
            )
            keeper = BestRound()  # the saved model is the best round on the nodes' hold-out
            result = wrapper.start(self.grid, initial, num_rounds=spec.rounds, timeout=s.timeout,
                                   evaluate_fn=keeper.capture)
            rounds = wrapper.as_dict()
            last = result.arrays if result.arrays is not None else initial
            final, self.best_round, _ = keeper.select(rounds, last)
        for r in rounds.values():
            self.failures.extend(f"round: {f}" for f in r["failures"])
        s.out_dir.mkdir(parents=True, exist_ok=True)
        np.savez(
            s.out_dir / MODEL_FILE,
            **{f"w{i}": w for i, w in enumerate(final.to_numpy_ndarrays())},
            **{f"enc::{k}": v for k, v in encoder.to_arrays().items()},
        )
        lineage = {
            "job_id": s.job_id,
            "spec": spec_to_run_config(spec),
            "rounds": spec.rounds,
            "nodes": sorted(self.nodes.values()),
            "statistics_manifest_roots": self.stats_roots,
            "manifest_roots": {str(r): v["manifest_roots"] for r, v in rounds.items()},
            "receipts": [{k: v for k, v in rc.items() if k != "receipt"} for rc in self.receipts],
            "epsilon": self.epsilon,
            "delta": spec.dp.delta if spec.dp else 0.0,
            "features": erp_fields_for(spec.categories),
            "aggregation": self.aggregation,
            "best_round": self.best_round,
        }
        (s.out_dir / LINEAGE_FILE).write_text(
            json.dumps(lineage, indent=2, sort_keys=True), "utf-8"
        )
        return {
            "rounds": {str(r): v for r, v in rounds.items()},
            "model_path": str(s.out_dir / MODEL_FILE),
            "best_round": self.best_round,
        }

    def _train_secagg(
        self,
        encoder: BinEncoder,
        initial: ArrayRecord,
        manifest_for: Callable[[int, str], tuple[ConfigRecord, str, int]],
        roots: dict[tuple[int, str], str],
        *,
        num_shares: float,
        threshold: float,
    ) -> tuple[ArrayRecord, dict[int, dict[str, Any]], list[int]]:
        """The training rounds under SecAgg+ (Flower's legacy workflow, see ``secagg``).

        FedProx aggregates like FedAvg; its proximal term is applied at each node
        (the job record carries ``proximal-mu``), so it runs under SecAgg+ unchanged.
        """
        from ._secagg import run_secagg_rounds

        s = self.settings
        if self.context is None:
            raise FederationError("SecAgg+ needs the ServerApp context", code="BAD_CONFIG")
        weights, logs, masked = run_secagg_rounds(
            self.grid,
            self.context,
            rounds=s.spec.rounds,
            initial=initial.to_numpy_ndarrays(),
            nodes=self.nodes,
            manifest_for=manifest_for,
            check_token=lambda tok, isv, rnd, act: self.check_token(
                tok, isv, rnd, act, roots[(rnd, isv)]
            ),
            encoder=encoder.to_arrays(),
            on_round=self.on_round,
            num_shares=num_shares,
            reconstruction_threshold=threshold,
            timeout=s.timeout,
        )
        rounds = {
            r: {
                "train": lg.train,
                "evaluate": lg.evaluate,
                "failures": lg.failures,
                "manifest_roots": lg.manifest_roots,
                "merchants": lg.merchants,
                "skipped": lg.skipped,
            }
            for r, lg in sorted(logs.items())
        }
        return _weights_record(weights), rounds, masked

    def score(self) -> dict[str, Any]:
        """Load a trained model and collect g-scores under credit_scoring manifests."""
        s = self.settings
        if s.model_dir is None:
            raise FederationError("score mode needs model-dir", code="BAD_CONFIG")
        self.identify()
        stored = np.load(s.model_dir / MODEL_FILE)
        weights = [
            stored[f"w{i}"] for i in range(sum(1 for k in stored.files if k.startswith("w")))
        ]
        encoder = _arrays({k[5:]: stored[k] for k in stored.files if k.startswith("enc::")})
        msgs, roots = [], {}
        for nid, isv in self.nodes.items():
            cfg, root, _ = self.job_config(0, isv, "credit_scoring")
            roots[isv] = root
            content = RecordDict(
                {JOB_KEY: cfg, ARRAYS_KEY: _weights_record(weights), ENCODER_KEY: encoder}
            )
            msgs.append(Message(content, dst_node_id=nid, message_type=f"query.{ACTION_SCORE}"))
        frames = []
        for reply in self._send(msgs):
            isv = self.nodes.get(reply.metadata.src_node_id, "?")
            if reply.has_error():
                self.failures.append(f"score@{isv}: [{reply.error.code}] {reply.error.reason}")
                continue
            problem = self.check_receipt(reply, isv, 0, f"query.{ACTION_SCORE}", roots[isv])
            if problem:
                self.failures.append(f"score@{isv}: RECEIPT_INVALID: {problem}")
                continue
            ids = reply.content.config_records[SCORE_IDS_KEY][KEY_MERCHANT_IDS]
            g = reply.content.array_records[SCORES_KEY]["g"].numpy()
            frames.append(pd.DataFrame({MERCHANT_ID: list(ids), "isv_id": isv, "g": g}))  # type: ignore[arg-type]
        s.out_dir.mkdir(parents=True, exist_ok=True)
        scores = pd.concat(frames) if frames else pd.DataFrame(columns=[MERCHANT_ID, "isv_id", "g"])
        scores.to_csv(s.out_dir / SCORES_FILE, index=False)
        return {"scores_path": str(s.out_dir / SCORES_FILE), "n_scores": len(scores)}

    def run(self) -> None:
        """The whole job; writes ``result.json`` whatever happens, raises on any failure."""
        s = self.settings
        doc: dict[str, Any] = {"job_id": s.job_id, "mode": s.mode, "status": "failed"}
        try:
            doc.update(self.train() if s.mode == "train" else self.score())
            doc["status"] = "failed" if self.failures else "succeeded"
        except Exception as exc:
            self.failures.append(f"SERVER_FAILED: {type(exc).__name__}: {exc}")
            raise
        finally:
            doc["failures"] = self.failures
            doc["epsilon"] = self.epsilon
            doc["receipts"] = self.receipts
            doc["nodes"] = sorted(self.nodes.values())
            doc["aggregation"] = self.aggregation
            s.out_dir.mkdir(parents=True, exist_ok=True)
            tmp = s.out_dir / f".{RESULT_FILE}.tmp"
            tmp.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str), "utf-8")
            os.replace(tmp, s.out_dir / RESULT_FILE)
            self.engine.dispose()
        if self.failures:
            log(WARNING, "fedgate: job %s failed: %s", s.job_id, self.failures)
            raise JobFailed(
                f"job {s.job_id} had {len(self.failures)} failure(s)", reasons=self.failures
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpectedReceipt:
    """What a receipt must say to count: the request it answers."""

    job_id: str
    round: int
    data_provider: str
    action: str
    manifest_root: str
    manifest_merchants: int | None = None  # entries of that manifest, when known


def record_receipt(
    sessions: sessionmaker[Session],
    token: bytes,
    public_key: Ed25519PublicKey,
    expected: ExpectedReceipt,
    *,
    uses: Sequence[str] = (),
) -> dict[str, Any]:
    """Verify a node's receipt and append it to the ledger as ``data.used`` (own transaction).

    Parameters
    ----------
    sessions : sessionmaker[Session]
    token : bytes
        The node's signed receipt.
    public_key : Ed25519PublicKey
        The node's key.
    expected : ExpectedReceipt
        The request the receipt must answer.
    uses : Sequence[str], default ()
        Consent ids of the request's manifest whose use this receipt proves; counted
        with :func:`consent.record_uses` in the same transaction as ``data.used``.

    Returns
    -------
    dict[str, Any]
        The ledger entry body plus its ``ledger_seq``.

    Raises
    ------
    ReceiptInvalid
        Bad signature or format (``RECEIPT_SIGNATURE`` / ``RECEIPT_MALFORMED``), or a
        receipt for another request (``RECEIPT_MISMATCH``); nothing is written.
    """
    receipt = verify_receipt(token, public_key)
    got = (
        receipt.job_id,
        receipt.round,
        receipt.data_provider,
        receipt.action,
        receipt.manifest_root,
    )
    want = (
        expected.job_id,
        expected.round,
        expected.data_provider,
        expected.action,
        expected.manifest_root,
    )
    if got != want:
        raise ReceiptInvalid(f"receipt is for {got}, expected {want}", code="RECEIPT_MISMATCH")
    # Used is a part of read, and read a part of the manifest (counts; the hashes are the
    # node's signed word for which merchants).
    limit = expected.manifest_merchants
    if (
        receipt.merchants_used > receipt.merchants_read
        or receipt.rows_used > receipt.rows_read
        or (limit is not None and receipt.merchants_read > limit)
    ):
        raise ReceiptInvalid(
            f"receipt used {receipt.merchants_used} merchants / {receipt.rows_used} rows of "
            f"{receipt.merchants_read} / {receipt.rows_read} read, manifest of {limit}",
            code="RECEIPT_MISMATCH",
        )
    body = {**receipt.to_body(), "receipt": token.decode("ascii")}
    with sessions() as session, session.begin():
        entry = append_entry(session, DATA_USED, body)
        if uses:
            record_uses(
                session,
                uses,
                at=datetime.now(UTC),
                job_id=receipt.job_id,
                round=receipt.round,
                data_provider=receipt.data_provider,
                manifest_root=receipt.manifest_root,
            )
    return {**body, "ledger_seq": entry.seq}


def job_record(
    *, spec: ModelSpec, job_id: str, round: int, manifest: bytes, seed: int = 0
) -> ConfigRecord:
    """The job record a node receives with every message: ids, signed manifest, settings.

    ``seed`` seeds only the platform's own initial weights: no seed is sent, a node
    draws its noise and sampling from its own CSPRNG.
    """
    del seed
    rc = spec_to_run_config(spec)
    return ConfigRecord(
        {
            KEY_JOB_ID: job_id,
            KEY_ROUND: round,
            KEY_ROUNDS: spec.rounds,
            KEY_MANIFEST: manifest,
            KEY_ARCH: spec.arch,
            KEY_HIDDEN: spec.hidden,
            KEY_EPOCHS: spec.local_epochs,
            KEY_BATCH_SIZE: spec.batch_size,
            KEY_LR: spec.lr,
            KEY_PROXIMAL_MU: spec.proximal_mu,
            KEY_CATEGORIES: ",".join(spec.categories),
            KEY_SPEC: spec.name,
            KEY_DP_EPSILON: float(rc["dp-epsilon"]),
            KEY_DP_DELTA: float(rc["dp-delta"]),
            KEY_DP_MAX_GRAD_NORM: float(rc["dp-max-grad-norm"]),
            KEY_LIFETIME_EPSILON: float(rc["dp-lifetime-epsilon"]),
        }
    )


def make_server_app(
    *,
    cohort_source: CohortSource | None = None,
    on_round: Callable[[RoundLog], None] | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> ServerApp:
    """A ServerApp; ``cohort_source`` defaults to consent's cohort check on ``db-url``.

    Parameters
    ----------
    cohort_source : CohortSource | None, default None
        ``None``: consent's cohort check on ``db-url`` with the ``consent-key``
        public key. Whenever the run config names a ``consent-key`` (the cohort is
        consent's, whichever source reads it), each node's and round's uses are
        counted in the consent store; a run config without one (a custom source
        over consents that are not stored: tests, benchmarks) counts none.
    on_round : Callable[[RoundLog], None] | None, default None
        Called in the server process after each training round (progress, tests).
    run_config : Mapping[str, Any] | None, default None
        Defaults under ``context.run_config`` (the simulation runtime's Python API
        has no run config of its own).
    """
    server = ServerApp()
    defaults = dict(run_config or {})

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        rc = {**defaults, **dict(context.run_config)}
        settings = ServerSettings.from_run_config(rc)
        source = cohort_source or cohort_source_from_run_config(rc)
        _Job(
            settings=settings,
            grid=grid,
            cohort=source,
            on_round=on_round,
            context=context,
            count_uses=settings.consent_key is not None,
        ).run()

    return server


app = make_server_app()
"""The ServerApp Flower loads (``federation.apps.server_app:app``)."""
