"""credit: interest collection; a repayment pays earlier periods' accrued interest first

``credit_accruals.interest_paid`` holds, per loan and period, the interest of
earlier periods that the period's repayments paid before any principal.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 08:45:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("credit_accruals") as batch:
        batch.add_column(
            sa.Column("interest_paid", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("credit_accruals") as batch:
        batch.drop_column("interest_paid")
