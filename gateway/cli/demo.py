"""``fedgate demo``: the synthetic world end to end, with progress bars and a results table.

Thin: :func:`gateway.demo.run_demo` does the work in ``<data-dir>/demo/`` (its
own SQLite database and keys, wiped at start); this command draws the progress
bars and prints the report. It exits 1 if a job fails or any check does not
hold (audit, revoked merchants absent, ε within budget).
"""

from __future__ import annotations

import math
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .. import demo as demo_service
from ..demo_money import MoneyReport
from ._common import console, fail, settings


def _num(value: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _ok(flag: bool) -> str:
    return "[bold green]OK[/]" if flag else "[bold red]FAILED[/]"


def _print_report(r: demo_service.DemoReport) -> None:
    """The results: AUCs, rounds and receipts, ε, consents, ledger audit."""
    aucs = Table(
        "PD estimate",
        f"AUC, held-out merchants (n={r.n_holdout}, {r.holdout_defaults} defaults)",
        f"AUC, held-out with ERP score (n={r.n_holdout_erp})",
        title="Credit-risk AUC on held-out merchants",
    )
    for row in r.aucs:
        name = f"[dim]{row.name}*[/]" if row.reference else row.name
        aucs.add_row(name, _num(row.auc_all), _num(row.auc_erp))
    console.print(aucs)
    console.print(
        "[dim]* reference only: g trained on pooled ERP data with the same bins, model and "
        f"DP-SGD budget (ε={r.central_epsilon:.2f}); a real deployment cannot compute it, "
        "ERP data never leaves the ISVs.[/]"
    )

    rounds = Table(
        "round",
        "ISV",
        "merchants in manifest",
        "rows trained (receipt)",
        "revoked in manifest",
        "receipt hash = consented set",
        "ε so far",
        title=f"Federated pd-erp rounds ({REVOKE_NOTE.format(n=r.consents_revoked)})",
    )
    for u in r.usage:
        rounds.add_row(
            str(u.round),
            u.isv,
            str(u.manifest_merchants),
            str(u.rows_used),
            str(u.revoked_in_manifest),
            _ok(u.hash_matches),
            f"{u.epsilon:.2f}",
        )
    console.print(rounds)
    console.print(
        "federated g AUC on the nodes' held-out merchants, by round (± the nodes' release "
        "noise; round kept: the last unless an earlier one is better beyond it): "
        + ", ".join(f"{_num(a)} ± {_num(s)}" for a, s in r.round_auc)
    )

    summary = Table(show_header=False, title="Summary")
    summary.add_column("item", no_wrap=True)
    summary.add_column("value", overflow="fold")
    eps = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.epsilon.items()))
    summary.add_row("ε spent per node", f"{eps}  (budget {r.epsilon_budget:g}, δ={r.delta:g})")
    summary.add_row(
        "consents", f"{r.consents_granted} granted, {r.consents_revoked} revoked after round 1"
    )
    summary.add_row(
        "revoked merchants",
        f"{_ok(r.revoked_absent)} absent from rounds 2..{r.rounds} "
        f"and from scoring ({r.revoked_scored} scored): {', '.join(r.revoked)}",
    )
    summary.add_row("g scores returned", str(r.n_scores))
    kinds = r.ledger_kinds
    consent_n = sum(n for k, n in kinds.items() if k.startswith("consent."))
    detail = ", ".join(f"{k} {n}" for k, n in kinds.items())
    summary.add_row(
        "ledger",
        f"{r.ledger_entries} entries: data.used {kinds.get('data.used', 0)}, "
        f"consent.* {consent_n} ({detail})",
    )
    audit = _ok(r.audit_ok) + (f" {r.audit_failure}" if r.audit_failure else "")
    summary.add_row(
        "offline audit",
        f"{audit}: {r.ledger_entries} entries recomputed, {r.ledger_checkpoints} checkpoints "
        f"verified ({r.export_path})",
    )
    summary.add_row(
        "outputs", f"model {r.model_path}\nscores {r.scores_path}\nHTML report {r.html_path}"
    )
    summary.add_row("wall time", f"{r.seconds:.0f} s")
    console.print(summary)
    if r.money is not None:
        _print_money(r.money)


def _yuan(fen: int) -> str:
    return f"{fen / 100:,.2f}"


