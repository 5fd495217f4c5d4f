"""A strategy wrapper that adds consent to any Flower strategy: manifests out, receipts in.

:class:`ConsentedStrategy` delegates sampling and aggregation to the wrapped
strategy (FedAvg, FedProx, …). Around it, it gives each node's message its own
freshly built, gateway-signed cohort manifest (rebuilt every round from the
live consent state, so revocations take effect at the next round), and checks
every reply's usage receipt before the reply may count: a reply whose receipt
does not verify is treated like a failed node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any, TypeVar

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from ..refusals import RefusalCheck
from ._keys import ENCODER_KEY, ERR, JOB_KEY, METRICS_KEY, RECEIPT_KEY

__all__ = ["ConsentedStrategy", "RoundConfigs", "RoundLog"]


@dataclass(slots=True)
class RoundLog:
    """What happened in one round: per-node metrics, failures, manifest roots, receipts.

    ``skipped`` lists evaluations a node could not score (``NO_DATA``: too few held-out
    merchants, or only one class among them). That is a fact about the node's data, not
    a failure: the round's other nodes still count and the job goes on.
    """

    round: int
    train: dict[str, dict[str, float]] = field(default_factory=dict)
    evaluate: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    manifest_roots: dict[str, str] = field(default_factory=dict)
    merchants: dict[str, int] = field(default_factory=dict)


V = TypeVar("V")


class RoundConfigs(dict[tuple[int, str], V]):
    """Job configs by ``(round, isv)``; a round's are dropped once its replies are in.

    A config carries the node's signed manifest (~290 B per merchant), so holding every
    round's would grow with rounds × merchants; the lineage keeps only the roots.
    """

    def held(self) -> list[tuple[int, str]]:
        """``(round, isv)`` of the configs still held: at most the current round's."""
        return sorted(self)

    def release(self, upto: int) -> None:
        """Drop the configs of rounds ``<= upto``."""
        for key in [k for k in self if k[0] <= upto]:
            del self[key]


# (round, isv, purpose) -> (job-config record for that node, manifest root, merchant count)
ManifestFn = Callable[[int, str], tuple[ConfigRecord, str, int]]
# (round, isvs) -> None: build those nodes' manifests at once (streamed ones go out side by
# side) before ``ManifestFn`` hands each out
PrepareFn = Callable[[int, list[str]], None]
# (reply, isv, round, action) -> None if the receipt is good, else a reason
ReceiptFn = Callable[[Message, str, int, str], str | None]


