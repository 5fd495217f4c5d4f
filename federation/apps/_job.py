"""One job's server-side state and the steps every phase shares.

:class:`Job` holds what a job learns as it runs (identified nodes, verified
receipts, failures, ε spent, which consent uses are still to be counted) and
does the two things every phase needs:

* :meth:`Job.job_config` — the per-node job record with a freshly built,
  signed cohort manifest (consent's cohort check, the platform's lifetime ε
  account, the platform's labels);
* :meth:`Job.record_receipt_token` — verify a node's usage receipt against the
  request and **write it to the ledger** (``data.used``, with the round's
  consent uses counted in the same transaction), then settle the platform's
  lifetime ε charge for that manifest by the receipt's ``unused_entries``;
* :meth:`Job.check_refusal` — verify a node's signed refusal in an error reply
  and write it to the ledger (``refusal``).

The phases themselves live in their own modules: :mod:`._identify`,
:mod:`._statistics`, :mod:`._training` (rounds, evaluation, best round),
:mod:`._scoring`, :mod:`._signals`; :meth:`Job.run` calls them and writes ``result.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from logging import WARNING
from operator import attrgetter
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message
from flwr.common.logger import log
from flwr.serverapp import Grid

from consent import (
    ConsentError,
    ManifestEntry,
    ManifestStream,
    Use,
    build_manifest,
    sign_manifest,
    stream_manifest,
)

from .._errors import FederationError, JobFailed, ReceiptInvalid
from ..cohort import CohortSource
from ..lifetime import MerchantPrivacyAccount, split_by_receipt
from ..receipt_ledger import ExpectedReceipt, record_receipt
from ..refusals import refusal_note
from ._db import open_sessions
from ._keyfiles import load_node_keys, load_private_key, same_key
from ._keys import KEY_HOLDOUT_BUCKETS, KEY_RECEIPT, RECEIPT_KEY
from ._labels import LabelLookup
from ._outputs import write_result
from ._settings import ServerSettings
from ._strategy import RoundLog
from ._stream import send_streams, with_header
from ._wire import job_record

__all__ = ["Job"]


@dataclass
class Job:
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
    best_round: int | None = None  # the saved model's round (None: the last; no round evaluated)
    # Merchant ids of each (round, node) DP training manifest charged to the platform's
    # ε account, in manifest order, until the node's receipts settle the charge.
    charged_ids: dict[tuple[int, str], list[str]] = field(default_factory=dict)
    # Job records built ahead by :meth:`prepare_configs`, by (round, node, purpose), each
    # handed out once by :meth:`job_config`.
    _prepared: dict[tuple[int, str, str], tuple[ConfigRecord, str, int]] = field(
        default_factory=dict, repr=False
    )
    # Signals mode only: the merchant ids of each (round, node) manifest, so the request
    # names per-merchant ``since`` days for that node's own merchants only.
    manifest_members: dict[tuple[int, str], list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.settings
        self.gateway_key = load_private_key(s.gateway_key)
        if s.consent_key is not None and same_key(self.gateway_key, s.consent_key):
            # The coordinator signs manifests; consents are signed by the consent manager.
            # One key for both would let the job coordinator mint the consents it needs.
            raise FederationError(
                "the consent manager's key must not be the job coordinator's (gateway) key",
                code="BAD_CONFIG",
            )
        self.node_keys = load_node_keys(s.node_keys)
        self.engine, self.sessions = open_sessions(s.db_url)
        self.labels = LabelLookup(np.empty(0, dtype="S1"), np.empty(0, dtype=np.int8))
        if s.mode == "train":
            if s.labels_path is None:
                raise FederationError("train mode needs labels-path", code="BAD_CONFIG")
            self.labels = LabelLookup.from_table(s.labels_path, s.spec.label)

    # -- messages --------------------------------------------------------------------------
    def send(self, messages: list[Message]) -> list[Message]:
        """Send and wait for the replies (up to the job's timeout)."""
        return list(self.grid.send_and_receive(messages, timeout=self.settings.timeout))

    def wait_for_nodes(self) -> list[int]:
        """The connected node ids, once ``min_nodes`` have connected or the timeout passed."""
        # Nodes register with the SuperLink (or the simulation engine) concurrently with the
        # ServerApp's start: wait for the expected number, like Flower's own node sampling.
        deadline = time.monotonic() + self.settings.timeout
        while True:
            ids = list(self.grid.get_node_ids())
            if len(ids) >= self.settings.min_nodes or time.monotonic() > deadline:
                return ids
            time.sleep(0.2)

    # -- manifests -------------------------------------------------------------------------
    def job_config(
        self, server_round: int, isv: str, purpose: str
    ) -> tuple[ConfigRecord, str, int]:
        """The per-node job record: settings plus a freshly built, signed manifest.

        A config :meth:`prepare_configs` built for this round, node and purpose is
        handed out (once) instead of building another.
        """
        held = self._prepared.pop((server_round, isv, purpose), None)
        if held is not None:
            return held
        return self.job_configs(server_round, [isv], purpose)[isv]

    def prepare_configs(self, server_round: int, isvs: Iterable[str], purpose: str) -> None:
        """Build the job records of ``isvs`` now, so their streamed manifests go out side by
        side; :meth:`job_config` then hands each out. An earlier round's are dropped."""
        for key in [k for k in self._prepared if k[0] < server_round]:
            del self._prepared[key]
        todo = [i for i in dict.fromkeys(isvs) if (server_round, i, purpose) not in self._prepared]
        for isv, held in self.job_configs(server_round, todo, purpose).items():
            self._prepared[(server_round, isv, purpose)] = held

    def job_configs(
        self, server_round: int, isvs: Iterable[str], purpose: str
    ) -> dict[str, tuple[ConfigRecord, str, int]]:
        """Each node's job record with its freshly built, signed manifest: ``(record, root,
        merchants)`` per ISV.

        A cohort above ``manifest-stream-above`` entries is streamed: every such node's
        stream is built first (one cohort in memory at a time; the chunks wait in an
        unlinked spool file), then all of them are sent together, the nodes side by side
        (:func:`._stream.send_streams`), and the record carries only the signed header.
        A node that refuses a chunk is logged and refuses the work message too
        (``CHUNK_MISSING``), which the round records.
        """
        out: dict[str, tuple[ConfigRecord, str, int]] = {}
        with ExitStack() as spools:
            streams: dict[str, ManifestStream] = {}
            for isv in isvs:
                built = self._build_config(server_round, isv, purpose)
                if isinstance(built[0], ManifestStream):
                    streams[isv] = spools.enter_context(built[0])
                    out[isv] = (ConfigRecord(), built[0].root, built[2])
                else:
                    out[isv] = built  # type: ignore[assignment]
            if streams:
                by_node = {nid: streams[isv] for nid, isv in self.nodes.items() if isv in streams}
                refused = send_streams(self.send, by_node, job_id=self.settings.job_id,
                                       round=server_round)  # fmt: skip
                for nid, problem in refused.items():
                    if problem is not None:
                        log(WARNING, "node %s (%s) refused manifest chunks: %s", nid,
                            self.nodes[nid], problem)  # fmt: skip
            for isv, stream in streams.items():
                bare = job_record(spec=self.settings.spec, job_id=self.settings.job_id,
                                  round=server_round, manifest=b"", seed=self.settings.seed)
                cfg = with_header(bare, stream.header)
                cfg[KEY_HOLDOUT_BUCKETS] = self.settings.holdout_buckets
                out[isv] = (cfg, stream.root, out[isv][2])
        return out

    def _build_config(
        self, server_round: int, isv: str, purpose: str
    ) -> tuple[ConfigRecord | ManifestStream, str, int]:
        """One node's cohort, relabelled and charged: a signed job record, or a built (not
        yet sent) :class:`consent.ManifestStream` when the cohort is to be streamed."""
        s, spec = self.settings, self.settings.spec
        now = datetime.now(UTC)
        use = Use(
            data_provider=isv,
            data_consumer=s.data_consumer,
            purpose=purpose,
            categories=spec.categories,
            at=now,
        )
        entries = self.cohort.entries(use)
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
        self.manifest_sizes[(server_round, isv)] = count = len(entries)
        if s.mode == "signals":
            self.manifest_members[(server_round, isv)] = [e.merchant_id for e in entries]
        charges = purpose == "model_training" and self._charges(server_round)
        header: dict[str, Any] = {
            "job_id": s.job_id,
            "round": server_round,
            "data_provider": isv,
            "data_consumer": s.data_consumer,
            "purpose": purpose,
            "categories": spec.categories,
            "issued_at": now,
            "ttl": s.manifest_ttl,
        }
        if count > s.manifest_stream_above:
            # A large cohort goes ahead in acknowledged chunk messages; the job record
            # carries only the signed header (federation/apps/_stream.py).
            entries.sort(key=attrgetter("merchant_id"))  # a stream needs merchant-id order
            if charges:  # positions in the stream: merchant-id order
                self.charged_ids[(server_round, isv)] = [e.merchant_id for e in entries]
            stream = stream_manifest(entries=entries, key=self.gateway_key, **header)
            del entries
            return stream, stream.root, count
        manifest = build_manifest(**header, entries=entries)
        if charges:  # positions in the manifest, which sorts its entries by merchant
            self.charged_ids[(server_round, isv)] = [e.merchant_id for e in manifest.entries]
        cfg = job_record(
            spec=spec,
            job_id=s.job_id,
            round=server_round,
            manifest=sign_manifest(manifest, self.gateway_key),
            seed=s.seed,
        )
        cfg[KEY_HOLDOUT_BUCKETS] = s.holdout_buckets
        return cfg, manifest.root, count

    def _charges(self, server_round: int) -> bool:
        s = self.settings
        return server_round >= 1 and s.spec.dp is not None and s.privacy_account is not None

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
    def record_receipt_token(
        self, token: bytes | None, isv: str, server_round: int, action: str, root: str
    ) -> str | None:
        """Verify a receipt token against the node's key and this request, then ledger it.

        A receipt that verifies is appended to the ledger (``data.used``) and, the
        first time for its node and round, counts one use of every consent in that
        round's manifest, in the same transaction
        (:func:`~federation.receipt_ledger.record_receipt`). Returns ``None`` when
        recorded, else the problem (nothing is written then).
        """
        if not isinstance(token, bytes):
            return "reply carries no receipt"
        key = (server_round, isv)
        expected = ExpectedReceipt(
            job_id=self.settings.job_id,
            round=server_round,
            data_provider=isv,
            action=action,
            manifest_root=root,
            manifest_merchants=self.manifest_sizes.get(key),
        )
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
        self._settle(key, isv, str(body.get("unused_entries", "")))
        if body["epsilon_spent"] > self.epsilon.get(isv, 0.0):
            self.epsilon[isv] = body["epsilon_spent"]
        return None

    def _settle(self, key: tuple[int, str], isv: str, unused_entries: str) -> None:
        """Settle the platform ε account's charge for ``key`` by the node's verified receipt."""
        ids = self.charged_ids.get(key)
        s = self.settings
        if ids is None or s.privacy_account is None or s.spec.dp is None:
            return
        for old in [k for k in self.charged_ids if k[0] < key[0] - 1]:
            del self.charged_ids[old]  # rounds long over: their receipts have come or never will
        try:
            used, unused = split_by_receipt(ids, unused_entries)
        except ValueError as exc:  # signed by the node yet malformed: keep the charge
            self.failures.append(f"{isv}: RECEIPT_UNUSED_ENTRIES: {exc}")
            return
        MerchantPrivacyAccount(s.privacy_account).settle(
            job_id=s.job_id, budget=s.spec.dp, isv=isv, used=used, unused=unused
        )

    def check_refusal(
        self, reason: str, isv: str, server_round: int, action: str, root: str
    ) -> str | None:
        """Verify and ledger a node's signed refusal (:func:`federation.refusals.refusal_note`)."""
        key = self.node_keys.get(isv)
        if key is None:
            return None
        return refusal_note(
            self.sessions,
            reason,
            key,
            job_id=self.settings.job_id,
            round=server_round,
            data_provider=isv,
            action=action,
            manifest_root=root,
        )

    def record_reply_receipt(
        self, reply: Message, isv: str, server_round: int, action: str, root: str
    ) -> str | None:
        """:meth:`record_receipt_token` on the receipt record of a reply."""
        rec = reply.content.config_records.get(RECEIPT_KEY)
        token = rec.get(KEY_RECEIPT) if rec is not None else None
        return self.record_receipt_token(
            token if isinstance(token, bytes) else None, isv, server_round, action, root
        )

    # -- the job ---------------------------------------------------------------------------
    def run(self) -> None:
        """The whole job; writes ``result.json`` whatever happens, raises on any failure."""
        from ._scoring import score
        from ._signals import signals
        from ._training import train

        s = self.settings
        doc: dict[str, Any] = {"job_id": s.job_id, "mode": s.mode, "status": "failed"}
        phase = {"train": train, "score": score, "signals": signals}[s.mode]
        try:
            doc.update(phase(self))
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
            write_result(s.out_dir, doc)
            self.engine.dispose()
        if self.failures:
            log(WARNING, "fedgate: job %s failed: %s", s.job_id, self.failures)
            raise JobFailed(
                f"job {s.job_id} had {len(self.failures)} failure(s)", reasons=self.failures
            )
