"""Administration of radiologists' eligibility and on-duty shifts (``/api/v1/admin``).

Thin edge over :mod:`imaging_hub.worklist.reading.duty`; every change is audited as ``admin.user``.
"""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, Field

from imaging_hub.worklist.access.accounts import USERNAME_PATTERN, get_user
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.http.deps import AuditDep, SessionDep
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


class EligibilityOut(EligibilityIO):
    username: str


class ShiftIn(BaseModel):
    username: str = Field(max_length=64, pattern=USERNAME_PATTERN)
    starts_at: AwareDatetime
    ends_at: AwareDatetime


class ShiftOut(BaseModel):
    id: int
    username: str
    starts_at: datetime
    ends_at: datetime


def _eligibility_out(view: duty.EligibilityView) -> EligibilityOut:
    return EligibilityOut(
        username=view.username,
        modalities=view.modalities,
        body_parts=view.body_parts,
        clinics=view.clinics,
    )


def _shift_out(view: duty.ShiftView) -> ShiftOut:
    return ShiftOut(
        id=view.id, username=view.username, starts_at=view.starts_at, ends_at=view.ends_at
    )


@router.get("/users/{username}/eligibility", response_model=EligibilityOut)
def get_eligibility(username: UsernamePath, _: UserAdmin, session: SessionDep) -> EligibilityOut:
    """What a radiologist may read (409 for other roles)."""
    return _eligibility_out(duty.get_eligibility(session, user=get_user(session, username)))


@router.put("/users/{username}/eligibility", response_model=EligibilityOut)
def put_eligibility(
    username: UsernamePath,
    payload: EligibilityIO,
    _: UserAdmin,
    session: SessionDep,
    auditor: AuditDep,
) -> EligibilityOut:
    """Replace a radiologist's eligibility: modality codes (CT, DX...), body parts (CHEST...),
    clinic codes; empty lists mean all."""
    view = duty.set_eligibility(
        session,
        user=get_user(session, username),
        modalities=payload.modalities,
        body_parts=payload.body_parts,
        clinics=payload.clinics,
    )
    auditor.record(
        audit.ADMIN_USER,
        object_type="user",
        object_id=view.username,
        detail={
            "op": "eligibility_set",
            "modalities": view.modalities,
            "body_parts": view.body_parts,
            "clinics": view.clinics,
        },
    )
    session.commit()
    return _eligibility_out(view)


@router.get("/shifts", response_model=list[ShiftOut])
def get_shifts(
    _: UserAdmin,
    session: SessionDep,
    username: Annotated[str | None, Query(max_length=64, pattern=USERNAME_PATTERN)] = None,
    ending_after: AwareDatetime | None = None,
    starting_before: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> list[ShiftOut]:
    """Shifts in start order, optionally of one radiologist and overlapping a window."""
    user = get_user(session, username) if username else None
    views = duty.list_shifts(
        session,
        user=user,
        ending_after=ending_after,
        starting_before=starting_before,
        limit=limit,
    )
    return [_shift_out(v) for v in views]


@router.post("/shifts", response_model=ShiftOut, status_code=201)
def post_shift(payload: ShiftIn, _: UserAdmin, session: SessionDep, auditor: AuditDep) -> ShiftOut:
    """Add an on-duty window (at most 24 hours, not overlapping the radiologist's others)."""
    view = duty.add_shift(
        session,
        user=get_user(session, payload.username),
        starts_at=payload.starts_at,
        ends_at=payload.ends_at,
    )
    auditor.record(
        audit.ADMIN_USER,
        object_type="user",
        object_id=view.username,
        detail={
            "op": "shift_added",
            "shift": view.id,
            "starts_at": view.starts_at.isoformat(),
            "ends_at": view.ends_at.isoformat(),
        },
    )
    session.commit()
    return _shift_out(view)


@router.delete("/shifts/{shift_id}", status_code=204)
def delete_shift(
    shift_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    _: UserAdmin,
    session: SessionDep,
    auditor: AuditDep,
) -> None:
    """Remove a shift (the radiologist is off duty in that window unless flagged on duty)."""
    view = duty.delete_shift(session, shift_id=shift_id)
    auditor.record(
        audit.ADMIN_USER,
        object_type="user",
        object_id=view.username,
        detail={"op": "shift_deleted", "shift": view.id},
    )
    session.commit()
