"""Who reads what, and when: radiologists' eligibility and on-duty shifts (administration).

Eligibility (``eligibilities``): the modalities, body parts and clinics a radiologist may read;
an empty list means "all". Shifts (``shifts``): windows in which a radiologist is on duty (besides
the manual ``users.on_duty`` flag). Claims, ``next``, auto-assign and overdue-STAT pushes read
both (see assignment.py); these functions are how an administrator changes them. The edges
(``/api/v1/admin/...``, ``imaging-hub admin duty``) call the caller-taking functions at the end,
which check the permission, write the one ``admin.user`` audit record and commit.
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging_hub.errors import Conflict, InvalidRequest, NotFound
from imaging_hub.worklist.access.accounts import get_user
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import Eligibility, Institution, Role, Shift, User

MODALITY = re.compile(r"^[A-Z]{2,16}$")
BODY_PART = re.compile(r"^[A-Z0-9_ ]{1,16}$")  # DICOM Body Part Examined: a CS value
MAX_SHIFT = timedelta(hours=24)
MAX_LIST_ITEMS = 64


@dataclass(frozen=True)
class EligibilityView:
    username: str
    modalities: list[str]
    body_parts: list[str]
    clinics: list[str]  # institution codes


@dataclass(frozen=True)
class ShiftView:
    id: int
    username: str
    starts_at: datetime
    ends_at: datetime


def _radiologist(user: User) -> None:
    if user.role != Role.radiologist:
        raise Conflict("Eligibility and shifts belong to radiologists only.")


def _codes(values: list[str], pattern: re.Pattern[str], what: str) -> list[str]:
    if len(values) > MAX_LIST_ITEMS:
        raise InvalidRequest(f"At most {MAX_LIST_ITEMS} {what} may be listed.")
    out: list[str] = []
    for value in values:
        code = value.strip().upper()
        if pattern.fullmatch(code) is None:
            raise InvalidRequest(f"{value!r} is not a valid {what[:-1]} code.")
        if code not in out:
            out.append(code)
    return out


def get_eligibility(session: Session, *, user: User) -> EligibilityView:
    """The radiologist's eligibility (all empty if none is recorded: it may read nothing)."""
    _radiologist(user)
    row = session.get(Eligibility, user.id)
    clinic_ids = list(row.clinic_ids) if row is not None else []
    codes = dict(
        session.execute(
            select(Institution.id, Institution.code).where(Institution.id.in_(clinic_ids))
        ).all()
    )
    return EligibilityView(
        username=user.username,
        modalities=list(row.modalities) if row is not None else [],
        body_parts=list(row.body_parts) if row is not None else [],
        clinics=[codes[i] for i in clinic_ids if i in codes],
    )


def set_eligibility(
    session: Session,
    *,
    user: User,
    modalities: list[str],
    body_parts: list[str],
    clinics: list[str],
) -> EligibilityView:
    """Replace the radiologist's eligibility; empty lists mean "all". Flushes, does not commit.

    Raises InvalidRequest for a malformed code, NotFound for an unknown clinic and Conflict for a
    non-radiologist or an institution that is not a clinic; nothing changes then.
    """
    _radiologist(user)
    wanted_modalities = _codes(modalities, MODALITY, "modalities")
    wanted_parts = _codes(body_parts, BODY_PART, "body parts")
    if len(clinics) > MAX_LIST_ITEMS:
        raise InvalidRequest(f"At most {MAX_LIST_ITEMS} clinics may be listed.")
    clinic_ids: list[int] = []
    for code in dict.fromkeys(clinics):
        inst = session.scalar(select(Institution).where(Institution.code == code))
        if inst is None:
            raise NotFound(f"No institution with code {code!r}.")
        if not inst.is_clinic:
            raise Conflict(f"{code!r} is not a township or village clinic.")
        clinic_ids.append(inst.id)
    row = session.get(Eligibility, user.id)
    if row is None:
        row = Eligibility(user_id=user.id)
        session.add(row)
    row.modalities = wanted_modalities
    row.body_parts = wanted_parts
    row.clinic_ids = clinic_ids
    session.flush()
    return get_eligibility(session, user=user)


def _shift_view(shift: Shift, username: str) -> ShiftView:
    return ShiftView(
        id=shift.id, username=username, starts_at=shift.starts_at, ends_at=shift.ends_at
    )


