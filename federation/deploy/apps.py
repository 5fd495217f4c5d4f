"""The ServerApp entry of fedgate's app bundle on the deployment runtime.

It is fedgate's one ServerApp (:func:`federation.apps.server_app.make_server_app`),
given its run config from the job file the platform wrote (run-config key
``job-file``): a bundle's run config may only override keys the bundle declares,
and a signed bundle cannot change per job, so the job's settings travel as a file
on the platform host, where the ServerApp runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

__all__ = ["server_app", "JOB_FILE_KEY"]

JOB_FILE_KEY = "job-file"

server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    from ..apps.server_app import make_server_app

    path = str(context.run_config.get(JOB_FILE_KEY, ""))
    if not path:
        raise ValueError(f"run config lacks {JOB_FILE_KEY!r} (the platform's job file)")
    config = json.loads(Path(path).read_text("utf-8"))
    make_server_app(run_config=config)(grid, context)
