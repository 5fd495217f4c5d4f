"""A tiny federated world for the Flower-app tests: keys, ERP tables, consents, messages.

Three ISVs with a few dozen merchants each; ERP rows whose margins and debt
drive a default label; a gateway key and one Ed25519 key per node on disk.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import Context, Message, Metadata, RecordDict
from sqlalchemy.orm import Session, sessionmaker

from consent import (
    CohortManifest,
    ManifestEntry,
    SignedArtefact,
    Use,
    build_manifest,
    sign_manifest,
)
from federation.apps._node import NodeConfig
from federation.node import SAFE_DEFAULTS, register_approvals
from federation.schema import AS_OF, ERP_FIELDS, LABEL, MERCHANT_ID

CONSUMER = "platform"


def _write_key(path: Path, key: Ed25519PrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_pub(path: Path, key: Ed25519PrivateKey) -> None:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@dataclass
class WorldCohort:
    """The live consent state of the world: entries per ISV, with revocation."""

    by_isv: dict[str, list[ManifestEntry]]
    revoked: set[str] = field(default_factory=set)
    scoring_ok: set[str] = field(default_factory=set)

    def entries(self, use: Use) -> list[ManifestEntry]:
        """Entries whose consent is live at ``use.at`` and not revoked."""
        at = use.at
        out = [
            e
            for e in self.by_isv.get(use.data_provider, [])
            if e.merchant_id not in self.revoked and e.consent_start <= at < e.consent_expiry
        ]
        if use.purpose == "credit_scoring":
            out = [e for e in out if e.merchant_id in self.scoring_ok]
        return out


@dataclass
class World:
    """Everything a test needs to run the apps."""

    root: Path
    gateway_key: Ed25519PrivateKey
    gateway_key_path: Path
    nodes: list[NodeConfig]
    node_keys_path: Path
    labels_path: Path
    cohort: WorldCohort
    erp: dict[str, pd.DataFrame]
    consent_key: Ed25519PrivateKey  # the consent manager's signing key
    consent_key_path: Path  # its public key (PEM), the run config's consent-key

    def node(self, isv: str) -> NodeConfig:
        """The node config of ``isv``."""
        return next(n for n in self.nodes if n.isv_id == isv)

    def run_config(
        self, *, job_id: str, db_url: str, out: str, **overrides: object
    ) -> dict[str, object]:
        """A training run config for this world."""
        cfg: dict[str, object] = {
            "job-id": job_id,
            "spec": "pd-erp",
            "mode": "train",
            "db-url": db_url,
            "gateway-key": str(self.gateway_key_path),
            "node-keys": str(self.node_keys_path),
            "consent-key": str(self.consent_key_path),
            "data-consumer": CONSUMER,
            "out-dir": str(self.root / out),
            "labels-path": str(self.labels_path),
            "privacy-account": str(self.root / "gateway" / "privacy-account.json"),
            "rounds": 2,
            "batch-size": 16,
            "lr": 0.1,
            "n-bins": 4,
        }
        cfg.update(overrides)
        return cfg


def _erp_frame(rng: np.random.Generator, ids: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    n = len(ids)
    health = rng.normal(size=n)
    data: dict[str, object] = {MERCHANT_ID: ids, AS_OF: [date(2025, 6, 30)] * n}
    for f in ERP_FIELDS:
        base = (
            np.exp(rng.normal(10, 1, size=n))
            if f.dtype == "int64"
            else rng.gamma(2.0, 20.0, size=n)
        )
        if f.name in ("gross_margin", "operating_margin"):
            base = 0.2 + 0.1 * health + rng.normal(0, 0.05, size=n)
        if f.name == "debt":
            base = np.exp(10 - 0.8 * health + rng.normal(0, 0.3, size=n))
        data[f.name] = base.astype(np.int64) if f.dtype == "int64" else base.astype(np.float64)
    p = 1 / (1 + np.exp(2.0 * health + 1.0))
    return pd.DataFrame(data), (rng.uniform(size=n) < p).astype(int)


def make_world(root: Path, *, n_isvs: int = 3, per_isv: int = 60, seed: int = 0) -> World:
    """Write keys, ERP Parquet files, a labels table and consents under ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    gw = Ed25519PrivateKey.generate()
    _write_key(root / "gateway.pem", gw)
    _write_pub(root / "gateway.pub.pem", gw)
    cm = Ed25519PrivateKey.generate()
    _write_pub(root / "consent-manager.pub.pem", cm)
    now = datetime.now(UTC)
    nodes, node_keys, by_isv, erp, labels = [], {}, {}, {}, []
    for k in range(n_isvs):
        isv = f"isv{k}"
        d = root / isv
        d.mkdir(exist_ok=True)
        key = Ed25519PrivateKey.generate()
        _write_key(d / "node.pem", key)
        _write_pub(d / "node.pub.pem", key)
        node_keys[isv] = str(d / "node.pub.pem")
        ids = [f"m{k}x{i:03d}" for i in range(per_isv)]
        frame, y = _erp_frame(rng, ids)
        frame.to_parquet(d / "erp.parquet", index=False)
        erp[isv] = frame
        labels.append(pd.DataFrame({MERCHANT_ID: ids, LABEL: y}))
        by_isv[isv] = [
            ManifestEntry(
                merchant_id=m,
                consent_id=f"c-{m}",
                artefact_hash=f"{i:064x}",
                consent_start=now - timedelta(days=1),
                consent_expiry=now + timedelta(days=30),
                data_from=date(2024, 1, 1),
                data_to=date(2025, 12, 31),
            )
            for i, m in enumerate(ids)
        ]
        # The ISV's node policy: safe defaults, but a world of a few dozen merchants per
        # ISV (about a dozen held out) needs smaller minimum cohorts.
        (d / "node.toml").write_text(
            "[policy]\nmin-cohort = 5\nmin-score-cohort = 5\n", "utf-8"
        )
        nodes.append(
            NodeConfig(
                isv_id=isv,
                erp_path=d / "erp.parquet",
                node_key=d / "node.pem",
                gateway_key=root / "gateway.pub.pem",
                state_dir=d / "state",
                policy=d / "node.toml",
            )
        )
    (root / "node-keys.json").write_text(json.dumps(node_keys), "utf-8")
    pd.concat(labels).to_parquet(root / "labels.parquet", index=False)
    cohort = WorldCohort(by_isv=by_isv)
    cohort.scoring_ok = {e.merchant_id for es in by_isv.values() for e in es[::2]}
    for node in nodes:  # each merchant approved its consent in its ISV's own system
        approve_at_node(node, by_isv[node.isv_id], scoring_ok=cohort.scoring_ok)
    return World(
        root=root,
        gateway_key=gw,
        gateway_key_path=root / "gateway.pem",
        nodes=nodes,
        node_keys_path=root / "node-keys.json",
        labels_path=root / "labels.parquet",
        cohort=cohort,
        erp=erp,
        consent_key=cm,
        consent_key_path=root / "consent-manager.pub.pem",
    )


