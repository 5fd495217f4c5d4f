"""The node's approval register: memory and time to register and to match, old vs new.

Issue 11: every Ray actor serving a node parsed the whole JSON-lines register
into a dict of :class:`~federation.node.Approval` (2.5 kB each). This bench
registers ``--n`` approvals and then matches ``--n`` manifest entries (all
approved) against them, each step in a **fresh process**, so the RSS is what a
new actor pays:

* ``new``: :class:`federation.node.ApprovalRegister` (SQLite, chunked lookups);
* ``old``: the register at ``--old-rev`` (default the last JSON-lines one,
  :data:`JSONL_REV`; an SQLite-era revision compares two SQLite versions), from
  ``git show <--old-rev>:federation/node/_approvals.py``
  loaded into a temporary module.

Both match through ``unmatched(manifest, entries)`` with the entries streamed from a
generator, so the entries themselves are not in the RSS. Reported per step: seconds,
peak RSS of the step's process (``VmHWM``) and its growth over the process's RSS before
the step; the 1-minute load average next to it (the box may be shared).

Run: ``python -m bench.approvals [--n 1000000] [--impl new old]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from ._common import module_at, proc_status

NOW = datetime(2026, 1, 1, tzinfo=UTC)
JSONL_REV = "f79f976"
"""The last revision whose register was JSON lines (the next one made it SQLite)."""


def _module(rev: str | None, workdir: Path) -> ModuleType:
    """``federation/node/_approvals.py`` at ``rev`` (``None``: the working tree), standalone.

    Loaded on its own, as both versions import only :mod:`consent` at the top, so the
    RSS is not that of importing :mod:`federation` (torch, Flower).
    """
    if rev is not None:
        return module_at(rev, "federation/node/_approvals.py", workdir, "_bench_approvals")
    src = Path(__file__).parents[1] / "federation" / "node" / "_approvals.py"
    spec = importlib.util.spec_from_file_location("_bench_approvals", src)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_bench_approvals"] = mod
    spec.loader.exec_module(mod)
    return mod


def _approvals(mod: ModuleType, n: int) -> Iterator[Any]:
    for i in range(n):
        yield mod.Approval(
            consent_id=f"c-m{i:07d}", merchant_id=f"m{i:07d}", artefact_hash=f"{i:064x}",
            data_provider="isv0", data_consumer="platform",
            purposes=("model_training", "post_loan_monitoring"),
            categories=("margins", "receivables", "turnover"),
            data_from=date(2024, 1, 1), data_to=date(2025, 12, 31),
            consent_start=NOW - timedelta(days=1), consent_expiry=NOW + timedelta(days=365),
            data_life_days=180,
        )


def _entries(n: int) -> Iterator[Any]:
    from consent import ManifestEntry

    for i in range(n):
        yield ManifestEntry(
            merchant_id=f"m{i:07d}", consent_id=f"c-m{i:07d}", artefact_hash=f"{i:064x}",
            consent_start=NOW, consent_expiry=NOW + timedelta(days=30),
            data_from=date(2024, 6, 1), data_to=date(2025, 6, 1),
        )


def _step(impl: str, step: str, n: int, workdir: Path, rev: str) -> dict[str, Any]:
    """One step in this (fresh) process; returns its measurements."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from consent import build_manifest

    mod: Any = _module(rev if impl == "old" else None, workdir)
    key = Ed25519PrivateKey.from_private_bytes(b"\1" * 32)
    # An SQLite-era module (it has CHUNK) gets a database file, a JSON-lines one its .jsonl.
    path = workdir / ("approvals.sqlite" if hasattr(mod, "CHUNK") else "approvals.jsonl")
    register = mod.ApprovalRegister(path, key, b"k" * 32)
    # A manifest with one entry carries the header; entries are streamed separately.
    manifest = build_manifest(
        job_id="j", round=1, data_provider="isv0", data_consumer="platform",
        purpose="model_training", categories=["margins", "turnover"],
        entries=list(_entries(1)), issued_at=NOW, ttl=timedelta(minutes=5),
    )
    rss0 = proc_status("VmRSS")
    t0 = time.perf_counter()
    if step == "register":
        result = register.register_many(_approvals(mod, n))
    else:
        result = register.unmatched(manifest, _entries(n))
    seconds = time.perf_counter() - t0
    return {
        "impl": impl, "step": step, "n": n, "result": result, "seconds": round(seconds, 1),
        "peak_rss_mib": round(proc_status("VmHWM") / 2**20), "rss_growth_mib":
        round((proc_status("VmRSS") - rss0) / 2**20), "load1": os.getloadavg()[0],
        "file_mib": round(path.stat().st_size / 2**20),
    }


def main(argv: list[str] | None = None) -> None:
    """Run each (impl, step) in a fresh process and print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--impl", nargs="+", default=["new", "old"], choices=["new", "old"])
    ap.add_argument("--old-rev", default=JSONL_REV,
                    help="the revision 'old' loads (default: the last JSON-lines register)")
    ap.add_argument("--step", choices=["register", "match"], help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.step:  # a child
        print(json.dumps(_step(args.impl[0], args.step, args.n, args.dir, args.old_rev)))
        return
    print("| impl | step | n | result | s | peak RSS MiB | RSS growth MiB | file MiB | load1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for impl in args.impl:
        with tempfile.TemporaryDirectory(prefix=f"bench-approvals-{impl}-") as tmp:
            for step in ("register", "match"):
                out = subprocess.run(
                    [sys.executable, "-m", "bench.approvals", "--impl", impl, "--step", step,
                     "--n", str(args.n), "--dir", tmp, "--old-rev", args.old_rev],
                    check=True, capture_output=True, text=True,
                ).stdout
                r = json.loads(out.strip().splitlines()[-1])
                print(f"| {impl} | {step} | {r['n']:,} | {r['result']:,} | {r['seconds']} | "
                      f"{r['peak_rss_mib']} | {r['rss_growth_mib']} | {r['file_mib']} | "
                      f"{r['load1']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
