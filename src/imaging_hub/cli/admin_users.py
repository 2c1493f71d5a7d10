"""``imaging-hub admin user``: user accounts (over :mod:`imaging_hub.worklist.admin.users`)."""

from typing import Annotated

import typer
from rich.table import Table

from imaging_hub.cli.common import ConfigOpt, UsernameArg, admin_session, console, fail

user_app = typer.Typer(help="User accounts.", no_args_is_help=True)


@user_app.command("create")
def user_create(
    username: UsernameArg,
    role: Annotated[str, typer.Option("--role", help="admin|radiologist|consultant|clinic_staff")],
    institution: Annotated[str, typer.Option("--institution", help="Institution code.")],
    display_name: Annotated[str, typer.Option("--display-name")] = "",
    password: Annotated[
        str | None,
        typer.Option("--password", help="Initial password; default: a random one, printed once."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a user account."""
    from imaging_hub.worklist.admin import users
    from imaging_hub.worklist.admin.seed import random_password
    from imaging_hub.worklist.db.models import Role

    if role not in {r.value for r in Role}:
        fail(f"Unknown role {role!r}.", 2)
    plain = password or random_password()
    with admin_session(config) as (session, caller):
        view = users.create_user(
            session,
            caller,
            username=username,
            password=plain,
            role=Role(role),
            institution=institution,
            display_name=display_name,
        )
    console.print(f"created user {view.username} ({role}, {institution})")
    if password is None:
        console.print(f"password (shown once): {plain}")


@user_app.command("disable")
def user_disable(username: UsernameArg, config: ConfigOpt = None) -> None:
    """Disable an account: its tokens and sessions stop working at once."""
    from imaging_hub.worklist.admin import users

    with admin_session(config) as (session, caller):
        users.set_active(session, caller, username, active=False)
    console.print(f"user {username}: disabled")


@user_app.command("enable")
def user_enable(username: UsernameArg, config: ConfigOpt = None) -> None:
    """Enable a disabled account (and clear a login lockout)."""
    from imaging_hub.worklist.admin import users

    with admin_session(config) as (session, caller):
        users.set_active(session, caller, username, active=True)
    console.print(f"user {username}: enabled")


@user_app.command("reset-password")
def user_reset_password(
    username: UsernameArg,
    password: Annotated[
        str | None, typer.Option("--password", help="New password; default: random, printed.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Set a new password; every session of the account ends."""
    from imaging_hub.worklist.admin import users
    from imaging_hub.worklist.admin.seed import random_password

    plain = password or random_password()
    with admin_session(config) as (session, caller):
        users.reset_password(session, caller, username, password=plain)
    console.print(f"user {username}: password reset")
    if password is None:
        console.print(f"new password (shown once): {plain}")


@user_app.command("list")
def user_list(config: ConfigOpt = None) -> None:
    """List user accounts."""
    from imaging_hub.worklist.admin import users

    table = Table("username", "role", "institution", "active", "locked until")
    with admin_session(config) as (session, caller):
        for view in users.list_users(session, caller):
            table.add_row(
                view.username,
                view.role.value,
                view.institution,
                "yes" if view.is_active else "no",
                str(view.locked_until or ""),
            )
    console.print(table)
