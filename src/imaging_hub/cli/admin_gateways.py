"""``imaging-hub admin gateway``: clinic gateway credentials."""

from typing import Annotated, Any

import typer
from rich.table import Table

from imaging_hub.cli.common import ConfigOpt, admin_session, cli_audit, console, fail

gateway_app = typer.Typer(help="Clinic gateway credentials.", no_args_is_help=True)

GatewayArg = Annotated[str, typer.Argument(help="Gateway name, e.g. gateway-clinic-a.")]


def _gateway_audit(session: Any, name: str, op: str, **detail: str) -> None:
    from imaging_hub.worklist.audit import trail as audit

    cli_audit(session, audit.ADMIN_GATEWAY, "gateway", name, op, **detail)


@gateway_app.command("create")
def gateway_create(
    name: GatewayArg,
    clinic: Annotated[str, typer.Option("--clinic", help="Code of the gateway's clinic.")],
    ae_title: Annotated[str, typer.Option("--ae-title")] = "",
    config: ConfigOpt = None,
) -> None:
    """Register a clinic gateway and print its token (shown once, stored hashed)."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import create_gateway, get_institution

    with admin_session(config) as session:
        try:
            issued = create_gateway(
                session, clinic=get_institution(session, clinic), name=name, ae_title=ae_title
            )
        except ImagingHubError as exc:
            fail(str(exc))
        _gateway_audit(session, name, "created", clinic=clinic)
    console.print(f"gateway {name} for {clinic} created")
    console.print(f"token (shown once): {issued.token}")


@gateway_app.command("rotate")
def gateway_rotate(name: GatewayArg, config: ConfigOpt = None) -> None:
    """Issue a new token; the previous one keeps working until the next rotation."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import get_gateway, rotate_gateway_token

    with admin_session(config) as session:
        try:
            token = rotate_gateway_token(session, gateway=get_gateway(session, name))
        except ImagingHubError as exc:
            fail(str(exc))
        _gateway_audit(session, name, "rotated")
    console.print(f"new token for {name} (shown once): {token}")
    console.print("the previous token works until the next rotation; update the gateway now")


@gateway_app.command("revoke")
def gateway_revoke(name: GatewayArg, config: ConfigOpt = None) -> None:
    """Revoke a gateway: both its tokens stop working at once."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import get_gateway, revoke_gateway

    with admin_session(config) as session:
        try:
            revoke_gateway(session, gateway=get_gateway(session, name))
        except ImagingHubError as exc:
            fail(str(exc))
        _gateway_audit(session, name, "revoked")
    console.print(f"gateway {name} revoked")


@gateway_app.command("list")
def gateway_list(config: ConfigOpt = None) -> None:
    """List clinic gateways (never their tokens)."""
    from sqlalchemy import select

    from imaging_hub.worklist.db.models import Gateway

    table = Table("name", "clinic", "AE title", "state", "last seen")
    with admin_session(config) as session:
        for gw in session.scalars(select(Gateway).order_by(Gateway.name)):
            table.add_row(
                gw.name,
                gw.institution.code,
                gw.ae_title,
                "revoked" if gw.revoked_at else "active",
                str(gw.last_seen_at or "never"),
            )
    console.print(table)
