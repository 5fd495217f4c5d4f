"""The ServerApp's run config, parsed once into :class:`ServerSettings`.

Run config keys are kebab-case (Flower's app config table, or the runner's
embedded defaults); :meth:`ServerSettings.from_run_config` is the one place that
reads them. Bad or missing keys raise :class:`~federation.FederationError`
with code ``BAD_CONFIG``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from .._errors import FederationError
from ..holdout import HOLDOUT_BUCKETS
from ..lifetime import PRIVACY_ACCOUNT_KEY
from ..signals import ERP_CHANGES, SIGNAL_CATEGORIES, SIGNAL_KINDS
from ..specs import ModelSpec, spec_from_run_config
from ._keys import KEY_HOLDOUT_BUCKETS
from ._stream import DEFAULT_STREAM_ABOVE, stream_above

__all__ = [
    "ServerSettings",
    "secagg_parameters",
    "DEFAULT_MANIFEST_TTL",
    "DEFAULT_TIMEOUT",
    "SCORE_PURPOSES",
]

DEFAULT_MANIFEST_TTL = timedelta(minutes=15)
SCORE_PURPOSES = ("credit_scoring", "post_loan_monitoring")
"""The consent purposes a scoring job may serve (the nodes accept the same two)."""
DEFAULT_TIMEOUT = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """The ServerApp's configuration, read once from ``context.run_config``.

    Parameters
    ----------
    job_id : str
    mode : str
        ``"train"``, ``"score"`` or ``"signals"`` (an ERP signals query, :mod:`._signals`).
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
    score_purpose : str, default "credit_scoring"
        The consent purpose a scoring job's manifests name, run-config ``score-purpose``:
        ``credit_scoring`` (origination) or ``post_loan_monitoring`` (re-scoring
        merchants with open loans); see :data:`SCORE_PURPOSES`.
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
    manifest_stream_above : int, default 65536
        Cohorts with more entries are streamed to the node in chunk messages ahead of
        the work message (run-config ``manifest-stream-above``; ``0``: always).
    signal_kind : str, default "erp-changes"
        Signals mode: the release asked for (run-config ``signal-kind``,
        :data:`federation.signals.SIGNAL_KINDS`); its manifests name the kind's purpose
        and categories (the spec's categories are replaced by the kind's).
    signal_as_of : date | None, default None
        Signals mode: ``now`` is the latest snapshot at or before it (``signal-as-of``,
        ISO day; ``None``: today, UTC).
    signal_since : date | None, default None
        Signals mode, ``erp-changes``: ``then`` is the latest snapshot at or before it
        (``signal-since``) for merchants without their own.
    signal_since_file : Path | None, default None
        Signals mode: a CSV ``merchant_id,since`` of per-merchant ``since`` days
        (``signal-since-file``).
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
    score_purpose: str = "credit_scoring"
    manifest_ttl: timedelta = DEFAULT_MANIFEST_TTL
    seed: int = 0
    timeout: float = DEFAULT_TIMEOUT
    min_nodes: int = 1
    secagg: str = "auto"
    secagg_num_shares: float = 0.0
    secagg_threshold: float = 0.0
    privacy_account: Path | None = None
    holdout_buckets: int = HOLDOUT_BUCKETS
    manifest_stream_above: int = DEFAULT_STREAM_ABOVE
    signal_kind: str = ERP_CHANGES
    signal_as_of: date | None = None
    signal_since: date | None = None
    signal_since_file: Path | None = None

    @classmethod
    def from_run_config(cls, rc: Mapping[str, Any]) -> ServerSettings:
        """Parse the run config (kebab-case keys)."""

        def opt_path(key: str) -> Path | None:
            v = str(rc.get(key, ""))
            return Path(v) if v else None

        def opt_day(key: str) -> date | None:
            v = str(rc.get(key, "") or "")
            try:
                return date.fromisoformat(v) if v else None
            except ValueError:
                raise FederationError(f"{key} must be YYYY-MM-DD, got {v!r}",
                                      code="BAD_CONFIG") from None  # fmt: skip

        mode = str(rc.get("mode", "train"))
        if mode not in ("train", "score", "signals"):
            raise FederationError(
                f"mode must be train, score or signals, got {mode!r}", code="BAD_CONFIG"
            )
        kind = str(rc.get("signal-kind", ERP_CHANGES))
        if kind not in SIGNAL_KINDS:
            raise FederationError(
                f"signal-kind must be one of {', '.join(SIGNAL_KINDS)}, got {kind!r}",
                code="BAD_CONFIG",
            )
        score_purpose = str(rc.get("score-purpose", SCORE_PURPOSES[0]))
        if score_purpose not in SCORE_PURPOSES:
            raise FederationError(
                f"score-purpose must be one of {', '.join(SCORE_PURPOSES)}, got {score_purpose!r}",
                code="BAD_CONFIG",
            )
        try:
            spec = spec_from_run_config(rc)
            if mode == "signals":  # its manifests name exactly what the kind reads
                spec = replace(spec, categories=SIGNAL_CATEGORIES[kind], extras=())
            return cls(
                job_id=str(rc["job-id"]),
                mode=mode,
                spec=spec,
                db_url=str(rc["db-url"]),
                gateway_key=Path(str(rc["gateway-key"])),
                node_keys=Path(str(rc["node-keys"])),
                data_consumer=str(rc["data-consumer"]),
                out_dir=Path(str(rc["out-dir"])),
                consent_key=opt_path("consent-key"),
                labels_path=opt_path("labels-path"),
                model_dir=opt_path("model-dir"),
                score_purpose=score_purpose,
                manifest_ttl=timedelta(seconds=float(rc.get("manifest-ttl-s", 900))),
                seed=int(rc.get("seed", 0)),
                timeout=float(rc.get("timeout-s", DEFAULT_TIMEOUT)),
                min_nodes=int(rc.get("min-nodes", 1)),
                secagg=_secagg_mode(rc.get("secagg", "auto")),
                secagg_num_shares=float(rc.get("secagg-num-shares", 0.0)),
                secagg_threshold=float(rc.get("secagg-threshold", 0.0)),
                privacy_account=opt_path(PRIVACY_ACCOUNT_KEY),
                holdout_buckets=int(rc.get(KEY_HOLDOUT_BUCKETS, HOLDOUT_BUCKETS)),
                manifest_stream_above=stream_above(rc),
                signal_kind=kind,
                signal_as_of=opt_day("signal-as-of"),
                signal_since=opt_day("signal-since"),
                signal_since_file=opt_path("signal-since-file"),
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
    shares = n_nodes if n_nodes <= 10 else min(n_nodes, 2 * math.ceil(math.log2(n_nodes)) + 1)
    return shares, max(2, math.ceil(2 * shares / 3))