class ConsentedStrategy(Strategy):
    """Wrap ``inner`` so that every message carries a per-node manifest and every reply a receipt.

    Parameters
    ----------
    inner : Strategy
        The aggregation strategy (``FedAvg``, ``FedProx``, …).
    nodes : dict[int, str]
        Identified nodes: Flower node id → ISV id. Messages to other nodes are dropped.
    manifest_for : ManifestFn
        Builds, signs and wraps the manifest for ``(round, isv)``; called once per node
        per round and reused for that round's evaluation.
    check_receipt : ReceiptFn
        Verifies a reply's receipt and records it (ledger); returns a reason on failure.
    encoder : ArrayRecord
        The bin encoder every train/evaluate message carries.
    on_round : Callable[[RoundLog], None] | None, default None
        Called after each round's evaluation (progress bars, tests).
    check_refusal : RefusalCheck | None, default None
        Verifies and records a node's signed refusal in an error reply
        (:func:`federation.refusals.refusal_note`); its note joins the failure line.
    prepare : PrepareFn | None, default None
        Called once per round with every node about to get a manifest, before
        ``manifest_for`` is asked for each, so that their streamed manifests go out
        together (:meth:`federation.apps._job.Job.prepare_configs`).
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        nodes: dict[int, str],
        manifest_for: ManifestFn,
        check_receipt: ReceiptFn,
        encoder: ArrayRecord,
        on_round: Callable[[RoundLog], None] | None = None,
        check_refusal: RefusalCheck | None = None,
        prepare: PrepareFn | None = None,
    ) -> None:
        self.inner = inner
        self.check_refusal = check_refusal
        self.prepare = prepare
        self.nodes = dict(nodes)
        self.manifest_for = manifest_for
        self.check_receipt = check_receipt
        self.encoder = encoder
        self.on_round = on_round
        self.rounds: dict[int, RoundLog] = {}
        self._configs: RoundConfigs[ConfigRecord] = RoundConfigs()

    def summary(self) -> None:
        """Log the wrapped strategy's summary."""
        log(INFO, "\t├──> fedgate: per-node cohort manifests, signed usage receipts")
        self.inner.summary()

    @property
    def held_configs(self) -> list[tuple[int, str]]:
        """``(round, isv)`` of the job configs still held: at most the current round's."""
        return self._configs.held()

    def _round(self, server_round: int) -> RoundLog:
        return self.rounds.setdefault(server_round, RoundLog(round=server_round))

    def _decorate(self, server_round: int, messages: Iterable[Message]) -> list[Message]:
        out: list[Message] = []
        rlog = self._round(server_round)
        # A round without evaluation never reaches aggregate_evaluate: release here too.
        self._configs.release(server_round - 1)
        messages = list(messages)
        if self.prepare is not None:
            isvs = [self.nodes[m.metadata.dst_node_id] for m in messages
                    if m.metadata.dst_node_id in self.nodes]  # fmt: skip
            missing = [i for i in isvs if (server_round, i) not in self._configs]
            if missing:
                self.prepare(server_round, missing)
        for msg in messages:
            isv = self.nodes.get(msg.metadata.dst_node_id)
            if isv is None:
                continue  # never send work to a node that did not prove its identity
            key = (server_round, isv)
            if key not in self._configs:
                cfg, root, count = self.manifest_for(server_round, isv)
                self._configs[key] = cfg
                rlog.manifest_roots[isv] = root
                rlog.merchants[isv] = count
            # A fresh RecordDict per node: Flower's strategies share one across messages.
            content = RecordDict(
                {
                    **dict(msg.content.items()),
                    JOB_KEY: self._configs[key],
                    ENCODER_KEY: self.encoder,
                }
            )
            out.append(
                Message(
                    content=content,
                    dst_node_id=msg.metadata.dst_node_id,
                    message_type=msg.metadata.message_type,
                )
            )
        return out

    def _screen(
        self, server_round: int, replies: Iterable[Message], action: str
    ) -> tuple[list[Message], dict[str, dict[str, float]]]:
        good: list[Message] = []
        per_node: dict[str, dict[str, float]] = {}
        rlog = self._round(server_round)
        for reply in replies:
            isv = self.nodes.get(reply.metadata.src_node_id, f"node-{reply.metadata.src_node_id}")
            if reply.has_error():
                note = f"{action}@{isv}: [{reply.error.code}] {reply.error.reason}"
                root = rlog.manifest_roots.get(isv)
                if self.check_refusal is not None and root is not None:
                    verdict = self.check_refusal(
                        reply.error.reason, isv, server_round, action, root
                    )
                    note += f" ({verdict})" if verdict else ""
                if action == "evaluate" and reply.error.code == ERR.NO_DATA:
                    log(INFO, "fedgate: %s skipped: %s", action, note)
                    rlog.skipped.append(note)
                else:
                    rlog.failures.append(note)
                continue
            problem = self.check_receipt(reply, isv, server_round, action)
            if problem is not None:
                rlog.failures.append(f"{action}@{isv}: RECEIPT_INVALID: {problem}")
                log(WARNING, "dropping %s reply from %s: %s", action, isv, problem)
                continue
            metrics = reply.content.metric_records.get(METRICS_KEY)
            per_node[isv] = {k: float(v) for k, v in (metrics or MetricRecord()).items()}  # type: ignore[arg-type]
            # The receipt is ours now; the inner strategy sees a plain Flower reply.
            stripped = RecordDict({k: v for k, v in reply.content.items() if k != RECEIPT_KEY})
            reply.content = stripped
            good.append(reply)
        return good, per_node

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The inner strategy's messages, each with its node's manifest and the encoder."""
        return self._decorate(
            server_round, self.inner.configure_train(server_round, arrays, config, grid)
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate only replies whose receipts verify."""
        good, per_node = self._screen(server_round, replies, "train")
        self._round(server_round).train = per_node
        return self.inner.aggregate_train(server_round, good)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluation messages reuse the round's manifests."""
        msgs = self.inner.configure_evaluate(server_round, arrays, config, grid)
        return self._decorate(server_round, msgs)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Aggregate verified evaluation replies; keep each node's metrics."""
        good, per_node = self._screen(server_round, replies, "evaluate")
        rlog = self._round(server_round)
        rlog.evaluate = per_node
        result = self.inner.aggregate_evaluate(server_round, good)
        self._configs.release(server_round)
        if self.on_round is not None:
            self.on_round(rlog)
        return result

    def as_dict(self) -> dict[int, dict[str, Any]]:
        """Round logs as plain data (for the job result)."""
        return {
            r: {
                "train": lg.train,
                "evaluate": lg.evaluate,
                "failures": lg.failures,
                "skipped": lg.skipped,
                "manifest_roots": lg.manifest_roots,
                "merchants": lg.merchants,
            }
            for r, lg in sorted(self.rounds.items())
        }
