"""DICOMweb: StudyID on studies and BitsAllocated on instances, for QIDO-RS answers

Revision ID: 0004_dicomweb
Revises: 0003
Create Date: 2026-11-22 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_dicomweb"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("study_id", sa.String(length=16), nullable=False, server_default="")
        )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bits_allocated", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("bits_allocated")
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_column("study_id")