ALL_CATEGORIES = SAFE_DEFAULTS.allowed_categories  # every consent category with ERP fields


def approve_at_node(
    node: NodeConfig,
    entries: Sequence[ManifestEntry],
    *,
    scoring_ok: set[str] | frozenset[str] = frozenset(),
    categories: Sequence[str] = ALL_CATEGORIES,
) -> None:
    """Register each entry's consent in the node's own approval register (the ISV's system):
    the terms the merchant approved (training, and scoring for ``scoring_ok``), through the
    node's one approval path."""
    from consent import ConsentArtefact, Frequency
    from federation.node import load_policy

    register = node.approvals(load_policy(node.policy))
    register_approvals(register, (
        (ConsentArtefact(
            consent_id=e.consent_id,
            merchant_id=e.merchant_id,
            data_provider=node.isv_id,
            data_consumer=CONSUMER,
            purposes=("credit_scoring", "model_training")
            if e.merchant_id in scoring_ok
            else ("model_training",),
            categories=tuple(categories),
            data_from=e.data_from,
            data_to=e.data_to,
            frequency=Frequency(1000, "day"),
            data_life_days=90,
            consent_start=e.consent_start,
            consent_expiry=e.consent_expiry,
            created_at=e.consent_start,
        ), e.artefact_hash)
        for e in entries
    ))


