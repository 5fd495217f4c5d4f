"""``fedgate data …``: synthesise a world, check tables (one table or a job config), examples."""

from __future__ import annotations

import time
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from federation import DataError
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
    default_rate: Annotated[
        float, typer.Option("--default-rate", help="Target 12-month default rate.")
    ] = 0.05,
    no_isv_share: Annotated[float, typer.Option("--no-isv-share")] = 0.2,
    off_platform_share: Annotated[
        float,
        typer.Option("--off-platform-share", help="Share of the ISV merchants with no platform "
                     "row (ERP data only); their ground truth goes to "
                     "ground-truth-off-platform.<format>, for simulations only."),
    ] = 0.0,
    fmt: Annotated[TableFormat, typer.Option("--format")] = TableFormat.parquet,
) -> None:
    """Write a synthetic merchant world: platform table, one ERP table per ISV, world.json."""
    try:
        params = SynthParams(merchants=merchants, isvs=isvs, seed=seed, fake_rate=fake_rate,
                             default_rate=default_rate, no_isv_share=no_isv_share,
                             off_platform_share=off_platform_share)
    except ValueError as exc:
        fail("BAD_ARGUMENT", str(exc))
    started = time.perf_counter()
    manifest = write_world(params, out, fmt=fmt.value)
    elapsed = time.perf_counter() - started
    table = Table("table", "merchants", "default rate", "fake rate")
    world = manifest["world"]
    off = manifest.get("off_platform")
    on_platform = world["merchants"] - (off["merchants"] if off else 0)
    table.add_row(str(manifest["platform_file"]), str(on_platform),
                  f"{world['default_rate']:.2%}" + (" (all)" if off else ""),
                  f"{world['fake_rate']:.2%}" + (" (all)" if off else ""))
    for isv, info in manifest["isvs"].items():
        table.add_row(f"{info['file']} ({isv})", str(info["merchants"]),
                      f"{info['default_rate']:.2%}", f"{info['fake_rate']:.2%}")
    table.add_row("(no ISV)", str(manifest["no_isv"]["merchants"]), "", "")
    if off:
        table.add_row(f"{off['ground_truth_file']} (off-platform: ERP only; ground truth)",
                      str(off["merchants"]), f"{off['default_rate']:.2%}",
                      f"{off['fake_rate']:.2%}")
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
    source: Annotated[
        str | None, typer.Argument(help="CSV/Parquet file, or SQLAlchemy URL + --table.")
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="Job configuration TOML: check every table it names."),
    ] = None,
    data_from: Annotated[
        str | None, typer.Option("--from", help="Consented range start, YYYY-MM-DD.")
    ] = None,
    data_to: Annotated[
        str | None, typer.Option("--to", help="Consented range end, YYYY-MM-DD.")
    ] = None,
    mapping: Annotated[Path | None, typer.Option("--mapping", help="Column-mapping TOML.")] = None,
    table: Annotated[str | None, typer.Option("--table", help="SQL table name.")] = None,
    spec: Annotated[
        Path | None,
        typer.Option("--spec", help="With --config: a spec TOML whose extra fields every ISV "
                     "must declare identically."),
    ] = None,
) -> None:
    """Validate tables against the schema: every table of a job config, or one ISV table.

    The same validator runs before every ``fedgate fl run --config``.
    """
    if config_file is not None:
        if source is not None:
            fail("BAD_ARGUMENT", "give --config or a source, not both")
        from federation import SpecError
        from federation.jobconfig import check_job_config, load_job_config
        from federation.specs import load_spec_file

        try:
            extras = load_spec_file(spec).extras if spec is not None else ()
            reports = check_job_config(load_job_config(config_file), extras)
        except (DataError, SpecError) as exc:
            fail(exc.code, str(exc))
        out = Table("table", "rows", "fields present", "declared absent", "missing values")
        for r in reports:
            share = ", ".join(f"{f} {v:.1%}" for f, v in r.missing_share.items() if v > 0)
            out.add_row(r.name, str(r.rows), ", ".join(r.present), str(len(r.absent)),
                        share or "none")
        console.print(out)
        console.print(f"ok: {config_file} ({len(reports) - 1} ISV tables and the platform table)")
        return
    if spec is not None:
        fail("BAD_ARGUMENT", "--spec goes with --config")
    if source is None or data_from is None or data_to is None:
        fail("BAD_ARGUMENT", "give --config, or a source with --from and --to")
    try:
        lo, hi = date.fromisoformat(data_from), date.fromisoformat(data_to)
    except ValueError as exc:
        fail("BAD_ARGUMENT", f"dates must be YYYY-MM-DD: {exc}")
    try:
        cmap = load_mapping(mapping) if mapping is not None else ColumnMapping()
        df = _connector(source, table, cmap).read(data_from=lo, data_to=hi)
    except DataError as exc:
        fail(exc.code, str(exc))
    present = cmap.present([c for c in df.columns if c not in ("merchant_id", "as_of")])
    absent = f" ({len(cmap.absent)} declared absent: {', '.join(sorted(cmap.absent))})" \
        if cmap.absent else ""
    console.print(f"ok: {len(df)} merchants, {len(present)} ERP fields present{absent}, "
                  f"snapshots {df['as_of'].min():%Y-%m-%d} .. {df['as_of'].max():%Y-%m-%d}")


@app.command("example")
def example(
    name: Annotated[str, typer.Argument(help="Example data set: credit-data.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Write a public data set as a new user's exports (the README's walkthrough data)."""
    if name != "credit-data":
        fail("BAD_ARGUMENT", f"unknown example {name!r}; known: credit-data")
    from federation.byod_example import write_credit_data_example

    try:
        summary = write_credit_data_example(out, seed=seed)
    except DataError as exc:
        fail(exc.code, str(exc))
    isvs = ", ".join(f"{k} ({v})" for k, v in summary["isvs"].items())
    console.print(f"wrote {out}: {summary['merchants']} merchants ({summary['test']} kept back "
                  f"with labels in test_labels.csv), ISVs: {isvs}")
