"""Long-running processes of the deployment: start, wait until serving, stop cleanly.

Each process gets its own session (process group) so that stopping it also stops
what it spawned (``flwr-serverapp``/``flwr-clientapp`` children); its output goes
to a log file. Nothing here is killed by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._errors import ProcessError

__all__ = [
    "ManagedProcess",
    "descendants",
    "serve_until_signal",
    "wait_port",
    "free_port",
    "privacy_env",
    "flower_bin",
]


def privacy_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for Flower processes: no telemetry, no update check."""
    env = dict(os.environ)
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env.pop("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", None)
    # Flower starts its own helpers (flower-superexec, flwr-serverapp) by name.
    import sys

    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.update(extra or {})
    return env


def flower_bin(name: str) -> str:
    """The path of a Flower console script next to this Python (the venv's ``bin``)."""
    import sys

    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on ``host`` (tests, benchmarks)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` accepts a TCP connection within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from ``/proc``), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class ManagedProcess:
    """One child process in its own session, logging to ``log_path``.

    Parameters
    ----------
    name : str
        For messages (``superlink``, ``supernode-isv-a``, ``proxy``).
    argv : Sequence[str]
    log_path : Path
    env : Mapping[str, str] | None, default :func:`privacy_env`
    cwd : Path | None, default None
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = dict(env) if env is not None else privacy_env()
        self._cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned: list[int] = []

    def start(self) -> ManagedProcess:
        """Start it (a no-op when it is running)."""
        if self.running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ProcessError(f"cannot start {self.name}: {exc}") from exc
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int | None:
        """The process id (``None`` before start)."""
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        """Whether it has started and not exited."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of its log."""
        try:
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_serving(self, host: str, port: int, timeout: float = 60.0) -> None:
        """Wait until it accepts TCP on ``host:port``; ``ProcessError`` if it dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ProcessError(f"{self.name} exited:\n{self.log_tail()}")
            if wait_port(host, port, 0.5):
                return
        raise ProcessError(f"{self.name} not serving on {host}:{port} after {timeout} s")

    def kill(self) -> None:
        """SIGKILL it and everything it spawned at once (fault injection)."""
        if self.proc is None or self.proc.poll() is not None:
            return  # never signal a pid that may have been reused
        tree = descendants(self.proc.pid)
        _signal_all([self.proc.pid, *tree], signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM it and its descendants, then SIGKILL what is left after ``timeout``."""
        if self.proc is None:
            return
        if not self.running:
            return  # already exited and reaped: its pid may belong to someone else now
        # Flower detaches some helpers into sessions of their own (flower-superexec),
        # so the tree is collected from /proc rather than by process group.
        tree = descendants(self.proc.pid)
        _signal_all([self.proc.pid, *tree], signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        deadline = time.monotonic() + timeout
        while any(_alive(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        _signal_all([p for p in tree if _alive(p)], signal.SIGKILL)
        self.spawned = tree


def serve_until_signal(procs: Sequence[ManagedProcess], poll: float = 0.5) -> bool:
    """Wait until SIGTERM/SIGINT or until one of ``procs`` exits, then stop them all.

    Returns
    -------
    bool
        ``True`` when a signal asked for the stop, ``False`` when a process exited.
    """
    stop = {"now": False}

    def _stop(signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop["now"] and all(p.running for p in procs):
            time.sleep(poll)
    finally:
        for p in reversed(procs):
            p.stop()
    return stop["now"]
