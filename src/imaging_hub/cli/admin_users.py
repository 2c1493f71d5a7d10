"""``imaging-hub admin user``: user accounts."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from imaging_hub.cli.common import ConfigOpt, UsernameArg, admin_session, cli_actor, console, fail

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
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import create_user, get_institution
    from imaging_hub.worklist.admin.seed import random_password
    from imaging_hub.worklist.audit import trail as audit
    from imaging_hub.worklist.db.models import Role

    if role not in {r.value for r in Role}:
        fail(f"Unknown role {role!r}.", 2)
    plain = password or random_password()
    with admin_session(config) as session:
        try:
            user = create_user(
                session,
                username=username,
                password=plain,
                role=Role(role),
                institution=get_institution(session, institution),
                display_name=display_name,
            )
        except ImagingHubError as exc:
            fail(str(exc))
        audit.record(
            session,
            actor=None,
            action=audit.ADMIN_USER,
            object_type="user",
            object_id=username,
            detail={"op": "created", "role": role, **cli_actor()},
        )
        console.print(f"created user {user.username} ({role}, {institution})")
    if password is None:
        console.print(f"password (shown once): {plain}")


def _user_op(username: str, op: str, config: Path | None, **kwargs: Any) -> None:
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import get_user, set_active, set_password
    from imaging_hub.worklist.audit import trail as audit

    with admin_session(config) as session:
        try:
            user = get_user(session, username)
            if op == "disabled":
                set_active(session, user=user, active=False)
            elif op == "enabled":
                set_active(session, user=user, active=True)
            else:
                set_password(session, user=user, new_password=kwargs["password"])
        except ImagingHubError as exc:
            fail(str(exc))
        audit.record(
            session,
            actor=None,
            action=audit.ADMIN_USER,
            object_type="user",
            object_id=username,
            detail={"op": op, **cli_actor()},
        )
    console.print(f"user {username}: {op.replace('_', ' ')}")


@user_app.command("disable")
def user_disable(username: UsernameArg, config: ConfigOpt = None) -> None:
    """Disable an account: its tokens and sessions stop working at once."""
    _user_op(username, "disabled", config)


@user_app.command("enable")
def user_enable(username: UsernameArg, config: ConfigOpt = None) -> None:
    """Enable a disabled account (and clear a login lockout)."""
    _user_op(username, "enabled", config)


@user_app.command("reset-password")
def user_reset_password(
    username: UsernameArg,
    password: Annotated[
        str | None, typer.Option("--password", help="New password; default: random, printed.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Set a new password; every session of the account ends."""
    from imaging_hub.worklist.admin.seed import random_password

    plain = password or random_password()
    _user_op(username, "password_reset", config, password=plain)
    if password is None:
        console.print(f"new password (shown once): {plain}")


@user_app.command("list")
def user_list(config: ConfigOpt = None) -> None:
    """List user accounts."""
    from sqlalchemy import select

    from imaging_hub.worklist.db.models import User

    table = Table("username", "role", "institution", "active", "locked until")
    with admin_session(config) as session:
        for user in session.scalars(select(User).order_by(User.username)):
            table.add_row(
                user.username,
                user.role.value,
                user.institution.code,
                "yes" if user.is_active else "no",
                str(user.locked_until or ""),
            )
    console.print(table)
