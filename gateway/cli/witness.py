"""``fedgate witness …``: run a C2SP tlog witness (an ISV node, or any auditor).

A witness is a folder (see :mod:`gateway.witness._folder`): ``init`` makes its
key, ``trust`` adds a log's vkey, ``serve`` answers ``POST /add-checkpoint``
over HTTP, ``cosign`` answers one request read from a file (for a node that
takes requests through another channel), and ``show`` prints the latest
checkpoint it cosigned — the file an auditor pins with ``fedgate audit verify
--since`` — and any fork evidence it holds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

import ledger
from ledger import MAX_REQUEST_BYTES

from ..witness import WitnessFolderError, init_witness, make_app, open_witness, trust_log
from ._common import console, fail

app = typer.Typer(no_args_is_help=True)

FolderArg = Annotated[Path, typer.Argument(help="The witness folder.")]


def _open(folder: Path) -> ledger.Witness:
    try:
        return open_witness(folder)
    except WitnessFolderError as exc:
        fail(exc.code, str(exc))
    except (OSError, ValueError) as exc:
        fail("BAD_WITNESS_CONFIG", f"cannot open the witness in {folder}: {exc}")


@app.command()
def init(
    folder: FolderArg,
    name: Annotated[str, typer.Option(help="Key name, a schema-less URL (isv-a.example/w).")],
) -> None:
    """Create a witness: a fresh Ed25519 key; print its cosigner vkey."""
    try:
        witness = init_witness(folder, name)
    except WitnessFolderError as exc:
        fail(exc.code, str(exc))
    typer.echo(witness.cosigner.vkey)


@app.command()
def trust(
    folder: FolderArg,
    log_vkey: Annotated[str, typer.Argument(help="The log's vkey (`fedgate ledger head`).")],
) -> None:
    """Follow a log: cosign its checkpoints from now on (only consistent ones)."""
    try:
        origin = trust_log(folder, log_vkey)
    except WitnessFolderError as exc:
        fail(exc.code, str(exc))
    typer.echo(f"following {origin}")


@app.command()
def serve(
    folder: FolderArg,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8787,
) -> None:
    """Serve POST /add-checkpoint (C2SP tlog-witness) until interrupted."""
    import uvicorn

    witness = _open(folder)
    console.print(f"witness {witness.name} on http://{host}:{port}  vkey {witness.cosigner.vkey}")
    uvicorn.run(make_app(witness), host=host, port=port, log_level="warning")


@app.command()
def cosign(
    folder: FolderArg,
    request: Annotated[Path, typer.Argument(help="An add-checkpoint request body ('-': stdin).")],
) -> None:
    """Answer one add-checkpoint request from a file; print the cosignature line."""
    witness = _open(folder)
    try:
        if str(request) == "-":
            body = sys.stdin.buffer.read(MAX_REQUEST_BYTES + 1)
        else:
            with request.open("rb") as fh:
                body = fh.read(MAX_REQUEST_BYTES + 1)
    except OSError as exc:
        fail("CANNOT_READ", f"cannot read {request}: {exc.strerror or exc}")
    reply = witness.add_checkpoint(body)
    if not reply.ok:
        fail(reply.code, f"HTTP {reply.status}: {reply.body.decode(errors='replace').strip()}")
    typer.echo(reply.body.decode(), nl=False)


@app.command()
def show(
    folder: FolderArg,
    origin: Annotated[str | None, typer.Option(help="Log origin (default: the only one).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the checkpoint note here (for audit --since).")
    ] = None,
) -> None:
    """Print the latest checkpoint this witness cosigned, and any fork evidence."""
    witness = _open(folder)
    if origin is None:
        origins = witness.origins()
        if len(origins) != 1:
            fail("NO_ORIGIN", f"pass --origin; this witness follows {origins or 'no log yet'}")
        origin = origins[0]
    view = witness.latest(origin)
    if view is None:
        fail("NOTHING_COSIGNED", f"no checkpoint of {origin!r} cosigned yet")
    if out is not None:
        out.write_text(view.note, encoding="utf-8")
    typer.echo(view.note, nl=False)
    evidence = witness.evidence()
    for item in evidence:
        console.print(
            f"[bold red]{item['kind']}[/] recorded: the log offered a checkpoint that "
            f"contradicts the one cosigned (old size {item['old_size']})",
            highlight=False,
        )
        typer.echo(json.dumps(item, indent=1))