def training_manifest(
    isv: str, entries: Sequence[ManifestEntry], *, job_id: str, categories: Sequence[str]
) -> CohortManifest:
    """An unsigned round-1 ``model_training`` manifest over hand-picked ``entries``."""
    return build_manifest(
        job_id=job_id,
        round=1,
        data_provider=isv,
        data_consumer=CONSUMER,
        purpose="model_training",
        categories=categories,
        entries=entries,
        issued_at=datetime.now(UTC),
        ttl=timedelta(minutes=5),
    )


def signed_manifest(
    world: World,
    isv: str,
    *,
    job_id: str = "job1",
    round: int = 1,
    purpose: str = "model_training",
    categories: Sequence[str] = ("margins", "cash_and_debt"),
    issued_at: datetime | None = None,
    ttl: timedelta = timedelta(minutes=5),
    labels: dict[str, int] | None = None,
    entries: Sequence[ManifestEntry] | None = None,
) -> bytes:
    """A gateway-signed manifest over ``isv``'s live consents, or over ``entries`` if given.

    Labels are attached if given.
    """
    at = issued_at or datetime.now(UTC)
    if entries is None:
        entries = world.cohort.entries(
            Use(data_provider=isv, data_consumer=CONSUMER, purpose=purpose,
                categories=categories, at=at)
        )
    if labels is not None:
        entries = [replace(e, label=labels.get(e.merchant_id)) for e in entries]
    manifest = build_manifest(
        job_id=job_id,
        round=round,
        data_provider=isv,
        data_consumer=CONSUMER,
        purpose=purpose,
        categories=categories,
        entries=entries,
        issued_at=at,
        ttl=ttl,
    )
    return sign_manifest(manifest, world.gateway_key)


def incoming(content: RecordDict, message_type: str, *, dst_node_id: int = 7) -> Message:
    """A message as a node receives it (metadata set by the SuperLink)."""
    meta = Metadata(
        run_id=1,
        message_id=uuid.uuid4().hex,
        src_node_id=0,
        dst_node_id=dst_node_id,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    return Message(content=content, metadata=meta)


def node_context(node: NodeConfig) -> Context:
    """The Context a SuperNode gives the ClientApp (node config carries the identity)."""
    return Context(
        run_id=1,
        node_id=7,
        node_config=node.to_mapping(),
        state=RecordDict(),
        run_config={},
    )


def grant_consents(
    world: World,
    sessions: sessionmaker[Session],
    *,
    uses_per_day: int = 1000,
    key: Ed25519PrivateKey | None = None,
) -> dict[str, str]:
    """Record every world consent in the real consent store; returns merchant id → consent id.

    Training consents cover every merchant; ``credit_scoring`` is added only for
    ``world.cohort.scoring_ok`` (as in :class:`WorldCohort`).

    Parameters
    ----------
    uses_per_day : int, default 1000
        Each consent's frequency limit.
    key : Ed25519PrivateKey | None, default ``world.consent_key``
        Signing key (another key forges the artefacts).
    """
    from consent import grant, parse_terms

    key = key or world.consent_key
    ids: dict[str, str] = {}
    signed: dict[str, list[SignedArtefact]] = {}
    with sessions() as s, s.begin():
        for isv, entries in world.cohort.by_isv.items():
            for e in entries:
                purposes = ["model_training"]
                if e.merchant_id in world.cohort.scoring_ok:
                    purposes.append("credit_scoring")
                terms = parse_terms(
                    {
                        "consent_id": e.consent_id,
                        "merchant_id": e.merchant_id,
                        "data_provider": isv,
                        "data_consumer": CONSUMER,
                        "purposes": sorted(purposes),
                        "categories": ["cash_and_debt", "margins"],
                        "data_from": e.data_from.isoformat(),
                        "data_to": e.data_to.isoformat(),
                        "frequency": {"uses": uses_per_day, "per": "day"},
                        "data_life_days": 90,
                        "consent_start": e.consent_start.isoformat(),
                        "consent_expiry": e.consent_expiry.isoformat(),
                    }
                )
                granted = grant(s, terms, key=key)
                signed.setdefault(isv, []).append(granted.signed)
                ids[e.merchant_id] = e.consent_id
    # The merchant approves the same artefact in its ISV's system: the node registers it
    # (the latest record per consent id wins, so these replace the world's placeholders).
    for node in world.nodes if key is world.consent_key else ():  # a forger's: never approved
        register = node.approvals(node.node_policy())
        register_approvals(register, ((a.artefact, a.hash) for a in signed.get(node.isv_id, [])))
    return ids
