"""``imaging-hub admin``: the hub database's administration; one module per sub-group."""

import typer

from imaging_hub.cli import (
    admin_audit,
    admin_backup,
    admin_duty,
    admin_gateways,
    admin_orders,
    admin_users,
)

admin_app = typer.Typer(help="Administration of the hub's database.", no_args_is_help=True)
admin_app.add_typer(admin_audit.audit_app, name="audit")
admin_app.add_typer(admin_users.user_app, name="user")
admin_app.add_typer(admin_gateways.gateway_app, name="gateway")
admin_app.add_typer(admin_duty.duty_app, name="duty")
admin_app.add_typer(admin_orders.order_app, name="order")
admin_app.command("backup")(admin_backup.backup)
admin_app.command("restore")(admin_backup.restore)
admin_app.command("verify-backup")(admin_backup.verify_backup)
