"""``imaging-hub admin gateway``: clinic gateway credentials (over
:mod:`imaging_hub.worklist.admin.users`)."""

from typing import Annotated

import typer
from rich.table import Table

from imaging_hub.cli.common import ConfigOpt, admin_session, console

gateway_app = typer.Typer(help="Clinic gateway credentials.", no_args_is_help=True)

GatewayArg = Annotated[str, typer.Argument(help="Gateway name, e.g. gateway-clinic-a.")]


@gateway_app.command("create")
def gateway_create(
    name: GatewayArg,
    clinic: Annotated[str, typer.Option("--clinic", help="Code of the gateway's clinic.")],
    ae_title: Annotated[str, typer.Option("--ae-title")] = "",
    config: ConfigOpt = None,
) -> None:
    """Register a clinic gateway and print its token (shown once, stored hashed)."""
    from imaging_hub.worklist.admin import users

    with admin_session(config) as (session, caller):
        issued = users.create_gateway(session, caller, name=name, clinic=clinic, ae_title=ae_title)
    console.print(f"gateway {issued.name} for {issued.clinic} created")
    console.print(f"token (shown once): {issued.token}")


@gateway_app.command("rotate")
def gateway_rotate(name: GatewayArg, config: ConfigOpt = None) -> None:
    """Issue a new token; the previous one keeps working for 72 hours."""
    from imaging_hub.worklist.admin import users

    with admin_session(config) as (session, caller):
        issued = users.rotate_gateway(session, caller, name)
    console.print(f"new token for {name} (shown once): {issued.token}")
    until = issued.previous_token_valid_until
    when = f"until {until:%Y-%m-%d %H:%M} UTC" if until else "for 72 hours"
    console.print(f"the previous token works {when}; update the gateway now")


@gateway_app.command("revoke")
def gateway_revoke(name: GatewayArg, config: ConfigOpt = None) -> None:
    """Revoke a gateway: both its tokens stop working at once."""
    from imaging_hub.worklist.admin import users

    with admin_session(config) as (session, caller):
        users.revoke_gateway(session, caller, name)
    console.print(f"gateway {name} revoked")


@gateway_app.command("list")
def gateway_list(config: ConfigOpt = None) -> None:
    """List clinic gateways (never their tokens)."""
    from imaging_hub.worklist.admin import users

    table = Table("name", "clinic", "AE title", "state", "last seen")
    with admin_session(config) as (session, caller):
        for gw in users.list_gateways(session, caller):
            table.add_row(
                gw.name,
                gw.clinic,
                gw.ae_title,
                "revoked" if gw.revoked else "active",
                str(gw.last_seen_at or "never"),
            )
    console.print(table)
