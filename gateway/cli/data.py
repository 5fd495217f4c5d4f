"""``fedgate data …`` commands: synthesise a merchant world, check an ISV table and mapping."""

from __future__ import annotations

import time
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from federation._errors import DataError
from federation.data import ColumnMapping, Connector, load_mapping, make_connector
from federation.synth import SynthParams, write_world

from ._common import console, fail

app = typer.Typer(no_args_is_help=True)


class TableFormat(StrEnum):
    """Output table format."""

    parquet = "parquet"
    csv = "csv"


@app.command("synth")
def synth(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    merchants: Annotated[int, typer.Option("--merchants", min=1)] = 10_000,
    isvs: Annotated[int, typer.Option("--isvs", min=1, max=99)] = 3,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    fake_rate: Annotated[float, typer.Option("--fake-rate")] = 0.05,
    no_isv_share: Annotated[float, typer.Option("--no-isv-share")] = 0.2,
    fmt: Annotated[TableFormat, typer.Option("--format")] = TableFormat.parquet,
) -> None:
    """Write a synthetic merchant world: platform table, one ERP table per ISV, world.json."""
    try:
        params = SynthParams(merchants=merchants, isvs=isvs, seed=seed, fake_rate=fake_rate,
                             no_isv_share=no_isv_share)
    except ValueError as exc:
        fail("BAD_ARGUMENT", str(exc))
    started = time.perf_counter()
    manifest = write_world(params, out, fmt=fmt.value)
    elapsed = time.perf_counter() - started
    table = Table("table", "merchants", "default rate", "fake rate")
    world = manifest["world"]
    table.add_row(str(manifest["platform_file"]), str(world["merchants"]),
                  f"{world['default_rate']:.2%}", f"{world['fake_rate']:.2%}")
    for isv, info in manifest["isvs"].items():
        table.add_row(f"{info['file']} ({isv})", str(info["merchants"]),
                      f"{info['default_rate']:.2%}", f"{info['fake_rate']:.2%}")
    table.add_row("(no ISV)", str(manifest["no_isv"]["merchants"]), "", "")
    console.print(table)
    console.print(f"wrote {out} in {elapsed:.1f} s (snapshots {manifest['data_from']} .. "
                  f"{manifest['data_to']})")


def _connector(source: str, table: str | None, mapping: ColumnMapping) -> Connector:
    # The same connectors a node reads through (NodeConfig's erp-connector).
    if table is not None:
        return make_connector("sql", url=source, table=table, mapping=mapping)
    if source.endswith((".parquet", ".csv")):
        return make_connector("", path=source, mapping=mapping)
    fail("BAD_ARGUMENT", "source must end in .csv or .parquet, or give --table for a SQL URL")


@app.command("check")
def check(
    source: Annotated[str, typer.Argument(help="CSV/Parquet file, or SQLAlchemy URL + --table.")],
    data_from: Annotated[str, typer.Option("--from", help="Consented range start, YYYY-MM-DD.")],
    data_to: Annotated[str, typer.Option("--to", help="Consented range end, YYYY-MM-DD.")],
    mapping: Annotated[Path | None, typer.Option("--mapping", help="Column-mapping TOML.")] = None,
    table: Annotated[str | None, typer.Option("--table", help="SQL table name.")] = None,
) -> None:
    """Validate an ISV's ERP table against the schema through its column mapping."""
    try:
        lo, hi = date.fromisoformat(data_from), date.fromisoformat(data_to)
    except ValueError as exc:
        fail("BAD_ARGUMENT", f"dates must be YYYY-MM-DD: {exc}")
    try:
        cmap = load_mapping(mapping) if mapping is not None else ColumnMapping()
        df = _connector(source, table, cmap).read(data_from=lo, data_to=hi)
    except DataError as exc:
        fail(exc.code, str(exc))
    console.print(f"ok: {len(df)} merchants, {len(df.columns) - 2} ERP fields, "
                  f"snapshots {df['as_of'].min():%Y-%m-%d} .. {df['as_of'].max():%Y-%m-%d}")
