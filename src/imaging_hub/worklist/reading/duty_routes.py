"""Administration of radiologists' eligibility and on-duty shifts (``/api/v1/admin``).

Thin edge over :mod:`imaging_hub.worklist.reading.duty`; the domain audits every change as
``admin.user``.
"""

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, Field

from imaging_hub.worklist.access.accounts import USERNAME_PATTERN
from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.http.deps import CallerDep, SessionDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.reading import duty

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])

UserAdmin = Annotated[User, require("admin.users")]
UsernamePath = Annotated[str, Path(max_length=64, pattern=USERNAME_PATTERN)]
Code = Annotated[str, Field(min_length=1, max_length=16)]
ClinicCode = Annotated[str, Field(max_length=63, pattern=r"^[a-z0-9-]+$")]


class EligibilityIO(BaseModel):
    """Empty lists mean "all" (every modality, every body part, every clinic in scope)."""

    modalities: list[Code] = Field(default_factory=list, max_length=duty.MAX_LIST_ITEMS)
    body_parts: list[Code] = Field(default_factory=list, max_length=duty.MAX_LIST_ITEMS)
    clinics: list[ClinicCode] = Field(default_factory=list, max_length=duty.MAX_LIST_ITEMS)


class ShiftIn(BaseModel):
    username: str = Field(max_length=64, pattern=USERNAME_PATTERN)
    starts_at: AwareDatetime
    ends_at: AwareDatetime


@router.get("/users/{username}/eligibility", response_model=duty.EligibilityView)
def get_eligibility(
    username: UsernamePath, _: UserAdmin, caller: CallerDep, session: SessionDep
) -> duty.EligibilityView:
    """What a radiologist may read (409 for other roles)."""
    return duty.eligibility_of(session, caller, username)


@router.put("/users/{username}/eligibility", response_model=duty.EligibilityView)
def put_eligibility(
    username: UsernamePath,
    payload: EligibilityIO,
    _: UserAdmin,
    caller: CallerDep,
    session: SessionDep,
) -> duty.EligibilityView:
    """Replace a radiologist's eligibility: modality codes (CT, DX...), body parts (CHEST...),
    clinic codes; empty lists mean all."""
    return duty.replace_eligibility(session, caller, username, **payload.model_dump())


@router.get("/shifts", response_model=list[duty.ShiftView])
def get_shifts(
    _: UserAdmin,
    caller: CallerDep,
    session: SessionDep,
    username: Annotated[str | None, Query(max_length=64, pattern=USERNAME_PATTERN)] = None,
    ending_after: AwareDatetime | None = None,
    starting_before: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> list[duty.ShiftView]:
    """Shifts in start order, optionally of one radiologist and overlapping a window."""
    return duty.shifts(
        session,
        caller,
        username=username,
        ending_after=ending_after,
        starting_before=starting_before,
        limit=limit,
    )


@router.post("/shifts", response_model=duty.ShiftView, status_code=201)
def post_shift(
    payload: ShiftIn, _: UserAdmin, caller: CallerDep, session: SessionDep
) -> duty.ShiftView:
    """Add an on-duty window (at most 24 hours, not overlapping the radiologist's others)."""
    return duty.schedule_shift(
        session, caller, payload.username, starts_at=payload.starts_at, ends_at=payload.ends_at
    )


@router.delete("/shifts/{shift_id}", status_code=204)
def delete_shift(
    shift_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    _: UserAdmin,
    caller: CallerDep,
    session: SessionDep,
) -> None:
    """Remove a shift (the radiologist is off duty in that window unless flagged on duty)."""
    duty.remove_shift(session, caller, shift_id)
