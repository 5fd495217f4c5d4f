"""consent: copy each artefact's frequency unit into consent_artefacts.frequency_unit

``consent.count_round_uses`` counts a round's uses with one UPDATE per frequency
unit; reading the unit from a column spares it parsing every signed token.
Existing rows are filled from their tokens (the signed payload is the truth).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 07:00:00.000000

"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from joserfc import jws

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNITS = ("hour", "day", "month", "year")


def _unit(token: str) -> str:
    """The ``frequency.per`` of a stored artefact token (read, not verified: a copy for queries)."""
    body = json.loads(jws.extract_compact(token.encode("ascii")).payload)
    unit = body["frequency"]["per"]
    if unit not in _UNITS:
        raise ValueError(f"artefact has frequency unit {unit!r}")
    return str(unit)


def upgrade() -> None:
    """Upgrade schema."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # SQLite adds a NOT NULL column only with a default, and changing a column
        # later means rebuilding a table that others reference. The placeholder is
        # overwritten below for every existing row, and every insert names the unit.
        op.add_column(
            "consent_artefacts",
            sa.Column("frequency_unit", sa.String(length=8), nullable=False, server_default="day"),
        )
    else:
        op.add_column(
            "consent_artefacts", sa.Column("frequency_unit", sa.String(length=8), nullable=True)
        )
    artefacts = sa.table(
        "consent_artefacts",
        sa.column("consent_id", sa.String),
        sa.column("token", sa.Text),
        sa.column("frequency_unit", sa.String),
    )
    rows = bind.execute(sa.select(artefacts.c.consent_id, artefacts.c.token)).all()
    for consent_id, token in rows:
        bind.execute(
            artefacts.update()
            .where(artefacts.c.consent_id == consent_id)
            .values(frequency_unit=_unit(token))
        )
    if bind.dialect.name != "sqlite":
        op.alter_column("consent_artefacts", "frequency_unit", nullable=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("consent_artefacts") as batch:
        batch.drop_column("frequency_unit")
