"""reports: the key image a draft marks (series, instance, frame, window), printed when signed

Revision ID: 0007_report_key_image
Revises: 0006_reports
Create Date: 2026-12-06 07:10:00.000000

A nullable JSON column: existing reports have no key image.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_report_key_image"
down_revision: str | None = "0006_reports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_image", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_column("key_image")
