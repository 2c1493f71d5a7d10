"""``imaging-hub admin duty``: radiologists' eligibility and on-duty shifts."""

from typing import Annotated, Any

import typer
from rich.table import Table

from imaging_hub.cli.common import (
    ConfigOpt,
    UsernameArg,
    admin_session,
    aware_time,
    cli_audit,
    console,
    fail,
)

duty_app = typer.Typer(help="Radiologists' eligibility and on-duty shifts.", no_args_is_help=True)


def _duty_audit(session: Any, username: str, op: str, **detail: Any) -> None:
    from imaging_hub.worklist.audit import trail as audit

    cli_audit(session, audit.ADMIN_USER, "user", username, op, **detail)


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
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import get_user
    from imaging_hub.worklist.reading import duty

    with admin_session(config) as session:
        try:
            user = get_user(session, username)
            if show:
                view = duty.get_eligibility(session, user=user)
            else:
                view = duty.set_eligibility(
                    session,
                    user=user,
                    modalities=modality or [],
                    body_parts=body_part or [],
                    clinics=clinic or [],
                )
                _duty_audit(
                    session,
                    username,
                    "eligibility_set",
                    modalities=view.modalities,
                    body_parts=view.body_parts,
                    clinics=view.clinics,
                )
        except ImagingHubError as exc:
            fail(str(exc))
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
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import get_user
    from imaging_hub.worklist.reading import duty

    starts_at, ends_at = aware_time(start, "--start"), aware_time(end, "--end")
    with admin_session(config) as session:
        try:
            view = duty.add_shift(
                session, user=get_user(session, username), starts_at=starts_at, ends_at=ends_at
            )
        except ImagingHubError as exc:
            fail(str(exc))
        _duty_audit(
            session,
            username,
            "shift_added",
            shift=view.id,
            starts_at=view.starts_at.isoformat(),
            ends_at=view.ends_at.isoformat(),
        )
    console.print(f"shift {view.id}: {view.username} {view.starts_at} – {view.ends_at}")


@duty_app.command("shift-delete")
def duty_shift_delete(
    shift_id: Annotated[int, typer.Argument(help="Shift id (see shift-list).", min=1)],
    config: ConfigOpt = None,
) -> None:
    """Remove a shift."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.reading import duty

    with admin_session(config) as session:
        try:
            view = duty.delete_shift(session, shift_id=shift_id)
        except ImagingHubError as exc:
            fail(str(exc))
        _duty_audit(session, view.username, "shift_deleted", shift=view.id)
    console.print(f"shift {view.id} of {view.username} removed")


@duty_app.command("shift-list")
def duty_shift_list(
    username: Annotated[str | None, typer.Option("--user", help="Only this radiologist.")] = None,
    config: ConfigOpt = None,
) -> None:
    """List shifts in start order."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import get_user
    from imaging_hub.worklist.reading import duty

    table = Table("id", "user", "starts", "ends")
    with admin_session(config) as session:
        try:
            user = get_user(session, username) if username else None
        except ImagingHubError as exc:
            fail(str(exc))
        for view in duty.list_shifts(session, user=user):
            table.add_row(str(view.id), view.username, str(view.starts_at), str(view.ends_at))
    console.print(table)
