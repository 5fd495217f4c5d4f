"""What every benchmark shares: the table row, its comparison, timers and ONE exit policy.

Every ``python -m bench.<name>`` measures fedgate against a named peer in the
same run, prints a Markdown table, and ends by :func:`finish`:

* exit **0** — every correctness check passed and every row with a target met it;
* exit **1** — a correctness check failed (the numbers of that run mean nothing;
  :class:`BenchFailure` or a ``SystemExit`` with the reason), **or** a target was
  missed; each missed row is marked in the table and listed on stderr;
* exit **2** — bad command-line arguments (``argparse``).

``--no-fail`` (:func:`add_exit_option`) reports missed targets without failing:
for exploratory runs and for sizes the targets were not set for. A correctness
failure exits 1 with or without it.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

__all__ = [
    "BenchFailure",
    "Compare",
    "Row",
    "add_exit_option",
    "best_of",
    "finish",
    "gc_off",
    "missed",
    "module_at",
    "proc_status",
    "require",
    "timed",
]

Compare = Literal["speedup", "ratio", "diff"]
"""How a row's value is held against its peer's (:attr:`Row.versus`):

* ``"speedup"`` — how many times better fedgate is: peer ÷ value for costs,
  value ÷ peer for rates (a unit ending in ``/s``);
* ``"ratio"`` — value ÷ peer (a cost relative to the peer's);
* ``"diff"`` — value − peer (scores such as AUC).
"""


class BenchFailure(Exception):
    """A correctness check failed: the numbers of this run mean nothing."""


def require(ok: bool, message: str) -> None:
    """Raise :class:`BenchFailure` unless ``ok`` (not ``assert``: ``-O`` must not skip it)."""
    if not ok:
        raise BenchFailure(message)


@dataclass(frozen=True, slots=True)
class Row:
    """One measured line of a benchmark table.

    Parameters
    ----------
    metric : str
        What was measured.
    value : float
        fedgate's figure, in ``unit``.
    unit : str
    peer : str, default "—"
        The named peer measured in the same run.
    peer_value : float | None, default None
        The peer's figure (same unit); ``None`` without a peer.
    target : str, default ""
        The target, as printed.
    met : bool | None, default None
        Whether the target was met; ``None`` for a row without a target.
    section : str, default ""
        The table section (benchmarks with several).
    compare : Compare, default "speedup"
        How :attr:`versus` holds the value against the peer's.
    ratio_override : float | None, default None
        A :attr:`versus` measured otherwise (e.g. the median of per-round ratios).
    """

    metric: str
    value: float
    unit: str
    peer: str = "—"
    peer_value: float | None = None
    target: str = ""
    met: bool | None = None
    section: str = ""
    compare: Compare = "speedup"
    ratio_override: float | None = None

    @property
    def versus(self) -> float | None:
        """The value against the peer's (see :data:`Compare`); ``None`` without a peer."""
        if self.ratio_override is not None:
            return self.ratio_override
        peer = self.peer_value
        if peer is None or not math.isfinite(peer):
            return None
        if self.compare == "diff":
            return self.value - peer
        if self.compare == "ratio":
            return self.value / peer if peer else None
        if peer == 0 or self.value == 0:
            return None
        return self.value / peer if self.unit.endswith("/s") else peer / self.value

    def __repr__(self) -> str:
        vs = self.versus
        shown = "" if vs is None else (
            f", {vs:+.4f} vs {self.peer}" if self.compare == "diff" else f", {vs:.2f}x {self.peer}"
        )
        flag = "" if self.met is None else (" ok" if self.met else " MISSED")
        where = f"{self.section}: " if self.section else ""
        return f"Row({where}{self.metric} = {self.value:,.4f} {self.unit}{shown}{flag})"


def missed(rows: Iterable[Row]) -> list[str]:
    """The metrics whose target was missed."""
    return [r.metric for r in rows if r.met is False]


@contextmanager
def gc_off() -> Iterator[None]:
    """Collect first, then keep the collector out of the timed region."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def best_of(fn: Callable[[], Any], repeat: int = 3, *, no_gc: bool = False) -> tuple[float, Any]:
    """The fastest of ``repeat`` calls and the last call's result.

    Parameters
    ----------
    fn : Callable[[], Any]
    repeat : int, default 3
    no_gc : bool, default False
        Collect before each call and keep the collector off while it runs.
    """
    best, out = float("inf"), None
    for _ in range(repeat):
        if no_gc:
            with gc_off():
                seconds, out = timed(fn)
        else:
            seconds, out = timed(fn)
        best = min(best, seconds)
    return best, out


def add_exit_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--no-fail`` (report missed targets, exit 0) to a benchmark's parser."""
    parser.add_argument(
        "--no-fail",
        action="store_true",
        help="report missed targets without exiting 1 (a failed correctness check still does)",
    )


def finish(rows: Iterable[Row], *, no_fail: bool = False) -> int:
    """The exit code of a run whose correctness checks passed: 1 on a missed target.

    Missed targets are listed on stderr either way; ``no_fail`` makes them exit 0.
    """
    gone = missed(rows)
    if not gone:
        return 0
    print(f"✘ targets missed: {', '.join(gone)}", file=sys.stderr)
    return 0 if no_fail else 1


def proc_status(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``, …) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def module_at(rev: str, path: str, workdir: Path, name: str) -> ModuleType:
    """The module ``path`` (repository-relative) as it was at git revision ``rev``.

    Written to ``workdir`` and loaded as ``name`` (a dotted name inside a package lets
    its relative imports resolve), so a bench can run an old implementation beside
    the working tree's in the same way.
    """
    text = subprocess.run(
        ["git", "show", f"{rev}:{path}"], check=True, capture_output=True, text=True
    ).stdout
    src = workdir / f"_old_{Path(path).name}"
    src.write_text(text, "utf-8")
    spec = importlib.util.spec_from_file_location(name, src)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} at {rev}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
