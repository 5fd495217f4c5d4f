"""``fedgate ledger …`` commands: the log's head, proofs, checkpoints, export, and a demo."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import ledger
from consent import verify_consent_log

from ..keys import load_or_create_key
from ..witness import collect_cosignatures, parse_endpoint
from ._common import console, err_console, fail, read_session, session, settings

app = typer.Typer(no_args_is_help=True)

DEMO_EXPORT_NAME = "ledger-export.jsonl"
EXPORT_TRIES = 3
"""Sign-then-snapshot rounds before giving up when appends keep landing in between."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _log_key() -> ledger.NoteVerifier:
    """The log's verifier (public key named by the configured origin)."""
    cfg = settings()
    key = load_or_create_key(cfg.resolved_key_dir, "log")
    return ledger.parse_vkey(ledger.make_vkey(cfg.log_origin, key.public_key()))


def _verify_all() -> tuple[ledger.AuditReport, ledger.BookReport]:
    """Replay the live log, then reconcile the book and the consents with it (one snapshot).

    A consent state the log does not prove is reported as the book's failure
    slot (code ``INTEGRITY``), so every caller refuses on it alike.
    """
    with read_session() as s:
        report = ledger.verify_log(s, _log_key())
        book = ledger.reconcile_book(s) if report.ok else ledger.BookReport(0, 0)
        if report.ok and book.ok:
            bad = verify_consent_log(s)
            if bad is not None:
                book = ledger.BookReport(
                    book.accounts,
                    book.transfers,
                    ledger.BookFailure(
                        bad.code, bad.index, f"consent {bad.consent_id}: {bad.message}"
                    ),
                )
    return report, book


def _fail_unless_verified(doing: str) -> None:
    """Refuse to sign over a database whose log or book does not verify."""
    report, book = _verify_all()
    failure = report.failure or book.failure
    if failure is not None:
        fail(
            failure.code,
            f"refusing to {doing}: the database does not verify (first bad index "
            f"{failure.index}: {failure.message}). Run `fedgate ledger verify`.",
        )


def _sign(*, verified: bool = False) -> ledger.Checkpoint:
    """Sign a checkpoint of the head; unless ``verified``, replay the database first."""
    if not verified:
        _fail_unless_verified("sign a checkpoint")
    cfg = settings()
    key = load_or_create_key(cfg.resolved_key_dir, "log")
    try:
        with session() as s:
            return ledger.sign_checkpoint(s, key, cfg.log_origin)
    except ledger.LogError as exc:
        fail(exc.code, str(exc))


@app.command()
def head() -> None:
    """Show the log's size, root and latest checkpoint."""
    with read_session() as s:
        current = ledger.tree_head(s)
        checkpoints = ledger.list_checkpoints(s)
    table = _kv_table()
    table.add_row("origin", settings().log_origin)
    table.add_row("size", str(current.size))
    table.add_row("root", _b64(current.root))
    table.add_row("vkey", _log_key().vkey)
    latest = checkpoints[-1] if checkpoints else None
    table.add_row("last checkpoint", f"size {latest.size}" if latest else "none")
    console.print(table)


def _emit_note(note: str, out: Path | None) -> None:
    """Print a note verbatim (never wrapped) and optionally write it to ``out``."""
    typer.echo(note, nl=False)
    if out is not None:
        try:
            out.write_text(note, encoding="utf-8")
        except OSError as exc:
            fail("CANNOT_WRITE", f"cannot write {out}: {exc.strerror or exc}")


