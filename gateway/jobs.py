"""Assembling a federated job around a world directory: nodes, keys, registry, run config.

What ``fedgate fl run|score`` and ``fedgate demo`` share. A *world directory*
is the output of ``fedgate data synth`` (``world.json``, the platform table,
one ERP table per ISV). Around it this module builds the embedded default of
the simulation runtime:

* the gateway key (signs manifests) and one key per simulated node (signs
  receipts), generated on first use under the settings' key directory, with
  their public halves next to them;
* the node-key registry (``node-keys.json``: ISV id → public key file) that the
  ServerApp checks identities and receipts against;
* one :class:`~federation.apps.NodeConfig` per ISV, keeping its DP ledger and
  replay guard under ``<data_dir>/nodes/<isv>/``;
* the ServerApp's run config (kebab-case keys) for a training, scoring or ERP
  signals job,
  naming the gateway's per-merchant lifetime ε account across all ISVs
  (``<data_dir>/privacy/merchants.json``);
* the cohort source the ServerApp builds each round's manifests from: the live
  consents in the platform database, every artefact's signature verified with
  the consent manager's key (``<key_dir>/consent-manager.pem``).

Nothing here touches the database or starts Flower; errors are
:class:`JobSetupError` with a machine-readable ``code``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federation.cohort import ConsentCohortSource

from ._errors import GatewayError
from .keys import load_or_create_key, public_key_pem
from .settings import Settings

if TYPE_CHECKING:  # the apps package pulls in Flower and Ray: imported when a job is built
    from collections.abc import Collection, Sequence

    from federation.apps import NodeConfig
    from federation.jobconfig import JobConfig

__all__ = [
    "DEFAULT_CONSUMER",
    "GATEWAY_KEY",
    "CONSENT_MANAGER_KEY",
    "JobSetupError",
    "WorldNodes",
    "ConsentCohort",
    "ListedCohort",
    "read_merchant_list",
    "load_world",
    "world_nodes",
    "config_nodes",
    "base_run_config",
    "train_run_config",
    "score_run_config",
    "signals_run_config",
    "read_lineage",
    "privacy_account_path",
]

DEFAULT_CONSUMER = "platform"
"""The data consumer every manifest and consent names, unless a job says otherwise."""

GATEWAY_KEY = "gateway"
"""Key name (``<key_dir>/gateway.pem``) of the key that signs cohort manifests."""

CONSENT_MANAGER_KEY = "consent-manager"
"""Key name of the consent manager's key (signs consent artefacts; ``fedgate consent``)."""

WORLD_FILE = "world.json"
NODE_KEY_DIR = "nodes"
REGISTRY_FILE = "node-keys.json"
PRIVACY_DIR = "privacy"
PRIVACY_ACCOUNT_FILE = "merchants.json"


class JobSetupError(GatewayError):
    """A job cannot be assembled: a bad world directory or a bad model directory.

    Parameters
    ----------
    message : str
    code : str
        ``BAD_WORLD`` or ``BAD_MODEL``.
    """


@dataclass(frozen=True, slots=True)
class WorldNodes:
    """A world directory with its simulated nodes ready to run.

    Attributes
    ----------
    world : Path
        The world directory.
    doc : dict[str, Any]
        Its ``world.json``.
    nodes : tuple[NodeConfig, ...]
        One per ISV, sorted by ISV id.
    registry : Path
        The node-key registry file.
    """

    world: Path
    doc: dict[str, Any]
    nodes: tuple[NodeConfig, ...]
    registry: Path

    @property
    def platform_path(self) -> Path:
        """The platform table (labels for training); ``BAD_WORLD`` if ``world.json`` names none."""
        name = self.doc.get("platform_file")
        if not name:
            raise JobSetupError(
                f"{self.world}/{WORLD_FILE} names no platform table", code="BAD_WORLD"
            )
        return (self.world / str(name)).resolve()


class ConsentCohort(ConsentCohortSource):
    """The live consent state as the ServerApp's cohort source, signatures verified.

    Each call opens a session and runs :func:`consent.cohort_entries`, so a
    revocation committed before a round is never in that round's manifest.

    Parameters
    ----------
    settings : Settings
        The platform database (``resolved_database_url``) and the key directory
        holding the consent manager's key (created on first use).
    """

    def __init__(self, settings: Settings) -> None:
        from .db import make_engine, make_sessionmaker

        key = load_or_create_key(settings.resolved_key_dir, CONSENT_MANAGER_KEY)
        engine = make_engine(settings.resolved_database_url)
        super().__init__(make_sessionmaker(engine), key.public_key(), engine=engine)


