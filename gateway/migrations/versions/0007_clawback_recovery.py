"""credit: share claw-backs on written-off interest, recoveries after a write-off

* ``credit_loan_events.kind`` admits ``recovery`` (cash collected on a written-off loan).
* ``credit_settlements.clawback``: the share claw-backs booked by the period's settlement;
  ``credit_settlements.netted``: the claw-backs owed that were taken out of its payout
  (``instructed + netted <= fee + share``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 14:10:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_KINDS = "kind IN ('drawdown', 'repayment', 'write_off', 'line_change')"
_NEW_KINDS = "kind IN ('drawdown', 'repayment', 'write_off', 'line_change', 'recovery')"


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("credit_loan_events") as batch:
        batch.drop_constraint(op.f("ck_credit_loan_events_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_credit_loan_events_kind"), sa.text(_NEW_KINDS))
    with op.batch_alter_table("credit_settlements") as batch:
        batch.add_column(sa.Column("clawback", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("netted", sa.BigInteger(), nullable=False, server_default="0"))
        batch.create_check_constraint(
            op.f("ck_credit_settlements_netted_le_due"),
            sa.text("clawback >= 0 AND netted >= 0 AND instructed + netted <= fee + share"),
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("credit_settlements") as batch:
        batch.drop_constraint(op.f("ck_credit_settlements_netted_le_due"), type_="check")
        batch.drop_column("netted")
        batch.drop_column("clawback")
    with op.batch_alter_table("credit_loan_events") as batch:
        batch.drop_constraint(op.f("ck_credit_loan_events_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_credit_loan_events_kind"), sa.text(_OLD_KINDS))
