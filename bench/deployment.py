"""Deployment benchmark (issue 11 §3): seconds per round on a real SuperLink + 3 SuperNodes.

Run ``python -m bench.deployment`` (a few minutes on 2 cores; ``--rounds`` to change).

One topology on loopback, the one the integration test and ``docker/compose.yaml``
use: SuperLink with TLS and SuperNode authentication, the Fleet-only nginx proxy,
three SuperNodes with the synthetic three-ISV world of the Flower-app tests (60
merchants each), every bundle signed and checked against the nodes' trusted
entities. Rows, each one job of ``--rounds`` training rounds, timed per round by
the ServerApp itself (the wall time from one round's end to the next's):

* **peer — bare Flower app, Flower defaults**: a ServerApp running Flower's own
  ``FedAvg`` and a ClientApp that trains the *same* tiny model (``g_erp``
  logistic on 14 inputs, one epoch) on random rows of the same size, SuperNodes in
  Flower's default ``subprocess`` isolation (a fresh ClientApp process per message);
* **fedgate, subprocess isolation**: fedgate's apps (signed cohort manifests,
  egress guard, usage receipts verified and written to the ledger, train +
  evaluate every round), Flower's default isolation;
* **fedgate, process isolation (default)**: the same with ``fedgate node run``'s
  default, a warm ClientApp executor per node;
* **fedgate + SecAgg+**: the default setting with secure aggregation.

The ratio column divides each row's median seconds per round by the peer's;
the target is fedgate (default) ≤ 0.5×. Results are checked for sanity (every
round reported, AUC in [0, 1], receipts for every node and round), so a fast wrong
run fails. Timings on a shared machine are noisy: compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from ._common import Row, add_exit_option, finish, require

ROOT = Path(__file__).resolve().parents[1]
TIMES_KEY = "bench-times"

# --------------------------------------------------------------------------------------------
# The peer: a bare Flower app with the same tiny model (loaded by the SuperLink and nodes).
# --------------------------------------------------------------------------------------------
N_INPUTS, N_ROWS = 14, 48


def _bare_server() -> Any:
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    from federation.models import build_g_erp, get_weights

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = json.loads(Path(str(context.run_config["job-file"])).read_text())
        times: list[float] = [time.perf_counter()]

        class Timed(FedAvg):
            def aggregate_evaluate(self, server_round: int, replies: Any) -> Any:
                out = super().aggregate_evaluate(server_round, replies)
                times.append(time.perf_counter())
                return out

        model = build_g_erp("logistic", N_INPUTS)
        arrays = ArrayRecord([w for w in get_weights(model)])  # type: ignore[arg-type]
        while len(list(grid.get_node_ids())) < 3:
            time.sleep(0.2)
        Timed(fraction_evaluate=1.0).start(grid, arrays, num_rounds=int(cfg["rounds"]))
        Path(cfg[TIMES_KEY]).write_text(json.dumps(times[1:]))

    return app


def _bare_client() -> Any:
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        import numpy as np
        import torch

        from federation.models import build_g_erp, get_weights, set_weights, train_local

        torch.set_num_threads(1)
        model = build_g_erp("logistic", N_INPUTS)
        set_weights(model, msg.content["arrays"].to_numpy_ndarrays())
        rng = np.random.default_rng(int(context.node_id) % 2**32)
        X = rng.normal(size=(N_ROWS, N_INPUTS)).astype(np.float32)
        y = (rng.uniform(size=N_ROWS) < 0.3).astype(np.float32)
        loss = train_local(model, X, y, epochs=1, batch_size=16, lr=0.1, proximal_mu=0.0, seed=0)
        return Message(
            RecordDict({
                "arrays": ArrayRecord([np.asarray(w) for w in get_weights(model)]),
                "metrics": MetricRecord({"num-examples": N_ROWS, "train-loss": float(loss)}),
            }),
            reply_to=msg,
        )

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return Message(
            RecordDict({"metrics": MetricRecord({"num-examples": N_ROWS, "loss": 0.0})}),
            reply_to=msg,
        )

    return app


bare_server_app = _bare_server()
bare_client_app = _bare_client()


def _fedgate_timed_server() -> Any:
    """fedgate's own ServerApp, with its per-round callback writing wall times to a file."""
    from flwr.serverapp import Grid, ServerApp

    from federation.apps.server_app import make_server_app

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = json.loads(Path(str(context.run_config["job-file"])).read_text())
        times: list[float] = []
        server = make_server_app(
            run_config=cfg, on_round=lambda _log: times.append(time.perf_counter())
        )
        server(grid, context)
        Path(cfg[TIMES_KEY]).write_text(json.dumps(times))

    return app


fedgate_server_app = _fedgate_timed_server()