class ListedCohort:
    """A cohort source narrowed to listed merchants (``fedgate fl score --merchants``).

    Nobody outside ``merchants`` enters a manifest, and nobody inside it without a
    consent that allows the use (the inner source decides that). Scoring only the
    merchants a decision needs bills only those (a ``query.score`` receipt is billed per
    merchant used), e.g. a ``pd-erp-only`` job over the off-platform merchants.

    Parameters
    ----------
    inner : CohortSource
        The consent cohort.
    merchants : Collection[str]
    """

    def __init__(self, inner: Any, merchants: Collection[str]) -> None:
        self._inner = inner
        self._merchants = frozenset(merchants)

    def entries(self, use: Any) -> list[Any]:
        """The inner source's entries for ``use``, narrowed to the listed merchants."""
        return [e for e in self._inner.entries(use) if e.merchant_id in self._merchants]


def read_merchant_list(path: Path) -> list[str]:
    """Merchant ids, one per line (first CSV field; a ``merchant_id`` header line is skipped).

    Raises
    ------
    JobSetupError
        ``BAD_MERCHANTS``: unreadable, or no merchant id in it.
    """
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise JobSetupError(f"cannot read {path}: {exc}", code="BAD_MERCHANTS") from exc
    ids = [ln.split(",", 1)[0].strip() for ln in lines]
    if ids and ids[0] == "merchant_id":
        ids = ids[1:]
    out = sorted({m for m in ids if m})
    if not out:
        raise JobSetupError(f"{path} lists no merchant id", code="BAD_MERCHANTS")
    return out


def load_world(world: Path) -> dict[str, Any]:
    """Read ``<world>/world.json``; :class:`JobSetupError` (``BAD_WORLD``) if absent or bad."""
    meta = world / WORLD_FILE
    if not meta.is_file():
        raise JobSetupError(
            f"{world} has no {WORLD_FILE} (write one with `fedgate data synth`)", code="BAD_WORLD"
        )
    try:
        doc = json.loads(meta.read_text("utf-8"))
    except ValueError as exc:
        raise JobSetupError(f"{meta} is not JSON: {exc}", code="BAD_WORLD") from exc
    if not isinstance(doc, dict):
        raise JobSetupError(f"{meta} is not a JSON object", code="BAD_WORLD")
    return doc


def world_nodes(settings: Settings, world: Path) -> WorldNodes:
    """Keys, node configs and the node-key registry for the ISVs of ``world``.

    Writes the key files (:func:`_write_keys`): keys are created on first use (mode
    0600) under ``settings.resolved_key_dir`` and their public halves written beside them.

    Raises
    ------
    JobSetupError
        ``BAD_WORLD``: no ``world.json`` or it lists no ISV.
    """
    from federation.apps import NodeConfig

    doc = load_world(world)
    isvs = sorted(doc.get("isvs", {}).items())
    if not isvs:
        raise JobSetupError(f"{world}/{WORLD_FILE} lists no ISVs", code="BAD_WORLD")
    gateway_pub, registry_path, private = _write_keys(settings, [isv for isv, _ in isvs])
    nodes = [
        NodeConfig(
            isv_id=isv,
            erp_path=(world / str(info["file"])).resolve(),
            node_key=private[isv],
            gateway_key=gateway_pub,
            state_dir=(settings.data_dir / "nodes" / isv).resolve(),
        )
        for isv, info in isvs
    ]
    return WorldNodes(world=world, doc=doc, nodes=tuple(nodes), registry=registry_path)


def _write_keys(settings: Settings, isvs: Sequence[str]) -> tuple[Path, Path, dict[str, Path]]:
    """Write the job's key files; return the gateway public key, registry and node keys.

    Under ``settings.resolved_key_dir``, each created on first use (mode 0600) with its
    public half beside it: ``gateway.pem`` (signs manifests), ``consent-manager.pem``
    (its public half is the run config's ``consent-key``) and ``nodes/<isv>.pem``; plus
    the node-key registry ``node-keys.json``.
    """
    key_dir = settings.resolved_key_dir
    gateway_pub = key_dir / f"{GATEWAY_KEY}.pub.pem"
    gateway_pub.write_text(public_key_pem(load_or_create_key(key_dir, GATEWAY_KEY)), "utf-8")
    consent_pub = key_dir / f"{CONSENT_MANAGER_KEY}.pub.pem"
    consent_pub.write_text(
        public_key_pem(load_or_create_key(key_dir, CONSENT_MANAGER_KEY)), "utf-8"
    )
    node_key_dir = key_dir / NODE_KEY_DIR
    registry: dict[str, str] = {}
    private: dict[str, Path] = {}
    for isv in isvs:
        key = load_or_create_key(node_key_dir, isv)
        pub = node_key_dir / f"{isv}.pub.pem"
        pub.write_text(public_key_pem(key), "utf-8")
        registry[isv] = str(pub.resolve())
        private[isv] = (node_key_dir / f"{isv}.pem").resolve()
    registry_path = key_dir / REGISTRY_FILE
    registry_path.write_text(json.dumps(registry, indent=2), "utf-8")
    return gateway_pub.resolve(), registry_path, private


