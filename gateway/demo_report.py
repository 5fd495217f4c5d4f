"""The demo's HTML report: what ran, what it measured, what it paid (one self-contained page)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .demo_html import bar_chart, histogram, table, write_report

if TYPE_CHECKING:
    from .demo import DemoReport

__all__ = ["write_demo_html"]


_NOTE = (
    '<p class="note">{n} merchants paused their consent before month 4 and dropped out of '
    "the data-based rules (the overdue rule reads the platform's own loan book). Monitoring "
    "signals after the single ERP snapshot are simulated from the world's ground truth; in "
    "month 3 the simulated month is written into each ISV's ERP and the rules read the "
    "changes the nodes released (an erp-changes query), never the levels.</p>"
)


def _yuan(fen: int) -> str:
    return f"{fen / 100:,.2f}"


def write_demo_html(r: DemoReport, path: Path) -> Path:
    """Write the report for ``r`` to ``path`` (charts as inline SVG) and return ``path``."""
    sections: list[tuple[str, str]] = []
    sections.append(
        (
            "Run",
            table(
                ["item", "value"],
                [
                    [
                        "merchants / ISVs / DP rounds / seed",
                        f"{r.merchants} / {len(r.isvs)} / {r.rounds} / {r.seed}",
                    ],
                    [
                        "consents granted / revoked after round 1",
                        f"{r.consents_granted} / {r.consents_revoked}",
                    ],
                    ["all checks", "OK" if r.ok else "FAILED"],
                    ["wall time", f"{r.seconds:.0f} s"],
                ],
            ),
        )
    )
    names = [a.name for a in r.aucs]
    sections.append(
        (
            "Default AUC with and without ISV data",
            bar_chart(
                f"AUC on {r.n_holdout} held-out merchants",
                names,
                {
                    "all held-out": [a.auc_all for a in r.aucs],
                    "held-out with an ERP score": [a.auc_erp for a in r.aucs],
                },
                fmt="{:.3f}",
                xmax=1.0,
            ),
        )
    )
    isvs = sorted(r.epsilon)
    sections.append(
        (
            "Privacy: ε spent per node",
            bar_chart(
                f"ε (δ = {r.delta:g})",
                isvs,
                {"spent": [r.epsilon[k] for k in isvs], "budget": [r.epsilon_budget] * len(isvs)},
                fmt="{:.2f}",
            ),
        )
    )
    m = r.money
    if m is not None:
        sections.append(
            (
                "Credit lines",
                bar_chart(
                    f"{m.merchants} merchants under policy v{m.policy_version} "
                    f"(sha256 {m.policy_sha256[:12]}…)",
                    [
                        "raised by ISV data",
                        "lowered by ISV data",
                        "unchanged",
                        "given a line they had not",
                        "off-platform merchants",
                    ],
                    {
                        "merchants": [
                            m.raised,
                            m.lowered,
                            m.unchanged,
                            m.newly_given,
                            m.off_platform,
                        ]
                    },
                )
                + table(
                    ["exposure", "yuan"],
                    [
                        ["total line, platform data only", _yuan(m.exposure_f)],
                        ["total line, with ISV data", _yuan(m.exposure_with)],
                        ["g scores dropped by the consent gate", str(m.scores_gated)],
                    ],
                ),
            )
        )
        sections.append(
            (
                "Distribution of uplift",
                histogram(
                    "uplift = line with ISV data − line without (yuan), "
                    "platform merchants with a change",
                    [u / 100 for u in m.uplifts],
                    unit=" ¥",
                ),
            )
        )
        rules = sorted(m.alerts_by_rule)
        sections.append(
            (
                "Post-loan monitoring",
                bar_chart(
                    "alerts by rule over six months",
                    rules or ["none"],
                    {"alerts": [m.alerts_by_rule[k] for k in rules] or [0]},
                )
                + bar_chart(
                    "fake-trade catches",
                    [
                        "fake-trade merchants with a loan",
                        "caught by the rule",
                        "merchants with a fake-trade alert",
                    ],
                    {"merchants": [m.fake_trade_loans, m.fake_trade_caught, m.fake_trade_alerts]},
                )
                + table(["action", "count"], sorted(m.actions.items()))
                + _NOTE.format(n=m.paused_monitoring),
            )
        )
        sections.append(
            (
                "Six months, closed and settled",
                table(
                    [
                        "period",
                        "loans",
                        "interest (¥)",
                        "on uplift (¥)",
                        "fees (¥)",
                        "shares (¥)",
                        "alerts",
                        "statements tie",
                    ],
                    [
                        [
                            x.period,
                            x.loans,
                            _yuan(x.interest),
                            _yuan(x.uplift_interest),
                            _yuan(sum(x.fees.values())),
                            _yuan(sum(x.shares.values())),
                            sum(x.alerts.values()),
                            "yes" if x.ties_to_book else "NO",
                        ]
                        for x in m.months
                    ],
                ),
            )
        )
        isv_pay = sorted(set(m.fees_total) | set(m.shares_total))
        sections.append(
            (
                "Fees and shares per ISV",
                bar_chart(
                    "paid to each ISV over six months (yuan)",
                    isv_pay,
                    {
                        "data-usage fees": [m.fees_total.get(k, 0) / 100 for k in isv_pay],
                        "interest shares": [m.shares_total.get(k, 0) / 100 for k in isv_pay],
                    },
                    fmt="{:,.2f}",
                )
                + table(
                    ["ISV", "fees (¥)", "shares (¥)", "shares clawed back (¥)", "netted (¥)",
                     "cleared (¥)"],
                    [
                        [
                            k,
                            _yuan(m.fees_total.get(k, 0)),
                            _yuan(m.shares_total.get(k, 0)),
                            _yuan(m.clawbacks.get(k, 0)),
                            _yuan(m.netted.get(k, 0)),
                            _yuan(m.settled_cleared.get(k, 0)),
                        ]
                        for k in isv_pay
                    ],
                ),
            )
        )
        sections.append(
            (
                "Loans",
                table(
                    ["item", "value"],
                    [
                        [
                            "loans / events imported (a resent file added)",
                            f"{m.loans} / {m.events} ({m.import_repeat_added})",
                        ],
                        [
                            "write-offs / written off (¥)",
                            f"{m.write_offs} / {_yuan(m.written_off)}",
                        ],
                        ["early collections", str(m.collected)],
                        ["book balanced (Σdebits = Σcredits)", "yes" if m.balanced else "NO"],
                    ],
                ),
            )
        )
    sections.append(
        (
            "Ledger and offline audit",
            table(
                ["item", "value"],
                [
                    ["entries", str(r.ledger_entries)],
                    ["checkpoints", str(r.ledger_checkpoints)],
                    ["offline audit", "OK" if r.audit_ok else f"FAILED {r.audit_failure}"],
                    *[[k, str(n)] for k, n in r.ledger_kinds.items()],
                ],
            ),
        )
    )
    return write_report(path, "fedgate demo report", sections)
