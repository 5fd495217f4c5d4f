"""credit: policy versions, line decisions, loans, loan events, imports, closes, accruals,
alerts, settlements (gateway.credit)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 05:19:13

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "credit_accruals",
        sa.Column("loan_id", sa.String(length=128), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("balance_days", sa.BigInteger(), nullable=False),
        sa.Column("uplift_balance_days", sa.BigInteger(), nullable=False),
        sa.Column("interest", sa.BigInteger(), nullable=False),
        sa.Column("uplift_interest", sa.BigInteger(), nullable=False),
        sa.Column("closing_balance", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("loan_id", "period", name=op.f("pk_credit_accruals")),
    )
    op.create_index("ix_credit_accruals_period", "credit_accruals", ["period"], unique=False)
    op.create_table(
        "credit_alerts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("pass_id", sa.String(length=64), nullable=False),
        sa.Column("merchant_id", sa.String(length=128), nullable=False),
        sa.Column("loan_id", sa.String(length=128), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("log_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_alerts")),
    )
    op.create_index(
        op.f("ix_credit_alerts_merchant_id"), "credit_alerts", ["merchant_id"], unique=False
    )
    op.create_table(
        "credit_imports",
        sa.Column("import_id", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("added", sa.BigInteger(), nullable=False),
        sa.Column("events_digest", sa.String(length=64), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("log_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("import_id", name=op.f("pk_credit_imports")),
    )
    op.create_table(
        "credit_line_decisions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("merchant_id", sa.String(length=128), nullable=False),
        sa.Column("basis", sa.String(length=16), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("sales_3m", sa.BigInteger(), nullable=False),
        sa.Column("pd_f", sa.Float(), nullable=True),
        sa.Column("pd_with", sa.Float(), nullable=True),
        sa.Column("line_f", sa.BigInteger(), nullable=False),
        sa.Column("line_with", sa.BigInteger(), nullable=False),
        sa.Column("uplift", sa.BigInteger(), nullable=False),
        sa.Column("attribution", sa.JSON(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("log_seq", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "basis IN ('platform', 'off-platform')", name=op.f("ck_credit_line_decisions_basis")
        ),
        sa.CheckConstraint(
            "line_f >= 0 AND line_with >= 0",
            name=op.f("ck_credit_line_decisions_lines_nonnegative"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_line_decisions")),
    )
    op.create_index(
        "ix_credit_line_decisions_merchant",
        "credit_line_decisions",
        ["merchant_id", "id"],
        unique=False,
    )
    op.create_table(
        "credit_loan_events",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("loan_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("import_id", sa.String(length=64), nullable=False),
        sa.CheckConstraint(
            "kind IN ('drawdown', 'repayment', 'write_off', 'line_change')",
            name=op.f("ck_credit_loan_events_kind"),
        ),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_credit_loan_events_amount_nonnegative")),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_credit_loan_events")),
    )
    op.create_index("ix_credit_loan_events_day", "credit_loan_events", ["day"], unique=False)
    op.create_index(
        "ix_credit_loan_events_loan_on", "credit_loan_events", ["loan_id", "day"], unique=False
    )
    op.create_table(
        "credit_loans",
        sa.Column("loan_id", sa.String(length=128), nullable=False),
        sa.Column("merchant_id", sa.String(length=128), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("rate_bp", sa.Integer(), nullable=False),
        sa.Column("decision_id", sa.BigInteger(), nullable=True),
        sa.Column("line_f", sa.BigInteger(), nullable=False),
        sa.Column("line_with", sa.BigInteger(), nullable=False),
        sa.Column("line_limit", sa.BigInteger(), nullable=False),
        sa.Column("frozen", sa.Boolean(), nullable=False),
        sa.Column("attribution", sa.JSON(), nullable=False),
        sa.Column("opened_on", sa.Date(), nullable=False),
        sa.CheckConstraint(
            "rate_bp >= 0 AND rate_bp <= 100000", name=op.f("ck_credit_loans_rate_bp")
        ),
        sa.PrimaryKeyConstraint("loan_id", name=op.f("pk_credit_loans")),
    )
    op.create_index(
        op.f("ix_credit_loans_merchant_id"), "credit_loans", ["merchant_id"], unique=False
    )
    op.create_table(
        "credit_period_closes",
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("loans", sa.BigInteger(), nullable=False),
        sa.Column("interest", sa.BigInteger(), nullable=False),
        sa.Column("uplift_interest", sa.BigInteger(), nullable=False),
        sa.Column("accruals_digest", sa.String(length=64), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("log_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("period", name=op.f("pk_credit_period_closes")),
    )
    op.create_table(
        "credit_policy_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_hash", sa.String(length=64), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("log_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_credit_policy_versions")),
    )
    op.create_table(
        "credit_settlements",
        sa.Column("isv", sa.String(length=128), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("share", sa.BigInteger(), nullable=False),
        sa.Column("instructed", sa.BigInteger(), nullable=False),
        sa.Column("cleared", sa.BigInteger(), nullable=False),
        sa.Column("statement_sha256", sa.String(length=64), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "cleared <= instructed AND instructed <= fee + share",
            name=op.f("ck_credit_settlements_paid_le_due"),
        ),
        sa.PrimaryKeyConstraint("isv", "period", name=op.f("pk_credit_settlements")),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("credit_settlements")
    op.drop_table("credit_policy_versions")
    op.drop_table("credit_period_closes")
    op.drop_index(op.f("ix_credit_loans_merchant_id"), table_name="credit_loans")
    op.drop_table("credit_loans")
    op.drop_index("ix_credit_loan_events_loan_on", table_name="credit_loan_events")
    op.drop_index("ix_credit_loan_events_day", table_name="credit_loan_events")
    op.drop_table("credit_loan_events")
    op.drop_index("ix_credit_line_decisions_merchant", table_name="credit_line_decisions")
    op.drop_table("credit_line_decisions")
    op.drop_table("credit_imports")
    op.drop_index(op.f("ix_credit_alerts_merchant_id"), table_name="credit_alerts")
    op.drop_table("credit_alerts")
    op.drop_index("ix_credit_accruals_period", table_name="credit_accruals")
    op.drop_table("credit_accruals")