def job_node_configs(settings: Settings, cfg: JobConfig) -> tuple[tuple[Any, ...], Path]:
    """Each ISV's simulated node (its keys, state directory and own policy file) and the registry.

    The node of ISV ``i`` keeps its state (approval register, privacy ledger, …) in
    ``<data dir>/nodes/<i>``; ``fedgate node approve --job`` registers approvals there.
    """
    from federation.apps import NodeConfig

    gateway_pub, registry, private = _write_keys(settings, [i.isv_id for i in cfg.isvs])
    nodes = tuple(
        NodeConfig(
            isv_id=isv.isv_id,
            erp_path=isv.path.resolve() if isv.path is not None else None,
            node_key=private[isv.isv_id],
            gateway_key=gateway_pub,
            state_dir=(settings.data_dir / "nodes" / isv.isv_id).resolve(),
            connector=isv.kind,
            mapping=isv.mapping_path.resolve() if isv.mapping_path is not None else None,
            erp_url=isv.url,
            erp_table=isv.table,
            policy=isv.policy.resolve() if isv.policy is not None else None,
        )
        for isv in cfg.isvs
    )
    return nodes, registry


def config_nodes(
    settings: Settings, cfg: JobConfig, *, label: str, labels_dir: Path
) -> WorldNodes:
    """Keys, node configs and registry for the ISVs of a job configuration.

    Each node reads its own source through its own mapping (CSV, Parquet or SQL).
    The platform table's labelled merchants are written to
    ``<labels_dir>/labels.parquet`` (``merchant_id`` and a column named ``label``,
    the spec's label), which the ServerApp puts into training manifests.

    Raises
    ------
    JobSetupError
        ``BAD_CONFIG`` when the platform table cannot be read.
    """
    from federation import DataError
    from federation.jobconfig import read_platform

    try:
        platform = read_platform(cfg)
    except DataError as exc:
        raise JobSetupError(str(exc), code=exc.code) from exc
    labels_dir.mkdir(parents=True, exist_ok=True)
    labels_file = (labels_dir / "labels.parquet").resolve()
    labelled = platform[platform["label"].notna()]
    pd_frame = labelled[["merchant_id"]].assign(**{label: labelled["label"].astype("int8")})
    pd_frame.to_parquet(labels_file, index=False)
    nodes, registry = job_node_configs(settings, cfg)
    doc = {"platform_file": str(labels_file), "job_config": str(cfg.path)}
    return WorldNodes(world=cfg.path.parent, doc=doc, nodes=nodes, registry=registry)


def base_run_config(
    settings: Settings,
    *,
    job_id: str,
    mode: str,
    spec: str,
    registry: Path,
    consumer: str = DEFAULT_CONSUMER,
    out: Path | None = None,
) -> dict[str, Any]:
    """The run-config keys every job needs; reads and writes nothing.

    The database schema and the key files must already exist: :func:`world_nodes` and
    :func:`config_nodes` write the keys (the consent manager's public key included).

    Parameters
    ----------
    settings : Settings
        Database URL, key and data directories.
    job_id, mode, spec : str
        ``mode`` is ``"train"`` or ``"score"``; ``spec`` a model spec name.
    registry : Path
        The node-key registry (:attr:`WorldNodes.registry`).
    consumer : str, default "platform"
    out : Path | None, default ``<data_dir>/jobs/<job_id>``
    """
    # The ServerApp verifies every consent artefact with the consent manager's public key
    # and, holding it, counts each round's uses against the consents' frequency limits.
    consent_pub = settings.resolved_key_dir / f"{CONSENT_MANAGER_KEY}.pub.pem"
    return {
        "job-id": job_id,
        "mode": mode,
        "spec": spec,
        "db-url": settings.resolved_database_url,
        "consent-key": str(consent_pub.resolve()),
        "gateway-key": str((settings.resolved_key_dir / f"{GATEWAY_KEY}.pem").resolve()),
        "node-keys": str(registry.resolve()),
        "data-consumer": consumer,
        "out-dir": str((out or settings.data_dir / "jobs" / job_id).resolve()),
        # One per-merchant lifetime ε account across every ISV and job of this gateway.
        "privacy-account": str(privacy_account_path(settings)),
    }


