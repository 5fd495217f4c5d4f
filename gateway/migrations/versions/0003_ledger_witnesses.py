"""ledger: witness cosignatures on checkpoints; every book table append-only

``ledger_cosignatures`` holds the C2SP cosignature/v1 lines that witnesses
returned for a stored checkpoint. ``book_accounts`` gets the same
append-only triggers as ``book_transfers`` (no UPDATE, no DELETE).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 06:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ledger._book_models import book_triggers

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "ledger_cosignatures",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("vkey", sa.String(length=1024), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("cosigned_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["size"],
            ["ledger_checkpoints.size"],
            name=op.f("fk_ledger_cosignatures_size_ledger_checkpoints"),
        ),
        sa.PrimaryKeyConstraint("size", "vkey", name=op.f("pk_ledger_cosignatures")),
    )
    for ddl in book_triggers(op.get_bind().dialect.name, ("book_accounts",)):
        op.execute(ddl)


def downgrade() -> None:
    """Downgrade schema."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS book_accounts_no_update")
        op.execute("DROP TRIGGER IF EXISTS book_accounts_no_delete")
    elif bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS book_accounts_append_only ON book_accounts")
        op.execute("DROP FUNCTION IF EXISTS book_accounts_append_only()")
    op.drop_table("ledger_cosignatures")
