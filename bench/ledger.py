"""Ledger benchmarks against pymerkle 7, in one run: appends, proofs, offline audit.

Run ``python -m bench.ledger`` (10⁶ entries, a few minutes) or
``python -m bench.ledger --entries 1000`` for a smoke run. PostgreSQL comes
from ``FEDGATE_BENCH_POSTGRES_URL`` (default the local ``test`` database); the
benchmark works in a private schema and drops it afterwards. An unreachable
PostgreSQL fails the run before anything is measured; ``--no-postgres`` leaves
it out on purpose.

Every timed loop runs on inputs built before it, and every output is checked
afterwards: the fedgate root must equal the root pymerkle computes over the
same leaf bytes, every generated proof must verify against that root, and the
audit must recompute it, so a fast wrong answer fails the run. Entries carry
a fixed timestamp, so the log is the same in every run: the SQLite root and
proofs are folded into a digest that must equal the stored one for the
standard sizes (:data:`EXPECTED_DIGESTS`).

Ratios read "times better than pymerkle": throughput ÷ pymerkle's
throughput, or pymerkle's latency ÷ fedgate's.

Two rows measure issue 9's additions against a peer in the same run:

* **witnessed checkpoint** — sign a checkpoint and collect C2SP cosignatures
  from 3 witnesses served over loopback HTTP (uvicorn, one thread each), each
  round after a new batch (so every request carries a consistency proof);
  peer: signing the same checkpoints without witnesses. Every round must reach
  the 3-of-3 quorum.
* **audit with book reconciliation** — a second log of the same size made of
  book entries (100 ``account.opened``, then ``transfer.posted`` entries), its
  export audited with the book recomputed from the log (``book=True``); peer:
  the same file audited without it. The recomputed balances must equal the
  ones the generator kept.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

import ledger
from gateway.db import create_schema, make_engine, make_sessionmaker
from gateway.witness import WitnessEndpoint, collect_cosignatures, make_app, serve_in_thread

from ._common import Row, add_exit_option, finish, timed

DEFAULT_ENTRIES = 1_000_000
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BATCH = 1_000
ORIGIN = "bench.fedgate/ledger"
KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"fedgate bench key").digest())
AT = datetime(2026, 1, 1, tzinfo=UTC)
"""Recorded time of every batched entry: fixed, so the leaves and the root are too."""
EXPECTED_DIGESTS: dict[tuple[int, int], str] = {
    (1_000, 50): "b2789c56f5e1f5770250de29700f9173672160e58f20cc476f86c37729535664",
    (DEFAULT_ENTRIES, 1_000): "a1485d3aad82d33d6b3ba9265b3baa4fc484f98f12c9639beef2178af7cec7d5",
}
"""SHA-256 over the SQLite proofs and the root, by (entries, proofs); see :func:`run`."""


@dataclass(frozen=True, slots=True)
class BenchResult:
    """Everything one run measured, keyed by the number of entries."""

    entries: int
    rows: tuple[Row, ...]
    root: bytes
    digest: str


def _items(count: int) -> list[tuple[str, dict[str, Any]]]:
    """A batch of realistic entry bodies, built once and reused for every batch."""
    return [
        (
            "data.used",
            {"job": "bench-job", "round": i % 50, "rows": 100 + i % 977, "merchant": f"m-{i:07d}"},
        )
        for i in range(count)
    ]


def _append_batched(
    factory: sessionmaker[Session], total: int, batch: Sequence[tuple[str, dict[str, Any]]]
) -> tuple[float, list[bytes]]:
    """Append ``total`` entries, ``len(batch)`` per committed transaction; return (s, leaves)."""
    leaves: list[bytes] = []
    start = time.perf_counter()
    done = 0
    while done < total:
        part = batch[: min(len(batch), total - done)]
        with factory() as s, s.begin():
            leaves.extend(e.leaf_data for e in ledger.append_entries(s, part, at=AT))
        done += len(part)
    return time.perf_counter() - start, leaves


def _append_single(factory: sessionmaker[Session], count: int) -> float:
    """Seconds for ``count`` appends, one committed transaction each."""
    bodies = [{"n": i} for i in range(count)]
    start = time.perf_counter()
    for body in bodies:
        with factory() as s, s.begin():
            ledger.append_entry(s, "bench.single", body)
    return time.perf_counter() - start


def _check_postgres(url: str) -> None:
    """Fail the run at once, before any measuring, if PostgreSQL cannot be reached."""
    admin = create_engine(url)
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any connection failure ends the run the same way
        raise SystemExit(
            f"PostgreSQL unreachable at {url}: {exc}\n"
            "start it, set FEDGATE_BENCH_POSTGRES_URL, or pass --no-postgres to leave it out"
        ) from exc
    finally:
        admin.dispose()


@contextmanager
def _postgres(url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions in a private PostgreSQL schema, dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in url else "?"
    engine = make_engine(f"{url}{sep}options={quote(f'-csearch_path={schema}')}")
    try:
        create_schema(engine)
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _sqlite(path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{path}")
    create_schema(engine)
    return make_sessionmaker(engine)


def _proof_rows(
    factory: sessionmaker[Session], size: int, root: bytes, indices: Sequence[int], label: str
) -> tuple[Row, float, list[ledger.InclusionProof]]:
    """Time proof generation (one session, as a server would hold) and check every proof."""
    with factory() as s:
        ledger.inclusion_proof(s, 0, size)  # warm the connection and statement cache
        start = time.perf_counter()
        proofs = [ledger.inclusion_proof(s, i, size) for i in indices]
        gen = (time.perf_counter() - start) / len(indices)
    for p in proofs:
        if p.root != root:
            raise SystemExit(f"{label}: proof for {p.index} carries a wrong root")
    return Row(f"inclusion proof generation, {label}", gen * 1e3, "ms"), gen, proofs


WITNESSES = 3
BOOK_ACCOUNTS = 100


@contextmanager
def _scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as s, s.begin():
        yield s


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _witnessed(
    log: sessionmaker[Session], work: Path, batch: Sequence[tuple[str, dict[str, Any]]], rounds: int
) -> Row:
    """Median latency of sign + 3 loopback cosignatures vs signing alone, ``rounds`` times."""
    verifier = ledger.parse_vkey(ledger.make_vkey(ORIGIN, KEY.public_key()))
    witnesses = [
        ledger.Witness(
            work / f"witness-{n}",
            f"w{n}.bench.fedgate",
            Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"witness %d" % n).digest()),
            {ORIGIN: verifier},
        )
        for n in range(WITNESSES)
    ]
    signing, witnessed = [], []
    with ExitStack() as stack:
        urls = [stack.enter_context(serve_in_thread(make_app(w))) for w in witnesses]
        endpoints = [WitnessEndpoint(u, w.cosigner) for u, w in zip(urls, witnesses, strict=True)]
        for _ in range(rounds + 1):  # the first round (from size 0, no proof) is warm-up
            with log() as s, s.begin():
                ledger.append_entries(s, batch[:10], at=AT)
            start = time.perf_counter()
            with log() as s, s.begin():
                cp = ledger.sign_checkpoint(s, KEY, ORIGIN)
            signed = time.perf_counter()
            outcome = collect_cosignatures(lambda: _scope(log), cp, endpoints)
            done = time.perf_counter()
            if not outcome.met(WITNESSES):
                raise SystemExit(f"witnesses refused checkpoint {cp.size}: {outcome.refusals}")
            signing.append(signed - start)
            witnessed.append(done - start)
    return Row(
        f"witnessed checkpoint: sign + {WITNESSES} cosignatures, loopback HTTP "
        f"(median of {rounds})",
        _median(witnessed[1:]) * 1e3,
        "ms",
        "signed checkpoint, no witnesses",
        _median(signing[1:]) * 1e3,
    )


def _book_log(path: Path, entries: int) -> tuple[sessionmaker[Session], dict[str, int]]:
    """A log of book entries only: accounts, then transfers; returns it and expected balances."""
    log = _sqlite(path)
    codes = [f"acct:{n:03d}" for n in range(BOOK_ACCOUNTS)]
    opened = [
        ("account.opened", {"code": c, "name": c, "kind": "asset", "currency": "CNY",
                            "allow_negative": True})
        for c in codes
    ]  # fmt: skip
    balances = dict.fromkeys(codes, 0)
    with log() as s, s.begin():
        ledger.append_entries(s, opened, at=AT)
    done = len(opened)
    while done < entries:
        part = []
        for i in range(done, min(entries, done + BATCH)):
            debit, credit = codes[i % BOOK_ACCOUNTS], codes[(i * 7 + 1) % BOOK_ACCOUNTS]
            if debit == credit:
                credit = codes[(i + 1) % BOOK_ACCOUNTS]
            amount = 100 + i % 9973
            balances[debit] += amount
            balances[credit] -= amount
            part.append(("transfer.posted", {
                "id": f"t-{i:08d}", "debit": debit, "credit": credit, "amount": amount,
                "currency": "CNY", "metadata": {"job": "bench", "round": i % 50}, "link": None,
            }))  # fmt: skip
        with log() as s, s.begin():
            ledger.append_entries(s, part, at=AT)
        done += len(part)
    with log() as s, s.begin():
        ledger.sign_checkpoint(s, KEY, ORIGIN)
    return log, balances


def _reconciled_audit(work: Path, entries: int) -> Row:
    """Offline audit of a book-only log with the book recomputed, vs the same audit without."""
    log, balances = _book_log(work / "book.db", entries)
    path = work / "book-export.jsonl"
    with log() as s:
        ledger.export_log(s, path, KEY.public_key(), origin=ORIGIN)
    vkey = ledger.make_vkey(ORIGIN, KEY.public_key())
    plain_secs, plain = timed(lambda: ledger.audit_export(path, vkey=vkey, book=False))
    book_secs, report = timed(lambda: ledger.audit_export(path, vkey=vkey))
    replay = ledger._reconcile.BookReplay()
    with path.open("rb") as fh:  # the balances, once more, to check the audit's arithmetic
        for line in fh:
            if line.startswith(b'{"seq":'):
                item = json.loads(line)
                replay.feed_leaf(item["seq"], base64.b64decode(item["leaf"]))
    if not (plain.ok and report.ok) or report.book_transfers != entries - BOOK_ACCOUNTS:
        raise SystemExit(f"book audit failed: {report.failure or plain.failure}")
    if {c: b for c, (b, _) in replay.balances().items()} != balances:
        raise SystemExit("recomputed balances differ from the generator's")
    return Row(
        f"offline audit verify of {entries:,} book entries, with reconciliation",
        book_secs,
        "s",
        "same file, audit without reconciliation",
        plain_secs,
        "<= 20 s",
        book_secs <= 20.0,
    )


def run(
    entries: int,
    *,
    singles: int,
    proofs: int,
    pg_entries: int,
    pg_url: str | None,
    witness_rounds: int = 20,
) -> BenchResult:
    """Run every benchmark once and return the rows (also printed by :func:`main`).

    Parameters
    ----------
    entries : int
        Log size on SQLite.
    singles : int
        Single-transaction appends per backend.
    proofs : int
        Inclusion proofs generated and verified.
    pg_entries : int
        Batched appends on PostgreSQL (at most ``entries``).
    pg_url : str | None
        PostgreSQL to measure; None leaves PostgreSQL out (a ``skipped`` row).
    witness_rounds : int, default 20
        Witnessed checkpoints timed (after one warm-up round).

    Raises
    ------
    SystemExit
        If PostgreSQL is unreachable, or any output is wrong (a root, a proof,
        the audit, or the digest against :data:`EXPECTED_DIGESTS`).
    """
    import pymerkle

    if pg_url is not None:
        _check_postgres(pg_url)
    rows: list[Row] = []
    batch = _items(min(BATCH, entries))
    work = Path(tempfile.mkdtemp(prefix="fedgate-bench-"))
    rng = random.Random(9162)
    indices = [rng.randrange(entries) for _ in range(proofs)]
    digest = hashlib.sha256()

    # 1. Durable batched appends on SQLite: fedgate vs pymerkle SqliteTree.
    log = _sqlite(work / "fedgate.db")
    secs, leaves = _append_batched(log, entries, batch)
    peer = pymerkle.SqliteTree(str(work / "pymerkle.db"))
    chunks = [leaves[k : k + BATCH] for k in range(0, entries, BATCH)]
    peer_secs, _ = timed(lambda: [peer.append_entries(chunk) for chunk in chunks])
    rows.append(
        Row(
            f"durable appends, batched x{BATCH}, SQLite",
            entries / secs,
            "entries/s",
            "pymerkle SqliteTree",
            entries / peer_secs,
            ">= 5,000/s",
            entries / secs >= 5_000,
        )
    )

    # 2. Single durable appends (one transaction each) on fresh SQLite files.
    single_secs = _append_single(_sqlite(work / "single.db"), singles)
    peer_single = pymerkle.SqliteTree(str(work / "pymerkle-single.db"))
    single_data = [b"single-%d" % i for i in range(singles)]
    peer_single_secs, _ = timed(lambda: [peer_single.append_entry(d) for d in single_data])
    rows.append(
        Row(
            "durable appends, single, SQLite",
            singles / single_secs,
            "entries/s",
            "pymerkle SqliteTree",
            singles / peer_single_secs,
        )
    )

    # 3. The same on PostgreSQL (pymerkle has no PostgreSQL backend).
    if pg_url is None:
        rows.append(Row("durable appends, PostgreSQL (--no-postgres)", 0.0, "skipped"))
    else:
        with _postgres(pg_url) as pg:
            n_pg = min(pg_entries, entries)
            pg_secs, pg_leaves = _append_batched(pg, n_pg, batch)
            rows.append(
                Row(
                    f"durable appends, batched x{BATCH}, PostgreSQL ({n_pg:,})",
                    n_pg / pg_secs,
                    "entries/s",
                    target=">= 5,000/s",
                    met=n_pg / pg_secs >= 5_000,
                )
            )
            rows.append(
                Row(
                    "durable appends, single, PostgreSQL",
                    singles / _append_single(pg, singles),
                    "entries/s",
                )
            )
            pg_root = pymerkle.InmemoryTree()
            for leaf in pg_leaves:
                pg_root.append_entry(leaf)
            # _proof_rows checks every proof against pymerkle's root over the same leaves.
            pg_row, _, _ = _proof_rows(
                pg,
                n_pg,
                pg_root.get_root(),
                [i % n_pg for i in indices],
                f"PostgreSQL at {n_pg:,}",
            )
            rows.append(pg_row)

    # 4. Cross-check: pymerkle's root over the same leaf bytes equals fedgate's.
    memory = pymerkle.InmemoryTree()
    rebuild_secs, _ = timed(lambda: [memory.append_entry(leaf) for leaf in leaves])
    rebuild_secs += timed(memory.get_root)[0]
    root = memory.get_root()
    with log() as s:
        head = ledger.tree_head(s)
    if (head.size, head.root) != (entries, root):
        raise SystemExit("fedgate's root differs from pymerkle's over the same leaves")

    # 5. Inclusion proofs at `entries`: generation and verification.
    gen_row, gen, fed_proofs = _proof_rows(log, entries, root, indices, f"SQLite at {entries:,}")
    peer_gen_sql, peer_proofs_sql = timed(
        lambda: [peer.prove_inclusion(i + 1, entries) for i in indices[: min(proofs, 200)]]
    )
    peer_gen_mem, peer_proofs = timed(
        lambda: [memory.prove_inclusion(i + 1, entries) for i in indices]
    )
    rows.append(
        Row(
            gen_row.metric,
            gen_row.value,
            "ms",
            "pymerkle SqliteTree",
            peer_gen_sql / len(peer_proofs_sql) * 1e3,
            "<= 1 ms",
            gen * 1e3 <= 1.0,
        )
    )
    rows.append(
        Row(
            gen_row.metric,
            gen_row.value,
            "ms",
            "pymerkle InmemoryTree",
            peer_gen_mem / len(indices) * 1e3,
        )
    )
    fed_inputs = [(p.leaf_hash, p.index, p.size, p.hashes, root) for p in fed_proofs]

    def verify_all() -> int:
        ok = 0
        for leaf_hash, index, size, hashes, want in fed_inputs:
            ledger.verify_inclusion(leaf_hash, index, size, hashes, want)
            ok += 1
        return ok

    ver_secs, verified = timed(verify_all)
    peer_inputs = [(leaves[i], p) for i, p in zip(indices, peer_proofs, strict=True)]
    bases = [memory.hash_buff(leaf) for leaf, _ in peer_inputs]
    peer_ver_secs, _ = timed(
        lambda: [
            pymerkle.verify_inclusion(base, root, p)
            for base, (_, p) in zip(bases, peer_inputs, strict=True)
        ]
    )
    if verified != len(fed_proofs):
        raise SystemExit("not every fedgate proof verified")
    rows.append(
        Row(
            f"inclusion proof verification at {entries:,}",
            ver_secs / verified * 1e3,
            "ms",
            "pymerkle verify_inclusion",
            peer_ver_secs / len(peer_inputs) * 1e3,
        )
    )
    for p in fed_proofs:
        digest.update(b"".join(p.hashes))

    # 6. Full offline audit of the export vs pymerkle rebuilding the tree from the leaves.
    with log() as s, s.begin():
        ledger.sign_checkpoint(s, KEY, ORIGIN)
    export_path = work / "export.jsonl"
    with log() as s:
        export_secs, _ = timed(
            lambda: ledger.export_log(s, export_path, KEY.public_key(), origin=ORIGIN)
        )
    audit_secs, report = timed(
        lambda: ledger.audit_export(export_path, vkey=ledger.make_vkey(ORIGIN, KEY.public_key()))
    )
    if not report.ok or report.root != root or report.size != entries:
        raise SystemExit(f"audit did not reproduce the log: {report.failure}")
    rows.append(
        Row(
            f"offline audit verify of {entries:,} entries",
            audit_secs,
            "s",
            "pymerkle InmemoryTree rebuild + root",
            rebuild_secs,
            "<= 20 s",
            audit_secs <= 20.0,
        )
    )
    rows.append(Row(f"export of {entries:,} entries (file write)", export_secs, "s"))

    # 7. Witnessed checkpoints (3 witnesses, loopback) and 8. the audit that reconciles the book.
    rows.append(_witnessed(log, work, batch, witness_rounds))
    rows.append(_reconciled_audit(work, entries))

    digest.update(root)
    shutil.rmtree(work)
    expected = EXPECTED_DIGESTS.get((entries, proofs))
    if expected is not None and digest.hexdigest() != expected:
        raise SystemExit(
            f"output digest {digest.hexdigest()} is not the stored {expected}: "
            "the log, its root or its proofs changed"
        )
    return BenchResult(entries, tuple(rows), root, digest.hexdigest())


def render(result: BenchResult) -> str:
    """The result as a markdown table."""
    lines = [
        f"ledger benchmark, {result.entries:,} entries "
        f"(root {result.root.hex()[:16]}…, proof digest {result.digest[:16]}…)",
        "",
        "| metric | fedgate | peer | peer value | vs peer | target | met |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    for r in result.rows:
        peer_value = f"{r.peer_value:,.3f} {r.unit}" if r.peer_value is not None else "—"
        ratio = f"{r.versus:.2f}x" if r.versus is not None else "n/a"
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(
            f"| {r.metric} | {r.value:,.3f} {r.unit} | {r.peer} | {peer_value} | {ratio} "
            f"| {r.target} | {met} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the table; exit as :mod:`bench._common` says (1 on a failed check or a
    missed target unless ``--no-fail``)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.ledger", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--entries", type=int, default=DEFAULT_ENTRIES, help="log size (default 10^6)"
    )
    parser.add_argument("--singles", type=int, default=300, help="single appends per backend")
    parser.add_argument("--proofs", type=int, default=1_000, help="proofs to generate and verify")
    parser.add_argument(
        "--pg-entries", type=int, default=100_000, help="batched appends on PostgreSQL"
    )
    parser.add_argument(
        "--no-postgres", action="store_true", help="leave PostgreSQL out instead of failing"
    )
    add_exit_option(parser)
    args = parser.parse_args(argv)
    if args.entries < 2 or args.singles < 1 or args.proofs < 1:
        parser.error("--entries must be >= 2, --singles and --proofs >= 1")
    pg_url = None
    if not args.no_postgres:
        pg_url = os.environ.get("FEDGATE_BENCH_POSTGRES_URL", DEFAULT_PG_URL)
    result = run(
        args.entries,
        singles=args.singles,
        proofs=args.proofs,
        pg_entries=args.pg_entries,
        pg_url=pg_url,
    )
    print(render(result))
    return finish(result.rows, no_fail=args.no_fail)


if __name__ == "__main__":
    raise SystemExit(main())
