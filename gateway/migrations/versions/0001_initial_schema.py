"""initial schema: ledger log, book, consent

Revision ID: 0001
Revises:
Create Date: 2026-11-28 16:02:58.154020

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from consent._models import UTCDateTime
from ledger._book_models import BOOK_TRIGGERS

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "book_accounts",
        sa.Column("code", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("allow_negative", sa.Boolean(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('asset', 'liability', 'equity', 'income', 'expense')",
            name=op.f("ck_book_accounts_kind"),
        ),
        sa.CheckConstraint("length(currency) = 3", name=op.f("ck_book_accounts_currency_len")),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_book_accounts")),
        sa.UniqueConstraint("code", "currency", name="uq_book_accounts_code_currency"),
    )
    op.create_table(
        "ledger_checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("origin", sa.String(length=255), nullable=False),
        sa.Column("signed_note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_ledger_checkpoints")),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("leaf_data", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_entries")),
    )
    op.create_index(op.f("ix_ledger_entries_kind"), "ledger_entries", ["kind"], unique=False)
    op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_ledger_head_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_head")),
    )
    op.create_table(
        "ledger_tree_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "index", name=op.f("pk_ledger_tree_nodes")),
    )
    op.create_table(
        "book_transfers",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("debit_account", sa.String(length=128), nullable=False),
        sa.Column("credit_account", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("link_id", sa.String(length=128), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("request_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("log_seq", sa.BigInteger(), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_book_transfers_amount_positive")),
        sa.CheckConstraint(
            "debit_account <> credit_account", name=op.f("ck_book_transfers_distinct_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["credit_account", "currency"],
            ["book_accounts.code", "book_accounts.currency"],
            name="fk_book_transfers_credit_currency",
        ),
        sa.ForeignKeyConstraint(
            ["debit_account", "currency"],
            ["book_accounts.code", "book_accounts.currency"],
            name="fk_book_transfers_debit_currency",
        ),
        sa.ForeignKeyConstraint(
            ["log_seq"],
            ["ledger_entries.seq"],
            name=op.f("fk_book_transfers_log_seq_ledger_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_book_transfers")),
        sa.UniqueConstraint("log_seq", name=op.f("uq_book_transfers_log_seq")),
    )
    op.create_index(
        "ix_book_transfers_credit_account", "book_transfers", ["credit_account"], unique=False
    )
    op.create_index(
        "ix_book_transfers_debit_account", "book_transfers", ["debit_account"], unique=False
    )
    op.create_index("ix_book_transfers_link_id", "book_transfers", ["link_id"], unique=False)
    # Postings are append-only in the database too, not only in code.
    for ddl in BOOK_TRIGGERS.get(op.get_bind().dialect.name, []):
        op.execute(ddl)
    op.create_table(
        "consent_artefacts",
        sa.Column("consent_id", sa.String(length=128), nullable=False),
        sa.Column("merchant_id", sa.String(length=128), nullable=False),
        sa.Column("data_provider", sa.String(length=128), nullable=False),
        sa.Column("data_consumer", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("supersedes", sa.String(length=128), nullable=True),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("artefact_hash", sa.String(length=64), nullable=False),
        sa.Column("merchant_signature", sa.Text(), nullable=True),
        sa.Column("merchant_key", sa.Text(), nullable=True),
        sa.Column("consent_start", UTCDateTime(timezone=True), nullable=False),
        sa.Column("consent_expiry", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["supersedes"],
            ["consent_artefacts.consent_id"],
            name=op.f("fk_consent_artefacts_supersedes_consent_artefacts"),
        ),
        sa.PrimaryKeyConstraint("consent_id", name=op.f("pk_consent_artefacts")),
        sa.UniqueConstraint("artefact_hash", name=op.f("uq_consent_artefacts_artefact_hash")),
        sa.UniqueConstraint("supersedes", name=op.f("uq_consent_artefacts_supersedes")),
    )
    op.create_index(
        "ix_consent_artefacts_party",
        "consent_artefacts",
        ["data_provider", "merchant_id"],
        unique=False,
    )
    op.create_table(
        "consent_events",
        sa.Column("consent_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["consent_id"],
            ["consent_artefacts.consent_id"],
            name=op.f("fk_consent_events_consent_id_consent_artefacts"),
        ),
        sa.PrimaryKeyConstraint("consent_id", "version", name=op.f("pk_consent_events")),
        sa.UniqueConstraint("ledger_seq", name=op.f("uq_consent_events_ledger_seq")),
    )
    op.create_table(
        "consent_state",
        sa.Column("consent_id", sa.String(length=128), nullable=False),
        sa.Column("merchant_id", sa.String(length=128), nullable=False),
        sa.Column("data_provider", sa.String(length=128), nullable=False),
        sa.Column("data_consumer", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("use_count", sa.BigInteger(), nullable=False),
        sa.Column("period_uses", sa.Integer(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["consent_id"],
            ["consent_artefacts.consent_id"],
            name=op.f("fk_consent_state_consent_id_consent_artefacts"),
        ),
        sa.PrimaryKeyConstraint("consent_id", name=op.f("pk_consent_state")),
    )
    op.create_index(
        "ix_consent_state_merchant",
        "consent_state",
        ["merchant_id", "data_provider", "data_consumer"],
        unique=False,
    )
    op.create_index(
        "ix_consent_state_provider_status",
        "consent_state",
        ["data_provider", "status"],
        unique=False,
    )


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS book_transfers_append_only ON book_transfers")
        op.execute("DROP FUNCTION IF EXISTS book_transfers_append_only()")
    op.drop_index("ix_consent_state_provider_status", table_name="consent_state")
    op.drop_index("ix_consent_state_merchant", table_name="consent_state")
    op.drop_table("consent_state")
    op.drop_table("consent_events")
    op.drop_index("ix_consent_artefacts_party", table_name="consent_artefacts")
    op.drop_table("consent_artefacts")
    op.drop_index("ix_book_transfers_link_id", table_name="book_transfers")
    op.drop_index("ix_book_transfers_debit_account", table_name="book_transfers")
    op.drop_index("ix_book_transfers_credit_account", table_name="book_transfers")
    op.drop_table("book_transfers")
    op.drop_table("ledger_tree_nodes")
    op.drop_table("ledger_head")
    op.drop_index(op.f("ix_ledger_entries_kind"), table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_table("ledger_checkpoints")
    op.drop_table("book_accounts")
