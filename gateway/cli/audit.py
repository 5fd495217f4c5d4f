"""``fedgate audit …`` commands: offline verification, no database needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import ledger

from ._common import err_console, fail
from .ledger import _print_report

app = typer.Typer(no_args_is_help=True)

TRUST_WARNING = (
    "[bold yellow]WARNING[/]: --trust-export-key checks the file against the key written "
    "inside it. That proves only that the file is self-consistent: whoever wrote the file "
    "could have signed it with a key of their own. Pass --vkey with the log's key, obtained "
    "from the operator, to prove the log signed it."
)


def _key_text(value: str, what: str) -> str:
    """``value`` itself, or the text of the file it names (a key kept in a file)."""
    path = Path(value)
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            fail("BAD_VKEY", f"cannot read {what} from {path}: {exc}", exit_code=2)
    return value


def _pinned_key(value: str) -> ledger.NoteVerifier:
    """The auditor's key from ``--vkey``: a vkey string, or a file that holds one."""
    try:
        return ledger.parse_vkey(_key_text(value, "a verifier key"))
    except ledger.NoteError as exc:
        fail("BAD_VKEY", f"--vkey is neither a verifier key nor a file holding one: {exc}", 2)


MAX_PIN_BYTES = 256 * 1024


def _cosigner(value: str) -> ledger.Cosigner:
    """A witness key from ``--witness``: a cosigner vkey, or a file that holds one."""
    try:
        return ledger.parse_cosigner_vkey(_key_text(value, "a witness key"))
    except ledger.NoteError as exc:
        fail("BAD_VKEY", f"--witness is not a cosigner vkey (type 0x04): {exc}", exit_code=2)


def _pin(path: Path, key: ledger.NoteVerifier) -> ledger.Checkpoint:
    """The pinned checkpoint from ``--since``, verified under the log's key."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_PIN_BYTES + 1)
        if len(raw) > MAX_PIN_BYTES:
            fail("BAD_PIN", f"{path} is over {MAX_PIN_BYTES} bytes: not a checkpoint", 2)
        return ledger.open_checkpoint(raw.decode("utf-8"), key)
    except OSError as exc:
        fail("BAD_PIN", f"cannot read {path}: {exc.strerror or exc}", exit_code=2)
    except UnicodeDecodeError:
        fail("BAD_PIN", f"{path} is not UTF-8 text", exit_code=2)
    except ledger.NoteError as exc:
        fail("BAD_PIN", f"{path} is not a checkpoint signed by the log key: {exc}", 2)


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="Export written by `fedgate ledger export`.")],
    vkey: Annotated[
        str | None,
        typer.Option(
            help="The log's verifier key as you obtained it from the operator (the vkey "
            "string, or a file holding it). Required unless --trust-export-key."
        ),
    ] = None,
    trust_export_key: Annotated[
        bool,
        typer.Option(
            "--trust-export-key",
            help="Use the key written in the file instead of --vkey (self-consistency only).",
        ),
    ] = False,
    canonical: Annotated[
        bool, typer.Option(help="Also check every leaf is RFC 8785 canonical JSON (slower).")
    ] = False,
    witness: Annotated[
        list[str] | None,
        typer.Option(
            help="A witness's cosigner vkey you trust (or a file holding one); repeat. "
            "The newest checkpoint must carry --quorum valid cosignatures by them."
        ),
    ] = None,
    quorum: Annotated[
        int | None, typer.Option(help="Cosignatures required (default: every --witness).")
    ] = None,
    since: Annotated[
        Path | None,
        typer.Option(
            help="A checkpoint note you saw earlier (e.g. `fedgate witness show --out`): the "
            "export must extend it (ROLLBACK if it ends before it, FORK if it differs)."
        ),
    ] = None,
) -> None:
    """Recompute every leaf, root and balance, check every checkpoint; exit 0 only if all holds.

    The book is recomputed from the ``transfer.posted`` entries and held against
    the statement in the export. Every refusal prints a reason code and the
    first bad index, and exits 1 (2 for unusable arguments or files).
    """
    if vkey is None and not trust_export_key:
        fail(
            "NO_VKEY",
            "pass --vkey with the log's verifier key (or a file holding it); "
            "--trust-export-key checks only that the file agrees with itself",
            exit_code=2,
        )
    if vkey is not None and trust_export_key:
        fail("NO_VKEY", "give either --vkey or --trust-export-key, not both", exit_code=2)
    pinned = _pinned_key(vkey) if vkey is not None else None
    if pinned is None:
        err_console.print(TRUST_WARNING)
    witnesses = [_cosigner(w) for w in witness or []]
    need = len(witnesses) if quorum is None else quorum
    if not 0 <= need <= len(witnesses):
        fail("BAD_QUORUM", f"--quorum must be within 0..{len(witnesses)}", exit_code=2)
    if since is not None and pinned is None:
        fail("NO_VKEY", "--since needs --vkey: the pin is checked under the log's key", 2)
    pin = _pin(since, pinned) if since is not None and pinned is not None else None
    if not file.is_file():
        fail("NO_FILE", f"{file} does not exist", exit_code=2)
    try:
        report = ledger.audit_export(
            file,
            vkey=pinned,
            canonical=canonical,
            witnesses=witnesses,
            quorum=need,
            since=pin,
        )
    except ledger.LogError as exc:
        fail(exc.code, str(exc), exit_code=2)
    except ValueError as exc:
        fail("BAD_ARGUMENT", str(exc), exit_code=2)
    except OSError as exc:
        fail("CANNOT_READ", f"cannot read {file}: {exc.strerror or exc}", exit_code=2)
    _print_report(report, file)
    if report.failure is not None:
        f = report.failure
        fail(f.code, f"first bad index {f.index}: {f.message}")
