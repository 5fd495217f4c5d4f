"""Managed processes: a stop takes the children too, and never signals a reaped pid again."""

from __future__ import annotations

import time
from pathlib import Path

from federation.deploy import ManagedProcess, descendants
from federation.deploy._procs import _alive


def test_stop_ends_the_whole_tree_and_is_idempotent(tmp_path: Path) -> None:
    """A child that detaches into its own session is found from /proc and stopped too."""
    proc = ManagedProcess(
        "tree", ["sh", "-c", "setsid sleep 60 & sleep 60 & wait"], tmp_path / "tree.log"
    ).start()
    deadline = time.monotonic() + 10
    while len(descendants(proc.pid or 0)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = descendants(proc.pid or 0)
    assert len(tree) >= 2
    proc.stop(timeout=5)
    assert not proc.running
    assert not [p for p in tree if _alive(p)]
    proc.stop()  # a second stop signals nothing (the pid may belong to someone else now)
    proc.kill()