_ = ConfigRecord  # re-exported types keep the apps' imports explicit


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------
def _per_round(path: Path) -> list[float]:
    stamps = json.loads(path.read_text())
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    add_exit_option(parser)
    args = parser.parse_args(argv)
    os.environ["PYTHONPATH"] = f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    sys.path.insert(0, str(ROOT))

    from federation.deploy import (
        LocalFederation,
        build_fab,
        fab_pyproject,
        load_node_settings,
        sign_fab,
        store_signed_fab,
    )
    from gateway.db import make_engine, make_sessionmaker
    from gateway.migrate import ensure_schema
    from tests.federation._flworld import grant_consents, make_world

    tmp = Path(tempfile.mkdtemp(prefix="fedgate-bench-deploy-")) if args.out is None else args.out
    db = f"sqlite:///{tmp / 'platform.db'}"
    tmp.mkdir(parents=True, exist_ok=True)
    ensure_schema(db)
    sessions = make_sessionmaker(make_engine(db))
    world = make_world(tmp / "world")
    grant_consents(world, sessions)
    fed = LocalFederation(tmp / "fed").up()
    timings: list[tuple[str, list[float], str]] = []
    try:
        def fab_hash(server: str, client: str, name: str) -> tuple[str, str]:
            fab = build_fab(fab_pyproject(serverapp=server, clientapp=client, name=name))
            app_id = f"@fedgate/{name}"
            digest = store_signed_fab(
                fed.layout.database, fab, sign_fab(fab, fed.layout.release_key), app_id=app_id
            )
            return digest, app_id

        bare = fab_hash(
            "bench.deployment:bare_server_app", "bench.deployment:bare_client_app", "bench-bare"
        )
        timed = fab_hash(
            "bench.deployment:fedgate_server_app", "federation.apps.client_app:app", "bench-fedgate"
        )
        keys_onboarded = False

        def nodes(isolation: str) -> None:
            nonlocal keys_onboarded
            for isv in list(fed.nodes):
                fed.stop_node(isv)
            fed.isolation = isolation
            for node in world.nodes:
                toml = fed.node_toml(node)
                if not keys_onboarded:
                    fed.onboard(load_node_settings(toml))
                fed.start_node(toml)
            keys_onboarded = True

        def job(name: str, fab: tuple[str, str], **extra: Any) -> list[float]:
            from federation.deploy import run_deployed

            times = tmp / f"{name}.times.json"
            cfg = {
                **world.run_config(
                    job_id=name, db_url=db, out=name, categories="cash_and_debt,margins"
                ),
                "rounds": args.rounds, "min-nodes": 3, "timeout-s": 300, TIMES_KEY: str(times),
                **extra,
            }
            from dataclasses import replace

            runtime = replace(fed.runtime(timeout=1800), fab_hash=fab[0], app_id=fab[1])
            state = run_deployed(cfg, runtime)
            if not state.succeeded:
                raise SystemExit(f"{name}: run failed: {state.details}")
            per = _per_round(times)
            if fab == timed:
                doc = json.loads((Path(str(cfg["out-dir"])) / "result.json").read_text())
                trains = [r for r in doc["receipts"] if r["action"] == "train"]
                require(doc["status"] == "succeeded", f"{name}: {doc.get('failures')}")
                require(len(doc["rounds"]) == args.rounds, f"{name}: {len(doc['rounds'])} rounds")
                require(len(trains) == 3 * args.rounds, f"{name}: {len(trains)} train receipts")
            return per

        nodes("subprocess")
        t = time.perf_counter()
        timings.append(("bare Flower app, Flower defaults (subprocess isolation) — peer",
                        job("bare-sub", bare), ""))
        timings.append(("fedgate apps, subprocess isolation", job("fg-sub", timed), ""))
        nodes("process")
        timings.append(("fedgate apps, process isolation + warm executor (default)",
                        job("fg-proc", timed), "≤ 0.5×"))
        timings.append(("fedgate apps + SecAgg+, default isolation",
                        job("fg-secagg", timed, secagg=True), ""))
        total = time.perf_counter() - t
    finally:
        stray = fed.down()
    peer = statistics.median(timings[0][1])
    rows = [
        Row(name, statistics.median(per), "s/round", "bare Flower app", peer, target,
            (statistics.median(per) / peer <= 0.5) if target else None, compare="ratio")
        for name, per, target in timings
    ]
    print(f"\n### Deployment — `python -m bench.deployment --rounds {args.rounds}` "
          f"(3 SuperNodes on loopback; {total:.0f} s)\n")
    print("| setting | s/round (median) | rounds timed | vs peer | target |")
    print("|---|---:|---:|---:|---|")
    for row, (_, per, _) in zip(rows, timings, strict=True):
        mark = "" if row.met is None else f"{row.target} {'✔' if row.met else '✘'}"
        print(f"| {row.metric} | {row.value:.2f} | {len(per)} | {row.versus:.2f}× | {mark} |")
    sec = rows[3].value - rows[2].value
    print(f"\nSecAgg+ cost per round: {sec:+.2f} s over the default setting.")
    if stray:
        print(f"stray processes after shutdown: {stray}")
        return 1
    return finish(rows, no_fail=args.no_fail)


if __name__ == "__main__":
    raise SystemExit(main())
