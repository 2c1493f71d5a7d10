"""worklist: indexes for the open queue and the listing orders (found by bench/worklist.py)

Revision ID: 0005
Revises: 0004_dicomweb
Create Date: 2026-11-22 21:40:58.430828
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004_dicomweb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_index("ix_studies_open_queue")
        batch_op.create_index(
            "ix_studies_due_order", ["due_at", "priority_rank", "id"], unique=False
        )
        batch_op.create_index(
            "ix_studies_open",
            ["priority_rank", "due_at", "id"],
            unique=False,
            sqlite_where=sa.text("status IN ('unread', 'in_progress', 'escalated')"),
            postgresql_where=sa.text("status IN ('unread', 'in_progress', 'escalated')"),
        )
        batch_op.create_index(
            "ix_studies_priority_order", ["priority_rank", "due_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_studies_unread",
            ["priority_rank", "due_at", "id"],
            unique=False,
            sqlite_where=sa.text("status = 'unread'"),
            postgresql_where=sa.text("status = 'unread'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_index("ix_studies_unread")
        batch_op.drop_index("ix_studies_priority_order")
        batch_op.drop_index(
            "ix_studies_open",
            sqlite_where=sa.text("status IN ('unread', 'in_progress', 'escalated')"),
            postgresql_where=sa.text("status IN ('unread', 'in_progress', 'escalated')"),
        )
        batch_op.drop_index("ix_studies_due_order")
        batch_op.create_index(
            "ix_studies_open_queue",
            ["priority_rank", "due_at", "id"],
            unique=False,
            sqlite_where=sa.text("status IN ('unread', 'in_progress')"),
            postgresql_where=sa.text("status IN ('unread', 'in_progress')"),
        )
