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
    patient_id: Annotated[str, typer.Option("--patient-id")],
    exam_type: Annotated[
        str, typer.Option("--exam-type", help="A code of the exam catalogue, e.g. DX_CHEST_PA.")
    ] = "",
    modality: Annotated[
        str, typer.Option("--modality", help="Without --exam-type: CR, DX, CT, US, MR...")
    ] = "",
    accession: Annotated[
        str, typer.Option("--accession", help="Accession number (default: assigned).")
    ] = "",
    scheduled_at: Annotated[
        str, typer.Option("--scheduled-at", help="ISO 8601 with a time zone (default: now).")
    ] = "",
    patient_name: Annotated[
        str, typer.Option("--patient-name", help="As typed, e.g. 王^小东")
    ] = "",
    pinyin: Annotated[str, typer.Option("--pinyin", help="e.g. Wang^XiaoDong")] = "",
    sex: Annotated[str, typer.Option("--sex", help="M, F or O.")] = "",
    birth_date: Annotated[str, typer.Option("--birth-date", help="YYYYMMDD")] = "",
    reason: Annotated[str, typer.Option("--reason", help="The clinical question.")] = "",
    body_part: Annotated[str, typer.Option("--body-part")] = "",
    station_ae: Annotated[str, typer.Option("--station-ae", help="Scheduled station AE.")] = "",
    priority: Annotated[str, typer.Option("--priority", help="stat|urgent|routine")] = "routine",
    config: ConfigOpt = None,
) -> None:
    """Register an exam order at a clinic; prints its accession number and StudyInstanceUID."""
    from imaging_hub.config import HubSettings
    from imaging_hub.worklist.db.models import Priority
    from imaging_hub.worklist.orders import orders

    if priority not in {p.value for p in Priority}:
        fail(f"Unknown priority {priority!r}.", 2)
    when = aware_time(scheduled_at, "--scheduled-at") if scheduled_at else None
    new = orders.NewOrder(
        accession_number=accession,
        patient_id=patient_id,
        exam_type=exam_type,
        modality=modality,
        scheduled_at=when,
        patient_name=patient_name,
        patient_name_pinyin=pinyin,
        patient_sex=sex,
        patient_birth_date=birth_date,
        reason_for_procedure=reason,
        body_part_examined=body_part,
        scheduled_station_ae_title=station_ae,
        priority=Priority(priority),
    )
    with admin_session(config) as (session, caller):
        order = orders.place_order(
            session, caller, new, clinic=clinic, timezone=HubSettings().timezone
        )
    console.print(
        f"order {order.id} at {clinic}: accession {order.accession_number}, "
        f"StudyInstanceUID {order.study_instance_uid}"
    )


@order_app.command("cancel")
def order_cancel(
    order_id: Annotated[int, typer.Argument(help="Order id (see order list).", min=1)],
    reason: Annotated[str, typer.Option("--reason", help="Why it is cancelled.")] = "",
    config: ConfigOpt = None,
) -> None:
    """Cancel a scheduled order."""
    from imaging_hub.worklist.orders import orders

    with admin_session(config) as (session, caller):
        orders.cancel(session, caller, order_id, reason=reason)
    console.print(f"order {order_id} cancelled")


@order_app.command("done")
def order_done(
    order_id: Annotated[int, typer.Argument(help="Order id (see order list).", min=1)],
    config: ConfigOpt = None,
) -> None:
    """ "Exam done" for a machine without MPPS: the scheduled or in-progress order is completed."""
    from imaging_hub.worklist.orders import orders

    with admin_session(config) as (session, caller):
        orders.mark_done(session, caller, order_id)
    console.print(f"order {order_id} done")


@order_app.command("list")
def order_list(
    clinic: Annotated[str | None, typer.Option("--clinic", help="Only this clinic.")] = None,
    config: ConfigOpt = None,
) -> None:
    """List orders in scheduled order (IDs and UIDs, no patient names)."""
    from imaging_hub.worklist.orders import orders

    table = Table(
        "id", "clinic", "accession", "exam", "modality", "scheduled", "status", "StudyInstanceUID"
    )
    with admin_session(config) as (session, caller):
        for order in orders.orders_for(session, caller, clinic=clinic):
            table.add_row(
                str(order.id),
                order.clinic,
                order.accession_number,
                order.exam_type,
                order.modality,
                str(order.scheduled_at),
                order.status.value,
                order.study_instance_uid,
            )
    console.print(table)
