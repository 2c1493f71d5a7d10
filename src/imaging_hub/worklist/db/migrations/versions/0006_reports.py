"""reports: templates, signing credentials, signed report fields, critical results

Revision ID: 0006_reports
Revises: 0005
Create Date: 2026-12-06 06:22:08.023838

The new report columns are NOT NULL with a server default, so existing rows (drafts written
before) get empty values.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_reports"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "report_templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["users.id"], name=op.f("fk_report_templates_created_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_templates")),
        sa.UniqueConstraint("code", name=op.f("uq_report_templates_code")),
    )
    op.create_table(
        "signing_credentials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("encrypted_key_pem", sa.Text(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoke_reason", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_signing_credentials_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signing_credentials")),
        sa.UniqueConstraint("serial", name=op.f("uq_signing_credentials_serial")),
    )
    with op.batch_alter_table("signing_credentials", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_signing_credentials_user_id"), ["user_id"], unique=False
        )

    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("template", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("critical", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("critical_category", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column(
                "signer_certificate_serial", sa.String(length=64), nullable=False, server_default=""
            )
        )
        batch_op.add_column(
            sa.Column("signer_name", sa.String(length=200), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column(
                "pdf_sop_instance_uid", sa.String(length=64), nullable=False, server_default=""
            )
        )
        batch_op.add_column(
            sa.Column(
                "sr_sop_instance_uid", sa.String(length=64), nullable=False, server_default=""
            )
        )
        batch_op.add_column(sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("acknowledged_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "acknowledgement_method", sa.String(length=32), nullable=False, server_default=""
            )
        )
        batch_op.add_column(
            sa.Column("acknowledgement_read_back", sa.Text(), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("critical_overdue_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_reports_open_critical", ["critical", "acknowledged_at", "signed_at"], unique=False
        )
        batch_op.create_index("ix_reports_study_status", ["study_id", "status"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_reports_acknowledged_by_id_users"),
            "users",
            ["acknowledged_by_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_reports_acknowledged_by_id_users"), type_="foreignkey"
        )
        batch_op.drop_index("ix_reports_study_status")
        batch_op.drop_index("ix_reports_open_critical")
        batch_op.drop_column("critical_overdue_at")
        batch_op.drop_column("acknowledgement_read_back")
        batch_op.drop_column("acknowledgement_method")
        batch_op.drop_column("acknowledged_by_id")
        batch_op.drop_column("acknowledged_at")
        batch_op.drop_column("sr_sop_instance_uid")
        batch_op.drop_column("pdf_sop_instance_uid")
        batch_op.drop_column("signer_name")
        batch_op.drop_column("signer_certificate_serial")
        batch_op.drop_column("critical_category")
        batch_op.drop_column("critical")
        batch_op.drop_column("template")

    with op.batch_alter_table("signing_credentials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signing_credentials_user_id"))

    op.drop_table("signing_credentials")
    op.drop_table("report_templates")