def privacy_account_path(settings: Settings) -> Path:
    """The gateway's per-merchant lifetime ε account (``<data_dir>/privacy/merchants.json``)."""
    return (settings.data_dir / PRIVACY_DIR / PRIVACY_ACCOUNT_FILE).resolve()


def train_run_config(
    settings: Settings,
    wn: WorldNodes,
    *,
    job_id: str,
    spec: str,
    consumer: str = DEFAULT_CONSUMER,
    out: Path | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A training job's run config: labels from the world's platform table, spec overrides.

    ``overrides`` are kebab-case run-config keys (``rounds``, ``dp-epsilon``, …);
    ``None`` values are dropped, so CLI options left unset keep the spec's defaults.
    A FedProx job without ``proximal-mu`` gets 0.01.
    """
    config = base_run_config(
        settings,
        job_id=job_id,
        mode="train",
        spec=spec,
        registry=wn.registry,
        consumer=consumer,
        out=out,
    )
    config["labels-path"] = str(wn.platform_path)
    config.update({k: v for k, v in overrides.items() if v is not None})
    if config.get("strategy") == "fedprox":
        config.setdefault("proximal-mu", 0.01)
    return config


def read_lineage(model_dir: Path) -> dict[str, Any]:
    """A training job's ``lineage.json`` (spec, rounds, receipts, ε).

    Raises
    ------
    JobSetupError
        ``BAD_MODEL``: no lineage there, or not one (no ``spec`` mapping).
    """
    lineage_file = model_dir / "lineage.json"
    if not lineage_file.is_file():
        raise JobSetupError(
            f"{model_dir} has no lineage.json (not a training job's output)", code="BAD_MODEL"
        )
    try:
        lineage = json.loads(lineage_file.read_text("utf-8"))
        spec = lineage["spec"]
        if not isinstance(spec, dict) or "spec" not in spec:
            raise TypeError("'spec' is not a spec mapping")
    except (ValueError, KeyError, TypeError) as exc:
        raise JobSetupError(f"{lineage_file} is not a lineage: {exc}", code="BAD_MODEL") from exc
    return dict(lineage)


def score_run_config(
    settings: Settings,
    wn: WorldNodes,
    *,
    job_id: str,
    model_dir: Path,
    consumer: str = DEFAULT_CONSUMER,
    out: Path | None = None,
    purpose: str = "credit_scoring",
) -> dict[str, Any]:
    """A scoring job's run config for the model a training job left in ``model_dir``.

    The spec and its values come from the model's ``lineage.json``. ``purpose`` is the
    consent purpose the manifests name: ``credit_scoring`` (origination) or
    ``post_loan_monitoring`` (re-scoring merchants with open loans).

    Raises
    ------
    JobSetupError
        ``BAD_MODEL``: ``model_dir`` holds no lineage (not a training job's output).
    """
    spec_values = dict(read_lineage(model_dir)["spec"])
    config = base_run_config(
        settings,
        job_id=job_id,
        mode="score",
        spec=str(spec_values["spec"]),
        registry=wn.registry,
        consumer=consumer,
        out=out,
    )
    config.update({k: v for k, v in spec_values.items() if k != "spec"})
    config["model-dir"] = str(model_dir.resolve())
    config["score-purpose"] = purpose
    return config


def signals_run_config(
    settings: Settings,
    wn: WorldNodes,
    *,
    job_id: str,
    kind: str,
    as_of: date,
    since: date | None = None,
    since_file: Path | None = None,
    consumer: str = DEFAULT_CONSUMER,
    out: Path | None = None,
) -> dict[str, Any]:
    """An ERP signals job's run config (``mode = "signals"``, :mod:`federation.signals`).

    ``kind`` is ``erp-changes`` (``post_loan_monitoring``) or ``revenue-3m``
    (``credit_scoring``); its manifests name the kind's purpose and categories. ``since``
    applies to every merchant without a day in ``since_file`` (CSV ``merchant_id,since``).
    The rounding is never in it: each node applies its own policy.
    """
    config = base_run_config(
        settings,
        job_id=job_id,
        mode="signals",
        spec="pd-erp",  # names no model: only the manifests' framing (categories replaced)
        registry=wn.registry,
        consumer=consumer,
        out=out,
    )
    config["signal-kind"] = kind
    config["signal-as-of"] = as_of.isoformat()
    if since is not None:
        config["signal-since"] = since.isoformat()
    if since_file is not None:
        config["signal-since-file"] = str(since_file.resolve())
    return config
