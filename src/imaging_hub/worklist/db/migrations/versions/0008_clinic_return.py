"""orders and reports for the way back to the clinic: exam type, clinical question, MPPS state,
"exam done", feed cursor; report delivery to the clinic's gateway and where a critical result
was acknowledged

Revision ID: 0008_clinic_return
Revises: 0007_report_key_image
Create Date: 2026-12-06 08:50:00.000000

All new columns have defaults or are nullable: existing orders keep their status, existing
signed reports count as not yet delivered (their gateway pulls them once).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_clinic_return"
down_revision: str | None = "0007_report_key_image"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("exam_type", sa.String(32), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("expected_images", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("reason_for_procedure", sa.String(64), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("mpps_uid", sa.String(64), nullable=False, server_default=""))
        batch_op.add_column(
            sa.Column("mpps_status", sa.String(16), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("status_reason", sa.String(200), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("done_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("done_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "updated_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.current_timestamp(),
            )
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_orders_done_by_id_users"), "users", ["done_by_id"], ["id"]
        )
        batch_op.create_index(batch_op.f("ix_orders_updated_at"), ["updated_at"])
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("delivered_gateway_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("acknowledged_via", sa.String(16), nullable=False, server_default="")
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_reports_delivered_gateway_id_gateways"),
            "gateways",
            ["delivered_gateway_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_reports_delivered_gateway_id_gateways"), type_="foreignkey"
        )
        batch_op.drop_column("acknowledged_via")
        batch_op.drop_column("delivered_gateway_id")
        batch_op.drop_column("delivered_at")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_updated_at"))
        batch_op.drop_constraint(batch_op.f("fk_orders_done_by_id_users"), type_="foreignkey")
        for column in (
            "updated_at",
            "done_by_id",
            "done_at",
            "status_reason",
            "mpps_status",
            "mpps_uid",
            "reason_for_procedure",
            "expected_images",
            "exam_type",
        ):
            batch_op.drop_column(column)
