"""credit: the interest receivable of a written-off loan is written off with it

``credit_accruals.interest_written_off`` holds, per loan and period, the interest
receivable (earlier periods' unpaid interest plus the period's own) written off to
credit-loss expense when the period's write-offs left the loan with no principal.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 11:30:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("credit_accruals") as batch:
        batch.add_column(
            sa.Column("interest_written_off", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("credit_accruals") as batch:
        batch.drop_column("interest_written_off")
