"""The platform's ServerApp: the Flower entry point of every job.

``fedgate fl run`` → :func:`federation.run_job` → this app's ``main``, which
reads the run config once (:class:`ServerSettings`) and runs a :class:`Job`.
Each phase of a job has its own module:

1. **identify** (:mod:`._identify`) — each node signs a fresh nonce; only nodes
   whose signature verifies with a registered ISV key take part;
2. **statistics round** (:mod:`._statistics`, round 0) — nodes return mergeable
   quantile sketches of their consented features; the merged sketch gives the bin edges;
3. **training rounds** 1..R (:mod:`._training`) — FedAvg or FedProx through
   :class:`ConsentedStrategy` (the nodes' hold-out evaluation picks the best
   round, :mod:`federation.bestround`), or SecAgg+ (:mod:`._secagg`); every node
   gets its own cohort manifest per round, rebuilt from live consent
   (:meth:`Job.job_config`);
4. every reply's usage receipt is verified with that node's key and written to
   the ledger as ``data.used`` (:mod:`federation.receipt_ledger`); in the same
   transaction, the first verified receipt of each node and round counts one use
   of every consent in that round's manifest (``consent.count_round_uses``), so a
   consent's frequency limit takes it out of later manifests;
5. the model is saved with its lineage (:mod:`._lineage`: job, rounds, receipts,
   manifest roots, ε).

A scoring job (``mode = "score"``, :mod:`._scoring`) loads a saved model and asks
each node for g-scores under ``credit_scoring`` manifests.

The cohort comes from consent's cohort check (:class:`federation.cohort.ConsentCohortSource`),
which verifies every artefact's signature with the consent manager's public key
(``consent-key``, a PEM path). What goes on the wire is in :mod:`._wire`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from ..cohort import CohortSource
from ..receipt_ledger import DATA_USED, ExpectedReceipt, record_receipt
from ._cohort import cohort_source_from_run_config, consent_cohort_source
from ._job import Job
from ._keyfiles import load_public_key
from ._labels import LabelLookup
from ._outputs import LINEAGE_FILE, MODEL_FILE, RESULT_FILE, SCORES_FILE
from ._settings import ServerSettings, secagg_parameters
from ._strategy import RoundLog
from ._wire import job_record

__all__ = [
    "ServerSettings",
    "CohortSource",
    "Job",
    "make_server_app",
    "consent_cohort_source",
    "cohort_source_from_run_config",
    "load_public_key",
    "job_record",
    "ExpectedReceipt",
    "LabelLookup",
    "record_receipt",
    "secagg_parameters",
    "DATA_USED",
    "app",
    "RESULT_FILE",
    "MODEL_FILE",
    "LINEAGE_FILE",
    "SCORES_FILE",
]


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
        Job(
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
