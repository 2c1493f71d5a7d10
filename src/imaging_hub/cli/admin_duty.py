"""``imaging-hub admin duty``: radiologists' eligibility and on-duty shifts (over
:mod:`imaging_hub.worklist.reading.duty`)."""

from typing import Annotated

import typer
from rich.table import Table

from imaging_hub.cli.common import ConfigOpt, UsernameArg, admin_session, aware_time, console

duty_app = typer.Typer(help="Radiologists' eligibility and on-duty shifts.", no_args_is_help=True)


@duty_app.command("eligibility")
def duty_eligibility(
    username: UsernameArg,
    modality: Annotated[
        list[str] | None, typer.Option("--modality", help="Allowed modality (repeat); none: all.")
    ] = None,
    body_part: Annotated[
        list[str] | None, typer.Option("--body-part", help="Allowed body part (repeat); none: all.")
    ] = None,
    clinic: Annotated[
        list[str] | None, typer.Option("--clinic", help="Covered clinic code (repeat); none: all.")
    ] = None,
    show: Annotated[
        bool, typer.Option("--show", help="Only print the current eligibility.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Set (replace) or show what a radiologist may read."""
    from imaging_hub.worklist.reading import duty

    with admin_session(config) as (session, caller):
        if show:
            view = duty.eligibility_of(session, caller, username)
        else:
            view = duty.replace_eligibility(
                session,
                caller,
                username,
                modalities=modality or [],
                body_parts=body_part or [],
                clinics=clinic or [],
            )
    console.print(
        f"{view.username}: modalities {', '.join(view.modalities) or 'all'}; "
        f"body parts {', '.join(view.body_parts) or 'all'}; "
        f"clinics {', '.join(view.clinics) or 'all'}"
    )


@duty_app.command("shift-add")
def duty_shift_add(
    username: UsernameArg,
    start: Annotated[str, typer.Option("--start", help="ISO 8601 with a time zone.")],
    end: Annotated[str, typer.Option("--end", help="ISO 8601 with a time zone.")],
    config: ConfigOpt = None,
) -> None:
    """Add an on-duty shift (at most 24 hours, not overlapping the radiologist's others)."""
    from imaging_hub.worklist.reading import duty

    starts_at, ends_at = aware_time(start, "--start"), aware_time(end, "--end")
    with admin_session(config) as (session, caller):
        view = duty.schedule_shift(session, caller, username, starts_at=starts_at, ends_at=ends_at)
    console.print(f"shift {view.id}: {view.username} {view.starts_at} – {view.ends_at}")


@duty_app.command("shift-delete")
def duty_shift_delete(
    shift_id: Annotated[int, typer.Argument(help="Shift id (see shift-list).", min=1)],
    config: ConfigOpt = None,
) -> None:
    """Remove a shift."""
    from imaging_hub.worklist.reading import duty

    with admin_session(config) as (session, caller):
        view = duty.remove_shift(session, caller, shift_id)
    console.print(f"shift {view.id} of {view.username} removed")


@duty_app.command("shift-list")
def duty_shift_list(
    username: Annotated[str | None, typer.Option("--user", help="Only this radiologist.")] = None,
    config: ConfigOpt = None,
) -> None:
    """List shifts in start order."""
    from imaging_hub.worklist.reading import duty

    table = Table("id", "user", "starts", "ends")
    with admin_session(config) as (session, caller):
        for view in duty.shifts(session, caller, username=username):
            table.add_row(str(view.id), view.username, str(view.starts_at), str(view.ends_at))
    console.print(table)
