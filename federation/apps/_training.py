"""A training job: identify, statistics, then the training rounds and the saved model.

The rounds run either through :class:`ConsentedStrategy` around FedAvg/FedProx
(each round's updates evaluated on the nodes' hold-out; :class:`BestRound`
keeps the best round's model) or, with three or more nodes by default, under
SecAgg+ (:mod:`._secagg`; it masks only the updates, the round's global model the
nodes validate is unmasked, so the best round is kept there too). Either way every
node gets its own consent manifest per round (:meth:`Job.job_config`) and every
reply's receipt is recorded (:meth:`Job.record_reply_receipt`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp.strategy import FedAvg, FedProx, Strategy

from .._errors import FederationError
from ..bestround import BestRound
from ..features import BinEncoder
from ..models import build_g_erp, get_weights
from ..standardise import StandardEncoder
from ._identify import identify
from ._keys import ARRAYS_KEY
from ._lineage import save_model
from ._outputs import MODEL_FILE
from ._settings import secagg_parameters
from ._statistics import statistics
from ._strategy import ConsentedStrategy
from ._wire import arrays_record, weights_record

if TYPE_CHECKING:
    from ._job import Job

__all__ = ["train"]

Rounds = dict[int, dict[str, Any]]
ManifestFor = Callable[[int, str], tuple[ConfigRecord, str, int]]
Prepare = Callable[[int, list[str]], None]


def train(job: Job) -> dict[str, Any]:
    """Statistics, then the training rounds; returns the result document."""
    s, spec = job.settings, job.settings.spec
    identify(job)
    encoder = statistics(job)
    # Seeded so a job's starting point, and hence its result, is reproducible.
    with torch.random.fork_rng():
        torch.manual_seed(s.seed)
        model = build_g_erp(spec.arch, encoder.n_outputs, hidden=spec.hidden)
    initial = weights_record(get_weights(model))
    roots: dict[tuple[int, str], str] = {}

    def manifest_for(server_round: int, isv: str) -> tuple[ConfigRecord, str, int]:
        cfg, root, count = job.job_config(server_round, isv, spec.purpose)
        roots[(server_round, isv)] = root
        return cfg, root, count

    def prepare(server_round: int, isvs: list[str]) -> None:
        job.prepare_configs(server_round, isvs, spec.purpose)

    use_secagg = s.secagg == "on" or (s.secagg == "auto" and len(job.nodes) >= 3)
    if use_secagg:
        final, rounds = _rounds_secagg(job, encoder, initial, manifest_for, roots, prepare)
    else:
        final, rounds = _rounds_plain(job, encoder, initial, manifest_for, roots, prepare)
    for r in rounds.values():
        job.failures.extend(f"round: {f}" for f in r["failures"])
    save_model(job, final, encoder, rounds)
    return {
        "rounds": {str(r): v for r, v in rounds.items()},
        "model_path": str(s.out_dir / MODEL_FILE),
        "best_round": job.best_round,
    }


def _strategy(job: Job) -> Strategy:
    """FedAvg or FedProx over exactly the identified nodes."""
    spec, n = job.settings.spec, len(job.nodes)
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


def _rounds_plain(
    job: Job,
    encoder: BinEncoder | StandardEncoder,
    initial: ArrayRecord,
    manifest_for: ManifestFor,
    roots: dict[tuple[int, str], str],
    prepare: Prepare | None = None,
) -> tuple[ArrayRecord, Rounds]:
    """FedAvg/FedProx through :class:`ConsentedStrategy`; the best hold-out round is kept."""
    s, spec = job.settings, job.settings.spec

    def record(reply: Message, isv: str, server_round: int, action: str) -> str | None:
        root = roots[(server_round, isv)]
        return job.record_reply_receipt(reply, isv, server_round, action, root)

    inner = _strategy(job)
    job.aggregation = {"strategy": "fedavg", "secure": "none"}
    if isinstance(inner, FedProx):
        job.aggregation = {
            "strategy": "fedprox",
            "proximal_mu": float(inner.proximal_mu),
            "secure": "none",
        }
    wrapper = ConsentedStrategy(
        inner,
        nodes=job.nodes,
        manifest_for=manifest_for,
        check_receipt=record,
        encoder=arrays_record(encoder.to_arrays()),
        on_round=job.on_round,
        check_refusal=job.check_refusal,
        prepare=prepare,
    )
    keeper = BestRound()  # the saved model is the best round on the nodes' hold-out
    result = wrapper.start(job.grid, initial, num_rounds=spec.rounds, timeout=s.timeout,
                           evaluate_fn=keeper.capture)
    rounds = wrapper.as_dict()
    last = result.arrays if result.arrays is not None else initial
    final, job.best_round, _ = keeper.select(rounds, last)
    return final, rounds


def _rounds_secagg(
    job: Job,
    encoder: BinEncoder | StandardEncoder,
    initial: ArrayRecord,
    manifest_for: ManifestFor,
    roots: dict[tuple[int, str], str],
    prepare: Prepare | None = None,
) -> tuple[ArrayRecord, Rounds]:
    """The training rounds under SecAgg+ (Flower's legacy workflow, see ``secagg``).

    FedProx aggregates like FedAvg; its proximal term is applied at each node
    (the job record carries ``proximal-mu``), so it runs under SecAgg+ unchanged.
    The nodes' signed train receipts must each say the update was masked, or the
    job fails with ``SECAGG_NOT_APPLIED``.
    """
    from ._secagg import run_secagg_rounds

    s, spec = job.settings, job.settings.spec
    shares, threshold = secagg_parameters(len(job.nodes))
    num_shares = s.secagg_num_shares or shares
    reconstruction = s.secagg_threshold or threshold
    if job.context is None:
        raise FederationError("SecAgg+ needs the ServerApp context", code="BAD_CONFIG")
    keeper = BestRound()  # evaluation is not masked: keep the best round here too
    weights, logs, _ = run_secagg_rounds(
        job.grid,
        job.context,
        rounds=spec.rounds,
        initial=initial.to_numpy_ndarrays(),
        nodes=job.nodes,
        manifest_for=manifest_for,
        check_token=lambda tok, isv, rnd, act: job.record_receipt_token(
            tok, isv, rnd, act, roots[(rnd, isv)]
        ),
        encoder=encoder.to_arrays(),
        on_round=job.on_round,
        num_shares=num_shares,
        reconstruction_threshold=reconstruction,
        timeout=s.timeout,
        check_refusal=job.check_refusal,
        evaluate_fn=keeper.capture,
        prepare=prepare,
    )
    rounds: Rounds = {
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
    # Evidence the nodes signed, not the server's word: each node's train receipt
    # says whether its update left through SecAgg+'s mod.
    signed: dict[str, list[str]] = {}
    for rc in job.receipts:
        if rc["action"] == "train" and rc.get("aggregation") == "secagg+":
            signed.setdefault(str(rc["round"]), []).append(rc["data_provider"])
    job.aggregation = {
        "strategy": spec.strategy,
        "secure": "secagg+",
        "num_shares": num_shares,
        "reconstruction_threshold": reconstruction,
        "node_signed_rounds": {r: sorted(v) for r, v in sorted(signed.items())},
    }
    if spec.strategy == "fedprox":
        job.aggregation["proximal_mu"] = float(spec.proximal_mu)
    unsigned = [
        r for r in range(1, spec.rounds + 1)
        if sorted(signed.get(str(r), [])) != sorted(rounds.get(r, {}).get("train", {}))
    ]
    if unsigned:
        job.failures.append(
            f"SECAGG_NOT_APPLIED: in rounds {unsigned} some node's signed receipt "
            "does not say its update was masked"
        )
    final, job.best_round, _ = keeper.select(rounds, weights_record(weights))
    return final, rounds
