"""Quiet job output: Flower and Ray logs to a file in the job directory, one bar per phase.

:func:`job_output` points the process's stdout and stderr file descriptors (so
Ray's worker processes, which inherit them, too) at ``<job dir>/job.log`` for
the duration of a job, and hands back a :class:`JobProgress` that draws on the
terminal through copies of the original descriptors: one progress bar per
phase (statistics, training rounds, scoring). ``verbose=True`` leaves every
stream alone and draws no bars.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["JobProgress", "job_output", "LOG_FILE"]

LOG_FILE = "job.log"


class JobProgress:
    """Phase bars on the terminal; a no-op console when ``progress`` is ``None``."""

    def __init__(self, console: Console, progress: Progress | None) -> None:
        self.console = console
        self._progress = progress
        self._tasks: dict[str, Any] = {}
        self._current: str | None = None

    def phase(self, name: str, total: int | None = None) -> None:
        """Start phase ``name`` (``total`` steps; ``None`` for an open-ended one)."""
        if self._progress is None:
            return
        if self._current is not None:
            self.finish(self._current)
        self._tasks[name] = self._progress.add_task(name, total=total)
        self._current = name

    def advance(self, name: str, note: str = "") -> None:
        """One step of phase ``name`` (started if need be)."""
        if self._progress is None:
            return
        if name not in self._tasks:
            self.phase(name)
        self._progress.update(self._tasks[name], advance=1, description=f"{name} {note}".strip())

    def finish(self, name: str) -> None:
        """Mark phase ``name`` complete."""
        if self._progress is None or name not in self._tasks:
            return
        task = self._tasks[name]
        total = self._progress.tasks[task].total
        self._progress.update(task, completed=total if total is not None else 1,
                              total=total if total is not None else 1)


@contextlib.contextmanager
def job_output(out_dir: Path, *, verbose: bool) -> Iterator[JobProgress]:
    """Redirect the job's logs to ``<out_dir>/job.log`` and draw phase bars (unless verbose)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if verbose:
        yield JobProgress(Console(), None)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    log_fd = os.open(out_dir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    term = os.fdopen(os.dup(saved_out), "w", buffering=1)
    console = Console(file=term)
    # Python-level handlers that hold the old stream objects keep writing to them:
    # point every StreamHandler of the root and Flower loggers at the file too.
    log_stream = os.fdopen(os.dup(log_fd), "w", buffering=1)
    moved: list[tuple[logging.StreamHandler[Any], Any]] = []
    for name in ("", "flwr", "ray"):
        for h in logging.getLogger(name).handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                moved.append((h, h.setStream(log_stream)))
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        console=console, transient=False)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    try:
        with progress:
            yield JobProgress(console, progress)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for h, old in moved:
            h.setStream(old)
        for fd in (saved_out, saved_err, log_fd):
            os.close(fd)
        log_stream.close()
        term.flush()
        term.close()
