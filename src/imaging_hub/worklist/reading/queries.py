"""The reading worklist: who sees which studies to read, filtered and sorted (domain, no HTTP).

:func:`worklist` is the listing as the API answers it (permission, scope, the access record);
:func:`next_item` claims the next study for the caller. Items are :class:`WorklistItem`, the
dataclass the HTTP layer serialises directly.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, exists, or_, select
from sqlalchemy.orm import Session, aliased

from imaging_hub.errors import Forbidden
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import Permission, study_scope
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import (
    Consultation,
    ConsultationStatus,
    Institution,
    Patient,
    Priority,
    Role,
    Study,
    StudyStatus,
    User,
)
from imaging_hub.worklist.orders.orders import order_question
from imaging_hub.worklist.reading.assignment import (
    OPEN_STATUSES,
    claim_next_item,
    effective_holder,
    effective_status,
    status_is,
    utcnow,
    worklist_columns,
)
from imaging_hub.worklist.studies.registration import LeasePolicy

SortKey = Literal["priority", "due_at", "received_at", "study_date", "patient_name", "clinic"]


@dataclass(frozen=True)
class WorklistFilter:
    status: list[StudyStatus] | None = None
    priority: list[Priority] | None = None
    clinic: str | None = None
    modality: str | None = None
    patient: str | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    overdue: bool = False
    assigned_to_me: bool = False
    escalated_to_me: bool = False
    sort: SortKey = "priority"
    descending: bool = False
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True)
class WorklistItem:
    study_instance_uid: str
    patient_name: str
    patient_id: str
    patient_sex: str
    patient_birth_date: str
    modalities: str
    body_part_examined: str
    study_date: str
    study_description: str
    accession_number: str
    clinic: str
    clinic_name: str
    num_series: int
    num_instances: int
    status: StudyStatus
    priority: Priority
    due_at: datetime | None
    received_at: datetime
    completed_at: datetime | None
    assigned_to: str | None
    lease_expires_at: datetime | None = None
    overdue: bool = False
    #: The clinic's question (the order's Reason for the Requested Procedure; "" without one).
    clinical_question: str = ""


def _escalated_to(institution_id: int) -> Any:
    return exists().where(
        Consultation.study_id == Study.id,
        Consultation.to_institution_id == institution_id,
        Consultation.status == ConsultationStatus.open,
    )


AnySelect = Select[*tuple[Any, ...]]


def _apply_filter(stmt: AnySelect, f: WorklistFilter, user: User, now: datetime) -> AnySelect:
    if user.role == Role.consultant:
        # Consultants see only what was escalated to their institution and awaits them.
        stmt = stmt.where(_escalated_to(user.institution_id))
    elif user.role not in (Role.radiologist, Role.admin):
        raise Forbidden("Clinic accounts cannot use the reading worklist.")
    if f.escalated_to_me:
        stmt = stmt.where(_escalated_to(user.institution_id))
    if f.assigned_to_me:
        stmt = stmt.where(Study.assigned_to_id == user.id, ~status_is(StudyStatus.unread, now))
    if f.status:
        # The stored statuses the wanted ones can come from (an expired claim reads as unread),
        # stated plainly so the planner can use the partial index of open studies.
        stored = {StudyStatus.in_progress} if StudyStatus.unread in f.status else set()
        stmt = stmt.where(
            Study.status.in_(sorted(stored | set(f.status))),
            or_(*[status_is(s, now) for s in f.status]),
        )
    if f.due_before is not None:
        stmt = stmt.where(Study.due_at < f.due_before)
    if f.due_after is not None:
        stmt = stmt.where(Study.due_at >= f.due_after)
    if f.overdue:
        stmt = stmt.where(Study.status.in_(OPEN_STATUSES), Study.due_at < now)
    if f.priority:
        stmt = stmt.where(Study.priority.in_(f.priority))
    if f.clinic:
        stmt = stmt.where(Institution.code == f.clinic)
    if f.modality:
        stmt = stmt.where(Study.modalities.contains(f.modality.upper()))
    if f.patient:
        needle = f.patient.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(
            Patient.patient_name.ilike(f"%{needle}%", escape="\\")
            | Patient.patient_id.ilike(f"%{needle}%", escape="\\")
        )
    order: list[Any] = {
        # The order `next` hands studies out in (then Study.id, as below).
        "priority": [Study.priority_rank, Study.due_at],
        "due_at": [Study.due_at, Study.priority_rank],
        "received_at": [Study.received_at],
        "study_date": [Study.study_date, Study.study_time],
        "patient_name": [Patient.patient_name],
        "clinic": [Institution.code, Study.received_at],
    }[f.sort]  # type: ignore[assignment]
    if f.descending:
        stmt = stmt.order_by(*[c.desc() for c in order], Study.id.desc())
    else:
        stmt = stmt.order_by(*order, Study.id)
    return stmt.limit(f.limit).offset(f.offset)


def list_worklist(
    session: Session,
    f: WorklistFilter,
    *,
    user: User,
    scope: ColumnElement[bool] | None = None,
    now: datetime | None = None,
) -> list[WorklistItem]:
    """The worklist as *user* may see it, lease expiry applied (an expired claim is unread);
    *scope* (``policy.study_scope``) limits it to the caller's studies.

    One query of plain columns (no ORM objects: a page of 100 studies is read straight into
    :class:`WorklistItem`).
    """
    now = now or datetime.now(UTC)
    holder = aliased(User)
    stmt: AnySelect = (
        select(
            *worklist_columns(),
            holder.username.label("assigned_to"),
            order_question().label("clinical_question"),
        )
        .join(Patient, Study.patient_pk == Patient.id)
        .join(Institution, Study.clinic_id == Institution.id)
        .outerjoin(holder, Study.assigned_to_id == holder.id)
    )
    if scope is not None:
        stmt = stmt.where(scope)
    rows = session.execute(_apply_filter(stmt, f, user, now)).mappings()
    return [row_item(row, now) for row in rows]


_ROW_FIELDS = tuple(
    name
    for name in WorklistItem.__dataclass_fields__
    if name not in ("status", "assigned_to", "lease_expires_at", "overdue", "clinical_question")
)


def row_item(row: Mapping[Any, Any], now: datetime, *, holder: str | None = None) -> WorklistItem:
    """A worklist item from a row of ``assignment.worklist_columns()`` (plus ``assigned_to``,
    the holder's username, unless *holder* is given), lease expiry applied."""
    status: StudyStatus = row["status"]
    lease: datetime | None = row["lease_expires_at"]
    due_at: datetime | None = row["due_at"]
    expired = status == StudyStatus.in_progress and lease is not None and lease < now
    held = status == StudyStatus.in_progress and not expired
    return WorklistItem(
        **{name: row[name] for name in _ROW_FIELDS},
        status=StudyStatus.unread if expired else status,
        assigned_to=None if expired else (holder if holder is not None else row["assigned_to"]),
        lease_expires_at=lease if held else None,
        overdue=status in OPEN_STATUSES and due_at is not None and due_at < now,
        clinical_question=row.get("clinical_question") or "",
    )


def claimed_item(row: Mapping[Any, Any], *, holder: User, now: datetime) -> WorklistItem:
    """The worklist item of a study *holder* has just claimed (``assignment.claim_next_item``)."""
    return row_item(row, now, holder=holder.username)


def _username(user: User | None) -> str | None:
    return user.username if user is not None else None


def worklist_item(s: Study, now: datetime) -> WorklistItem:
    """The worklist item of one loaded study (lease expiry applied)."""
    return WorklistItem(
        study_instance_uid=s.study_instance_uid,
        patient_name=s.patient.patient_name,
        patient_id=s.patient.patient_id,
        patient_sex=s.patient.patient_sex,
        patient_birth_date=s.patient.patient_birth_date,
        modalities=s.modalities,
        body_part_examined=s.body_part_examined,
        study_date=s.study_date,
        study_description=s.study_description,
        accession_number=s.accession_number,
        clinic=s.clinic.code,
        clinic_name=s.clinic.name,
        num_series=s.num_series,
        num_instances=s.num_instances,
        status=effective_status(s, now),
        priority=s.priority,
        due_at=s.due_at,
        received_at=s.received_at,
        completed_at=s.completed_at,
        assigned_to=_username(effective_holder(s, now)),
        lease_expires_at=s.lease_expires_at
        if effective_status(s, now) == StudyStatus.in_progress
        else None,
        overdue=s.status in OPEN_STATUSES and s.due_at is not None and s.due_at < now,
    )


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorklistPage:
    items: list[WorklistItem]
    limit: int
    offset: int


def worklist(
    session: Session,
    caller: Caller,
    f: WorklistFilter,
    *,
    batcher: audit.AccessBatcher,
    now: datetime | None = None,
) -> WorklistPage:
    """The reading worklist as *caller* may see it; a non-empty page is recorded as a read of
    patient data (once per session per window) and committed."""
    caller.require(Permission.worklist_read)
    user = caller.user
    found = list_worklist(session, f, user=user, scope=study_scope(session, user), now=now)
    if found:
        event = audit.record_access_for(
            session,
            caller,
            batcher=batcher,
            action=audit.STUDY_LISTED,
            study_uid="",
            object_type="worklist",
        )
        if event is not None:
            session.commit()
    return WorklistPage(items=found, limit=f.limit, offset=f.offset)


def next_item(
    session: Session, caller: Caller, *, lease: LeasePolicy, now: datetime | None = None
) -> WorklistItem | None:
    """Claim the highest-priority, earliest-due unread study *caller* is eligible for (None:
    nothing to read); commits."""
    caller.require(Permission.study_claim)
    user = caller.user
    now = now or utcnow()
    claimed = claim_next_item(session=session, radiologist=user, lease=lease, now=now)
    return None if claimed is None else claimed_item(claimed, holder=user, now=now)
