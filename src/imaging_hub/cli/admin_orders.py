"""``imaging-hub admin order``: clinics' exam orders (the Modality Worklist), over
:mod:`imaging_hub.worklist.orders.orders`."""

from typing import Annotated

import typer
from rich.table import Table

from imaging_hub.cli.common import ConfigOpt, admin_session, aware_time, console, fail

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
    from imaging_hub.worklist.db.models import Priority
    from imaging_hub.worklist.orders import orders

    if priority not in {p.value for p in Priority}:
        fail(f"Unknown priority {priority!r}.", 2)
    when = aware_time(scheduled_at, "--scheduled-at")
    new = orders.NewOrder(
        accession_number=accession,
        patient_id=patient_id,
        modality=modality,
        scheduled_at=when,
        patient_name=patient_name,
        body_part_examined=body_part,
        scheduled_station_ae_title=station_ae,
        priority=Priority(priority),
    )
    with admin_session(config) as (session, caller):
        order = orders.place_order(session, caller, new, clinic=clinic)
    console.print(f"order {order.id} at {clinic}: StudyInstanceUID {order.study_instance_uid}")


@order_app.command("cancel")
def order_cancel(
    order_id: Annotated[int, typer.Argument(help="Order id (see order list).", min=1)],
    config: ConfigOpt = None,
) -> None:
    """Cancel a scheduled order."""
    from imaging_hub.worklist.orders import orders

    with admin_session(config) as (session, caller):
        orders.cancel(session, caller, order_id)
    console.print(f"order {order_id} cancelled")


@order_app.command("list")
def order_list(
    clinic: Annotated[str | None, typer.Option("--clinic", help="Only this clinic.")] = None,
    config: ConfigOpt = None,
) -> None:
    """List orders in scheduled order (IDs and UIDs, no patient names)."""
    from imaging_hub.worklist.orders import orders

    table = Table(
        "id", "clinic", "accession", "modality", "scheduled", "status", "StudyInstanceUID"
    )
    with admin_session(config) as (session, caller):
        for order in orders.orders_for(session, caller, clinic=clinic):
            table.add_row(
                str(order.id),
                order.clinic,
                order.accession_number,
                order.modality,
                str(order.scheduled_at),
                order.status.value,
                order.study_instance_uid,
            )
    console.print(table)