@app.command()
def checkpoint(
    witness: Annotated[
        list[str] | None,
        typer.Option(
            help="A witness as URL,VKEY (its add-checkpoint prefix and cosigner vkey); repeat."
        ),
    ] = None,
    quorum: Annotated[
        int | None,
        typer.Option(help="Cosignatures required (default: every --witness)."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per witness request.")] = 10.0,
    out: Annotated[
        Path | None,
        typer.Option(help="Also write the (cosigned) note here: a pin for `audit verify --since`."),
    ] = None,
) -> None:
    """Verify the database, sign a checkpoint of the head, and collect witness cosignatures.

    Refused if the log or the book does not verify, or if the checkpoint would
    contradict the last one. With --witness, exits 1 (``NO_QUORUM``) when fewer
    than --quorum witnesses cosign; the checkpoint stays signed but unwitnessed.
    """
    try:
        endpoints = [parse_endpoint(w) for w in witness or []]
    except ValueError as exc:
        fail("BAD_WITNESS", str(exc), exit_code=2)
    need = len(endpoints) if quorum is None else quorum
    if not 0 <= need <= len(endpoints):
        fail("BAD_QUORUM", f"--quorum must be within 0..{len(endpoints)}", exit_code=2)
    cp = _sign()
    console.print(f"[green]checkpoint[/] size {cp.size} root {cp.root_b64}")
    if not endpoints:
        _emit_note(cp.note, out)
        return
    outcome = collect_cosignatures(session, cp, endpoints, timeout=timeout)
    for r in outcome.refusals:
        err_console.print(
            f"witness {r.witness} refused: {r.code} (HTTP {r.status}) {r.message}",
            highlight=False,
            markup=False,
        )
    _emit_note(outcome.note, out)
    if not outcome.met(need):
        fail(
            "NO_QUORUM",
            f"{len(outcome.cosigned)} of {len(endpoints)} witnesses cosigned size {cp.size}; "
            f"{need} required",
        )
    console.print(f"[green]witnessed[/] by {len(outcome.cosigned)} of {len(endpoints)}")


@app.command()
def checkpoints() -> None:
    """List the stored checkpoints, oldest first."""
    with read_session() as s:
        rows = ledger.list_checkpoints(s)
    table = Table("size", "root (base64)", "origin")
    for cp in rows:
        table.add_row(str(cp.size), cp.root_b64, cp.origin)
    console.print(table)


@app.command()
def proof(
    seq: Annotated[int, typer.Argument(help="Entry sequence number.")],
    size: Annotated[int | None, typer.Option(help="Tree size (default: current).")] = None,
) -> None:
    """Print an RFC 9162 inclusion proof for entry SEQ as JSON (checked before printing)."""
    try:
        with read_session() as s:
            p = ledger.inclusion_proof(s, seq, size)
        ledger.verify_inclusion(p.leaf_hash, p.index, p.size, p.hashes, p.root)
    except ledger.LogError as exc:
        fail(exc.code, str(exc))
    out = {
        "leafIdx": p.index,
        "treeSize": p.size,
        "leafHash": _b64(p.leaf_hash),
        "root": _b64(p.root),
        "proof": [_b64(h) for h in p.hashes],
    }
    console.print_json(json.dumps(out))


@app.command()
def consistency(
    size1: Annotated[int, typer.Argument(help="Older tree size.")],
    size: Annotated[int | None, typer.Option(help="Newer tree size (default: current).")] = None,
) -> None:
    """Print an RFC 9162 consistency proof from SIZE1 to the current (or given) size as JSON."""
    try:
        with read_session() as s:
            p = ledger.consistency_proof(s, size1, size)
        if p.size1 > 0:
            ledger.verify_consistency(p.size1, p.size2, p.hashes, p.root1, p.root2)
    except ledger.LogError as exc:
        fail(exc.code, str(exc))
    out = {
        "size1": p.size1,
        "size2": p.size2,
        "root1": _b64(p.root1),
        "root2": _b64(p.root2),
        "proof": [_b64(h) for h in p.hashes],
    }
    console.print_json(json.dumps(out))


def _export_once(out: Path) -> ledger.ExportSummary:
    """Export a read-only snapshot to ``out``, refusing one with entries beyond its checkpoints."""
    cfg = settings()
    key = load_or_create_key(cfg.resolved_key_dir, "log")
    with read_session() as s:
        return ledger.export_log(
            s, out, key.public_key(), origin=cfg.log_origin, require_signed=True
        )


@app.command()
def export(
    out: Annotated[Path, typer.Argument(help="File to write (JSON Lines).")],
    no_sign: Annotated[
        bool,
        typer.Option(
            "--no-sign",
            help="Do not sign a checkpoint of the head first; refuse if entries are unsigned.",
        ),
    ] = False,
) -> None:
    """Sign a checkpoint of the head if needed, then write the log to OUT for offline audit.

    The audit fails an export whose last entries no checkpoint covers, so the
    head is signed first (a no-op when the newest checkpoint is the head). The
    export is read from one snapshot that never blocks writers; when an append
    lands between signing and reading, the head is signed again.
    """
    _fail_unless_verified("export")
    for attempt in range(1, EXPORT_TRIES + 1):
        if not no_sign:
            _sign(verified=True)
        try:
            summary = _export_once(out)
            break
        except ledger.ExportFormatError as exc:
            if exc.code != "UNSIGNED_TAIL":
                fail(exc.code, str(exc))
            if no_sign:
                fail(
                    exc.code,
                    f"{exc}. Run `fedgate ledger checkpoint`, or export without --no-sign.",
                )
            if attempt == EXPORT_TRIES:
                fail(exc.code, f"{exc}; appends kept arriving, {EXPORT_TRIES} tries")
        except ledger.LogError as exc:
            fail(exc.code, str(exc))
        except OSError as exc:
            fail("CANNOT_WRITE", f"cannot write {out}: {exc.strerror or exc}")
    console.print(
        f"[green]exported[/] {summary.size} entries, {summary.checkpoints} checkpoints to {out}\n"
        f"vkey {summary.vkey}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def verify() -> None:
    """Verify the live log (leaves, nodes, head, checkpoints), then the book against it.

    Every balance and transfer is recomputed from the ``account.opened`` and
    ``transfer.posted`` entries and compared with the stored rows; the first
    transfer that differs is reported with its log index.
    """
    report, book = _verify_all()
    if report.failure is not None:
        f = report.failure
        fail(f.code, f"first bad index {f.index}: {f.message}")
    if book.failure is not None:
        b = book.failure
        tid = f" (transfer {b.transfer_id})" if b.transfer_id else ""
        fail(b.code, f"first bad index {b.index}{tid}: {b.message}")
    console.print(
        f"[green]ok[/] {report.size} entries, {report.checkpoints_verified} checkpoints verified; "
        f"book: {book.accounts} accounts, {book.transfers} transfers reconciled with the log"
    )


@app.command()
def demo() -> None:
    """Append sample entries, sign a checkpoint, export the log and audit the export."""
    cfg = settings()
    now = datetime.now(UTC)
    samples: list[tuple[str, dict[str, object]]] = [
        ("demo.rate.changed", {"rate": "data_usage_fee", "minor_units": 50, "currency": "CNY"}),
        ("demo.consent.granted", {"consent_id": "demo-c1", "merchant": "m-001", "isv": "isv-a"}),
        ("demo.data.used", {"job": "demo-job", "round": 1, "rows": 120, "consent_id": "demo-c1"}),
        ("demo.payout.computed", {"id": "demo-t1", "amount": 6000, "currency": "CNY"}),
        ("demo.consent.revoked", {"consent_id": "demo-c1", "merchant": "m-001"}),
    ]
    with session() as s:
        entries = ledger.append_entries(s, samples, at=now)
    console.print(f"appended entries {entries[0].seq}..{entries[-1].seq}")
    cp = _sign()
    console.print(f"signed checkpoint at size {cp.size}")
    out = cfg.data_dir / DEMO_EXPORT_NAME
    export(out, no_sign=False)
    report = ledger.audit_export(out, vkey=_log_key())
    _print_report(report, out)
    if not report.ok:
        raise typer.Exit(1)


def _kv_table(title: str | None = None) -> Table:
    """A two-column key/value table that folds long values (keys, roots) instead of cutting."""
    table = Table(title=title, show_header=False)
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="fold")
    return table


def _print_report(report: ledger.AuditReport, path: Path) -> None:
    """Render an audit report as a table (shared with ``fedgate audit verify``)."""
    table = _kv_table(title=f"audit of {path}")
    table.add_row("origin", report.origin or "")
    table.add_row("entries recomputed", str(report.size))
    table.add_row("root", _b64(report.root))
    table.add_row("checkpoints verified", f"{report.checkpoints_verified}")
    if report.cosigners:
        table.add_row("witnessed by", "\n".join(report.cosigners))
    if report.book_accounts is not None and report.failure is None:
        table.add_row(
            "book",
            f"{report.book_accounts} accounts, {report.book_transfers} transfers from the log",
        )
    if report.failure is None:
        table.add_row("result", "[bold green]OK[/]")
    else:
        f = report.failure
        table.add_row("result", f"[bold red]FAILED {f.code}[/]")
        table.add_row("first bad index", str(f.index))
        if f.checkpoint_size is not None:
            table.add_row("checkpoint size", str(f.checkpoint_size))
        table.add_row("reason", f.message)
    console.print(table)