def _print_money(m: MoneyReport) -> None:
    """Lines, months, monitoring and payouts."""
    lines = Table(show_header=False, title=f"Credit lines (policy v{m.policy_version})")
    lines.add_column("item", no_wrap=True)
    lines.add_column("value")
    lines.add_row("merchants decided", f"{m.merchants} ({m.off_platform} off-platform)")
    lines.add_row(
        "ISV data",
        f"raised {m.raised}, lowered {m.lowered}, unchanged {m.unchanged}; "
        f"{m.newly_given} given a line they did not have",
    )
    lines.add_row(
        "total line, f only → with ISV data",
        f"{_yuan(m.exposure_f)} → {_yuan(m.exposure_with)} yuan",
    )
    lines.add_row("g scores dropped by the consent gate", str(m.scores_gated))
    lines.add_row(
        "loans / events (a resent file added)", f"{m.loans} / {m.events} ({m.import_repeat_added})"
    )
    lines.add_row(
        "monitoring", ", ".join(f"{k} {v}" for k, v in sorted(m.alerts_by_rule.items())) or "none"
    )
    lines.add_row("actions", ", ".join(f"{k} {v}" for k, v in sorted(m.actions.items())) or "none")
    lines.add_row(
        "fake-trade catches",
        f"{m.fake_trade_caught} of {m.fake_trade_loans} fake-trade borrowers "
        f"({m.fake_trade_alerts} merchants alerted)",
    )
    lines.add_row("paused consents (month 4)", str(m.paused_monitoring))
    lines.add_row(
        "off-platform line base from the nodes (revenue-3m)",
        f"{m.revenue_released} merchants",
    )
    lines.add_row(
        "month 3 from the nodes",
        f"{m.rescored} re-scored PDs, {m.signals_released} merchants' ERP changes (erp-changes)",
    )
    lines.add_row("write-offs", f"{m.write_offs} ({_yuan(m.written_off)} yuan)")
    console.print(lines)
    months = Table(
        "period",
        "loans",
        "interest ¥",
        "on uplift ¥",
        "fees ¥",
        "shares ¥",
        "alerts",
        "ties",
        title="Six months closed and settled",
    )
    for x in m.months:
        months.add_row(
            x.period,
            str(x.loans),
            _yuan(x.interest),
            _yuan(x.uplift_interest),
            _yuan(sum(x.fees.values())),
            _yuan(sum(x.shares.values())),
            str(sum(x.alerts.values())),
            _ok(x.ties_to_book),
        )
    console.print(months)
    pay = Table("ISV", "fees ¥", "shares ¥", "clawed back ¥", "netted ¥", "cleared ¥",
                title="Paid to ISVs (cleared = fees + shares − netted claw-backs)")
    for k in sorted(set(m.fees_total) | set(m.shares_total)):
        pay.add_row(
            k,
            _yuan(m.fees_total.get(k, 0)),
            _yuan(m.shares_total.get(k, 0)),
            _yuan(m.clawbacks.get(k, 0)),
            _yuan(m.netted.get(k, 0)),
            _yuan(m.settled_cleared.get(k, 0)),
        )
    console.print(pay)
    console.print(f"book balanced: {_ok(m.balanced)}")


REVOKE_NOTE = "{n} consents revoked after round 1"


def demo(
    merchants: Annotated[
        int, typer.Option("--merchants", min=100, help="Merchants in the synthetic world.")
    ] = demo_service.DEFAULT_MERCHANTS,
    isvs: Annotated[
        int, typer.Option("--isvs", min=1, max=99, help="ISV nodes.")
    ] = demo_service.DEFAULT_ISVS,
    rounds: Annotated[
        int, typer.Option("--rounds", min=2, help="Federated rounds.")
    ] = demo_service.DEFAULT_ROUNDS,
    seed: Annotated[int, typer.Option("--seed")] = demo_service.DEFAULT_SEED,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a previous demo's data.")
    ] = False,
) -> None:
    """Run the whole loop: consents, federated DP training, scoring, lines, loans, settlement."""
    cfg = settings()
    console.print(
        f"fedgate demo: {merchants} merchants, {isvs} ISVs, {rounds} rounds, seed {seed} "
        f"in {cfg.data_dir / demo_service.DEMO_DIR} (Flower simulation runtime, SQLite)"
    )
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>.0f}/{task.total:.0f}"),
        TimeElapsedColumn(),
        console=console,
    )
    try:
        with progress:
            report = demo_service.run_demo(
                cfg,
                merchants=merchants,
                isvs=isvs,
                rounds=rounds,
                seed=seed,
                progress=progress,
                overwrite=overwrite,
            )
    except demo_service.DemoError as exc:
        fail(exc.code, str(exc))
    _print_report(report)
    if not report.ok:
        fail("DEMO_CHECK_FAILED", "a check did not hold (see the summary above)")