def add_shift(session: Session, *, user: User, starts_at: datetime, ends_at: datetime) -> ShiftView:
    """A new on-duty window for a radiologist. Flushes, does not commit.

    Raises InvalidRequest for a naive time, an empty or reversed window or one longer than
    24 hours, and Conflict for a non-radiologist or a window overlapping another of its shifts.
    """
    _radiologist(user)
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise InvalidRequest("Shift times need a time zone (e.g. 2026-11-23T08:00:00+08:00).")
    if ends_at <= starts_at:
        raise InvalidRequest("A shift must end after it starts.")
    if ends_at - starts_at > MAX_SHIFT:
        raise InvalidRequest("A shift may last at most 24 hours; add several for longer duty.")
    overlap = session.scalar(
        select(Shift.id).where(
            Shift.user_id == user.id, Shift.starts_at < ends_at, Shift.ends_at > starts_at
        )
    )
    if overlap is not None:
        raise Conflict("This shift overlaps another shift of the same radiologist.")
    shift = Shift(user_id=user.id, starts_at=starts_at, ends_at=ends_at)
    session.add(shift)
    session.flush()
    return _shift_view(shift, user.username)


def list_shifts(
    session: Session,
    *,
    user: User | None = None,
    ending_after: datetime | None = None,
    starting_before: datetime | None = None,
    limit: int = 500,
) -> list[ShiftView]:
    """Shifts in start order, optionally of one user and overlapping a window."""
    stmt = select(Shift, User.username).join(User, Shift.user_id == User.id)
    if user is not None:
        stmt = stmt.where(Shift.user_id == user.id)
    if ending_after is not None:
        stmt = stmt.where(Shift.ends_at > ending_after)
    if starting_before is not None:
        stmt = stmt.where(Shift.starts_at < starting_before)
    stmt = stmt.order_by(Shift.starts_at, Shift.id).limit(limit)
    return [_shift_view(shift, username) for shift, username in session.execute(stmt).all()]


def delete_shift(session: Session, *, shift_id: int) -> ShiftView:
    """Remove a shift; NotFound if there is none with this id. Flushes, does not commit."""
    found = session.execute(
        select(Shift, User.username)
        .join(User, Shift.user_id == User.id)
        .where(Shift.id == shift_id)
    ).first()
    if found is None:
        raise NotFound(f"No shift with id {shift_id}.")
    shift, username = found
    view = _shift_view(shift, username)
    session.delete(shift)
    session.flush()
    return view


# --- Domain functions: what the edges (HTTP, CLI) call ----------------------------------------

ADMIN = "admin.users"


def _audit(session: Session, caller: Caller, username: str, **detail: object) -> None:
    audit.record_for(
        session, caller, audit.ADMIN_USER, object_type="user", object_id=username, detail=detail
    )


def eligibility_of(session: Session, caller: Caller, username: str) -> EligibilityView:
    """What a radiologist may read (Conflict for other roles)."""
    caller.require(ADMIN)
    return get_eligibility(session, user=get_user(session, username))


def replace_eligibility(
    session: Session,
    caller: Caller,
    username: str,
    *,
    modalities: list[str],
    body_parts: list[str],
    clinics: list[str],
) -> EligibilityView:
    """Replace a radiologist's eligibility (empty lists: all); audited, committed."""
    caller.require(ADMIN)
    view = set_eligibility(
        session,
        user=get_user(session, username),
        modalities=modalities,
        body_parts=body_parts,
        clinics=clinics,
    )
    _audit(
        session,
        caller,
        view.username,
        op="eligibility_set",
        modalities=view.modalities,
        body_parts=view.body_parts,
        clinics=view.clinics,
    )
    session.commit()
    return view


def shifts(
    session: Session,
    caller: Caller,
    *,
    username: str | None = None,
    ending_after: datetime | None = None,
    starting_before: datetime | None = None,
    limit: int = 500,
) -> list[ShiftView]:
    """Shifts in start order, optionally of one radiologist and overlapping a window."""
    caller.require(ADMIN)
    user = get_user(session, username) if username else None
    return list_shifts(
        session, user=user, ending_after=ending_after, starting_before=starting_before, limit=limit
    )


def schedule_shift(
    session: Session, caller: Caller, username: str, *, starts_at: datetime, ends_at: datetime
) -> ShiftView:
    """Add an on-duty window (at most 24 hours, not overlapping); audited, committed."""
    caller.require(ADMIN)
    view = add_shift(
        session, user=get_user(session, username), starts_at=starts_at, ends_at=ends_at
    )
    _audit(
        session,
        caller,
        view.username,
        op="shift_added",
        shift=view.id,
        starts_at=view.starts_at.isoformat(),
        ends_at=view.ends_at.isoformat(),
    )
    session.commit()
    return view


def remove_shift(session: Session, caller: Caller, shift_id: int) -> ShiftView:
    """Remove a shift; audited, committed."""
    caller.require(ADMIN)
    view = delete_shift(session, shift_id=shift_id)
    _audit(session, caller, view.username, op="shift_deleted", shift=view.id)
    session.commit()
    return view
