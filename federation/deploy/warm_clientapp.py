"""A long-lived ClientApp executor for a SuperNode in ``process`` isolation.

With ``--isolation subprocess`` (Flower's default) every message a node receives
starts a fresh ``flwr-clientapp`` process, which imports torch, Opacus, pandas and
fedgate again (seconds per message on a small machine). With ``--isolation
process`` the SuperNode runs no ClientApp itself; an executor claims tasks from
its local Runtime API (``AcquireTask``). This module is that executor: it imports
the ClientApp's dependencies once, then handles each task in-process with the
same steps as Flower's ``flwr-clientapp`` (pull the task input, install the FAB,
load the ClientApp it names, run it, push the reply and the task status).

What stays the same: the SuperNode verifies each FAB against the node's trusted
entities before a task exists, the ClientApp is loaded from the FAB's own
component reference, nothing is installed at run time, and one task runs at a
time. What changes: tasks share one Python process, so module-level state of the
ClientApp persists between messages (fedgate's ClientApp keeps its state in the
node's state directory, never in module globals).

Run: ``python -m federation.deploy.warm_clientapp --runtime-api-address
127.0.0.1:9094 --parent-pid <supernode pid>`` (``fedgate node run`` does it).
"""

from __future__ import annotations

import argparse
import logging
import time
from logging import DEBUG, ERROR, INFO

__all__ = ["run_task", "main"]

POLL_SECONDS = 0.05


def _warm_imports() -> None:
    """Import what every ClientApp message needs, once."""
    import opacus  # noqa: F401
    import pandas  # noqa: F401
    import torch  # noqa: F401

    import federation.apps.client_app  # noqa: F401


def run_task(runtime_api_address: str, token: str) -> None:
    """Handle one task in this process (Flower's ``run_clientapp`` without process exit)."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.cli.install import install_from_fab
    from flwr.clientapp.client_app import LoadClientAppError
    from flwr.clientapp.utils import get_load_client_app_fn
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore import log
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    retry_invoker = make_simple_http_retry_invoker()
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address,
        insecure=True,  # the SuperNode's Runtime API on loopback
        root_certificates=None,
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token),
        ],
        retry_invoker=retry_invoker,
    )
    heartbeat = None
    message = reply = context = None
    sub_status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
    try:
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        heartbeat.start()
        message, context, run, fab = pull_task_input(client)
        install_from_fab(fab.content, skip_prompt=True)
        load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
        app = load(run.fab_id, run.fab_version, fab.hash_str)
        reply = app(message=message, context=context)
        sub_status, details = SubStatus.COMPLETED, ""
    except Exception as ex:  # noqa: BLE001 - reported to the SuperNode like flwr-clientapp does
        code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        reason = str(type(ex)) + ":<'" + str(ex) + "'>"
        if isinstance(ex, LoadClientAppError):
            code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION
            reason = "An exception was raised when attempting to load `ClientApp`"
        log(ERROR, "ClientApp raised an exception", exc_info=ex)
        details = reason
        if message is not None:
            reply = Message(Error(code=code, reason=reason), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        except Exception as ex:  # noqa: BLE001
            log(ERROR, "Failed to push reply message", exc_info=ex)
        retry_invoker.max_tries = 1
        try:
            push_task_output(client=client, context=context, sub_status=sub_status, details=details)
        except Exception as ex:  # noqa: BLE001
            log(ERROR, "Failed to push task output", exc_info=ex)
        if heartbeat is not None and heartbeat.is_running:
            heartbeat.stop()
        client.close()
        log(DEBUG, "task done: %s", sub_status)


def main(argv: list[str] | None = None) -> None:
    """Claim ClientApp tasks from the SuperNode's Runtime API and run them, forever."""
    parser = argparse.ArgumentParser(description="fedgate warm ClientApp executor")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)

    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore import log
    from flwr.supercore.app_utils import start_parent_process_monitor
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    if args.parent_pid is not None:
        start_parent_process_monitor(args.parent_pid)
    # The node's own log (refusals with their reasons, never sent to the platform) goes to
    # this process's stderr, which fedgate node run keeps in the executor's log file.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("fedgate.node").addHandler(handler)
    logging.getLogger("fedgate.node").setLevel(logging.INFO)
    _warm_imports()
    client = RuntimeHttpClient.from_server_address(
        server_address=args.runtime_api_address,
        insecure=True,
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    log(INFO, "fedgate warm ClientApp executor on %s", args.runtime_api_address)
    try:
        while True:
            res = client.AcquireTask(
                AcquireTaskRequest(supported_task_types=[str(TaskType.CLIENT_APP)])
            )
            if res.HasField("task") and res.token:
                run_task(args.runtime_api_address, res.token)
                continue
            time.sleep(POLL_SECONDS)
    finally:
        client.close()


if __name__ == "__main__":
    main()
