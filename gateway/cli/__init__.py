"""The ``fedgate`` command line: one Typer app, one sub-app per area.

Each area's commands live in their own module (``ledger.py``, ``audit.py``,
``consent.py``, ``data.py``, ``federation.py``, ``demo.py``) and only translate between the
terminal and the packages underneath; the logic is in ``ledger/``, ``consent/``
and ``federation/``.
"""

from __future__ import annotations

import os

# Privacy defaults before anything can import Flower: nothing phones home.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

import typer

from . import audit, book, consent, data, db, demo, federation, ledger, witness
from . import node as node_cli
from . import platform as platform_cli

# isort: split
from . import credit, loans, monitor, retention, settle

app = typer.Typer(
    name="fedgate",
    help="Privacy-preserving federated data-sharing gateway for merchant credit.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(ledger.app, name="ledger", help="The transparency log and the book.")
app.add_typer(book.app, name="book", help="The double-entry book: accounts, transfers, balances.")
app.add_typer(audit.app, name="audit", help="Offline verification for auditors.")
app.add_typer(consent.app, name="consent", help="Merchant consents: grant, pause, revoke, check.")
app.add_typer(data.app, name="data", help="ERP and platform data: synthesis, connectors.")
app.add_typer(federation.app, name="fl", help="Federated training and scoring jobs.")
app.add_typer(db.app, name="db", help="Database schema migrations.")
app.add_typer(witness.app, name="witness", help="A C2SP tlog witness: cosigns consistent logs.")
app.add_typer(node_cli.app, name="node", help="An ISV node: keygen, check, run (SuperNode).")
app.add_typer(
    platform_cli.app, name="federation", help="Platform: SuperLink, proxy, release, onboarding."
)
app.add_typer(platform_cli.certs_app, name="certs", help="Federation CA and TLS certificates.")
app.command("demo")(demo.demo)
app.add_typer(credit.app, name="credit", help="Credit policy and pre-approved lines.")
app.add_typer(loans.app, name="loans", help="Loan events from the lending system.")
app.add_typer(monitor.app, name="monitor", help="Post-loan monitoring.")
app.add_typer(
    retention.app, name="retention", help="Delete derived data past its consent's data life."
)
app.command("settle")(settle.settle)
app.command("statements")(settle.statements)


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
