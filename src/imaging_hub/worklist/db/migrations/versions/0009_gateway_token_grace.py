"""gateways: the previous token of a rotation works only until previous_token_expires_at

Revision ID: 0009_gateway_token_grace
Revises: 0008_clinic_return
Create Date: 2026-12-06 09:40:00.000000

Nullable: a token rotated before this revision keeps working until the next rotation, as then.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_gateway_token_grace"
down_revision: str | None = "0008_clinic_return"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("gateways", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("previous_token_expires_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("gateways", schema=None) as batch_op:
        batch_op.drop_column("previous_token_expires_at")
