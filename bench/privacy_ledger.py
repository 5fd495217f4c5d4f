"""The node's privacy ledger: memory and time to admit, record and dry-run, old vs new.

Issue 11: the node kept its whole DP accounting (every job's RDP history and every
merchant's lifetime ε) in one JSON file, parsed whole on every call and rewritten
whole on every update (131 MB at 1.7 × 10⁶ merchants). This bench runs, each step
in a **fresh process** (what a new node worker pays):

1. ``admit``: job ``j1`` admits ``--n`` merchants (all new, all charged);
2. ``record``: one DP-SGD release appended to ``j1``'s history;
3. ``dry``: job ``j2``'s ``admit(..., dry_run=True)`` over the same ``--n`` merchants
   (what the node computes before a round; pure read).

* ``new``: :class:`federation.dp.PrivacyLedger` (SQLite, chunked lookups);
* ``old``: the JSON ledger, the class from ``git show <--old-rev>:federation/dp.py``
  loaded as a module of the :mod:`federation` package (so its relative imports of
  ``_dpsgd``, ``_errors`` and ``specs`` resolve; torch and Opacus are imported before
  the measurement starts, for both).

The merchant ids are built before the step's baseline RSS, so the growth is the
ledger's (plus the call's own sorted id list and returned lists, the same for both).
Reported per step: seconds, peak RSS of the step's process (``VmHWM``) and its growth
over the process's RSS before the step, the ledger file's size, the 1-minute load
average (the box may be shared).

Run: ``python -m bench.privacy_ledger [--n 1000000] [--impl new old]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from ._common import module_at, proc_status

OLD_REV = "d84cfdd856ee14a668cf912a93493cbb8681e1db"
"""The last commit with the JSON ledger."""


def _module(rev: str | None, workdir: Path) -> ModuleType:
    """``federation/dp.py`` at ``rev`` (``None``: the working tree's :mod:`federation.dp`)."""
    import federation.dp

    if rev is None:
        return federation.dp
    # Inside the package: its relative imports resolve.
    return module_at(rev, "federation/dp.py", workdir, "federation._bench_old_dp")


def _step(impl: str, step: str, n: int, workdir: Path, rev: str) -> dict[str, Any]:
    """One step in this (fresh) process; returns its measurements."""
    from federation.specs import DPBudget

    mod: Any = _module(rev if impl == "old" else None, workdir)
    path = workdir / ("privacy.json" if impl == "old" else "privacy.sqlite")
    ledger = mod.PrivacyLedger(path)
    budget = DPBudget(epsilon=1.0, delta=1e-5, lifetime_epsilon=10.0)
    ids = [f"m{i:07d}" for i in range(n)]
    rss0 = proc_status("VmRSS")
    t0 = time.perf_counter()
    if step == "admit":
        admitted, _ = ledger.admit(
            job_id="j1", budget=budget, merchant_ids=ids, lifetime_epsilon=10.0
        )
        result = len(admitted)
    elif step == "record":
        result = round(ledger.record("j1", [(1.1, 0.01, 100)]), 4)
    else:
        admitted, _ = ledger.admit(
            job_id="j2", budget=budget, merchant_ids=ids, lifetime_epsilon=10.0, dry_run=True
        )
        result = len(admitted)
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in workdir.glob(path.name + "*"))
    return {
        "impl": impl, "step": step, "n": n, "result": result, "seconds": round(seconds, 1),
        "peak_rss_mib": round(proc_status("VmHWM") / 2**20),
        "rss_growth_mib": round((proc_status("VmRSS") - rss0) / 2**20),
        "hwm_over_start_mib": round((proc_status("VmHWM") - rss0) / 2**20),
        "load1": os.getloadavg()[0], "file_mib": round(size / 2**20),
    }


def main(argv: list[str] | None = None) -> None:
    """Run each (impl, step) in a fresh process and print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--impl", nargs="+", default=["new", "old"], choices=["new", "old"])
    ap.add_argument("--old-rev", default=OLD_REV)
    ap.add_argument("--step", choices=["admit", "record", "dry"], help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.step:  # a child
        print(json.dumps(_step(args.impl[0], args.step, args.n, args.dir, args.old_rev)))
        return
    print("| impl | step | n | result | s | peak RSS MiB | peak over start MiB "
          "| RSS growth MiB | file MiB | load1 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for impl in args.impl:
        with tempfile.TemporaryDirectory(prefix=f"bench-privacy-{impl}-") as tmp:
            for step in ("admit", "record", "dry"):
                out = subprocess.run(
                    [sys.executable, "-m", "bench.privacy_ledger", "--impl", impl, "--step",
                     step, "--n", str(args.n), "--dir", tmp, "--old-rev", args.old_rev],
                    check=True, capture_output=True, text=True,
                ).stdout
                r = json.loads(out.strip().splitlines()[-1])
                print(f"| {impl} | {step} | {r['n']:,} | {r['result']} | {r['seconds']} | "
                      f"{r['peak_rss_mib']} | {r['hwm_over_start_mib']} | "
                      f"{r['rss_growth_mib']} | {r['file_mib']} | {r['load1']:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
