"""``imaging-hub admin order``: clinics' exam orders (the Modality Worklist)."""

from typing import Annotated

import typer
from rich.table import Table

from imaging_hub.cli.common import ConfigOpt, admin_session, aware_time, cli_audit, console, fail

order_app = typer.Typer(help="Clinics' exam orders (the Modality Worklist).", no_args_is_help=True)


@order_app.command("create")
def order_create(
    clinic: Annotated[str, typer.Argument(help="Clinic code, e.g. clinic-a.")],
    accession: Annotated[str, typer.Option("--accession", help="Accession number.")],
    patient_id: Annotated[str, typer.Option("--patient-id")],
    modality: Annotated[str, typer.Option("--modality", help="CR, DX, CT, US, MR...")],
    scheduled_at: Annotated[str, typer.Option("--scheduled-at", help="ISO 8601 with a time zone.")],
    patient_name: Annotated[
        str, typer.Option("--patient-name", help="DICOM PN, e.g. 王^小东")
    ] = "",
    body_part: Annotated[str, typer.Option("--body-part")] = "",
    station_ae: Annotated[str, typer.Option("--station-ae", help="Scheduled station AE.")] = "",
    priority: Annotated[str, typer.Option("--priority", help="stat|urgent|routine")] = "routine",
    config: ConfigOpt = None,
) -> None:
    """Register an exam order at a clinic; prints its pre-assigned StudyInstanceUID."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import get_institution
    from imaging_hub.worklist.audit import trail as audit
    from imaging_hub.worklist.db.models import Priority
    from imaging_hub.worklist.orders import orders

    if priority not in {p.value for p in Priority}:
        fail(f"Unknown priority {priority!r}.", 2)
    when = aware_time(scheduled_at, "--scheduled-at")
    with admin_session(config) as session:
        try:
            order = orders.create_order(
                session,
                clinic=get_institution(session, clinic),
                new=orders.NewOrder(
                    accession_number=accession,
                    patient_id=patient_id,
                    modality=modality,
                    scheduled_at=when,
                    patient_name=patient_name,
                    body_part_examined=body_part,
                    scheduled_station_ae_title=station_ae,
                    priority=Priority(priority),
                ),
                by=None,
            )
        except ImagingHubError as exc:
            fail(str(exc))
        cli_audit(session, audit.ORDER_WRITTEN, "order", str(order.id), "created")
    console.print(f"order {order.id} at {clinic}: StudyInstanceUID {order.study_instance_uid}")


@order_app.command("cancel")
def order_cancel(
    order_id: Annotated[int, typer.Argument(help="Order id (see order list).", min=1)],
    config: ConfigOpt = None,
) -> None:
    """Cancel a scheduled order."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.audit import trail as audit
    from imaging_hub.worklist.orders import orders

    with admin_session(config) as session:
        try:
            orders.cancel_order(session, order_id=order_id, clinic=None)
        except ImagingHubError as exc:
            fail(str(exc))
        cli_audit(session, audit.ORDER_WRITTEN, "order", str(order_id), "cancelled")
    console.print(f"order {order_id} cancelled")


@order_app.command("list")
def order_list(
    clinic: Annotated[str | None, typer.Option("--clinic", help="Only this clinic.")] = None,
    config: ConfigOpt = None,
) -> None:
    """List orders in scheduled order (IDs and UIDs, no patient names)."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import get_institution
    from imaging_hub.worklist.orders import orders

    table = Table(
        "id", "clinic", "accession", "modality", "scheduled", "status", "StudyInstanceUID"
    )
    with admin_session(config) as session:
        try:
            where = get_institution(session, clinic) if clinic else None
        except ImagingHubError as exc:
            fail(str(exc))
        for order, code in orders.list_orders(session, clinic=where):
            table.add_row(
                str(order.id),
                code,
                order.accession_number,
                order.modality,
                str(order.scheduled_at),
                order.status.value,
                order.study_instance_uid,
            )
    console.print(table)
