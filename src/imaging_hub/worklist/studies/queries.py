"""Read-side queries of the worklist (domain functions, no HTTP)."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, exists, or_, select
from sqlalchemy.orm import Session, aliased, joinedload

from imaging_hub.errors import Forbidden, NotFound
from imaging_hub.worklist.db.models import (
    Consultation,
    ConsultationStatus,
    Institution,
    Patient,
    Priority,
    Role,
    Series,
    Study,
    StudyEvent,
    StudyStatus,
    UidConflict,
    User,
)
from imaging_hub.worklist.reading.assignment import (
    OPEN_STATUSES,
    effective_holder,
    effective_status,
    get_study,
    status_is,
    worklist_columns,
)

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
        select(*worklist_columns(), holder.username.label("assigned_to"))
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
    if name not in ("status", "assigned_to", "lease_expires_at", "overdue")
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
    )


def claimed_item(row: Mapping[Any, Any], *, holder: User, now: datetime) -> WorklistItem:
    """The worklist item of a study *holder* has just claimed (``assignment.claim_next_item``)."""
    return row_item(row, now, holder=holder.username)


def _username(user: User | None) -> str | None:
    return user.username if user is not None else None


def _overdue(study: Study, now: datetime) -> bool:
    return study.status in OPEN_STATUSES and study.due_at is not None and study.due_at < now


@dataclass(frozen=True)
class SeriesItem:
    series_instance_uid: str
    modality: str
    body_part_examined: str
    series_number: int | None
    series_description: str
    num_instances: int


@dataclass(frozen=True)
class TimelineEntry:
    kind: str
    at: datetime
    actor: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class ConsultationItem:
    id: int
    study_instance_uid: str
    status: ConsultationStatus
    to_institution: str
    question: str
    opinion: str
    requested_by: str
    consultant: str | None
    requested_at: datetime
    answered_at: datetime | None


@dataclass(frozen=True)
class StudyDetail:
    item: WorklistItem
    series: list[SeriesItem] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    consultations: list[ConsultationItem] = field(default_factory=list)


def consultation_item(c: Consultation) -> ConsultationItem:
    return ConsultationItem(
        id=c.id,
        study_instance_uid=c.study.study_instance_uid,
        status=c.status,
        to_institution=c.to_institution.code,
        question=c.question,
        opinion=c.opinion,
        requested_by=c.requested_by.username,
        consultant=_username(c.consultant),
        requested_at=c.requested_at,
        answered_at=c.answered_at,
    )


def _may_see(session: Session, user: User, study: Study) -> bool:
    if user.role in (Role.radiologist, Role.admin):
        return True
    if user.role == Role.consultant:
        found = session.scalar(
            select(Consultation.id).where(
                Consultation.study_id == study.id,
                Consultation.to_institution_id == user.institution_id,
            )
        )
        return found is not None
    return study.clinic_id == user.institution_id  # clinic staff: their own clinic's studies


def study_detail(
    session: Session, *, user: User, study_instance_uid: str, now: datetime | None = None
) -> StudyDetail:
    """One study with its series, timeline and consultations, if *user* may see it."""
    now = now or datetime.now(UTC)
    study = get_study(session, study_instance_uid)
    if not _may_see(session, user, study):
        raise NotFound("No study with this StudyInstanceUID.")
    item = worklist_item(study, now)
    series = [
        SeriesItem(
            series_instance_uid=s.series_instance_uid,
            modality=s.modality,
            body_part_examined=s.body_part_examined,
            series_number=s.series_number,
            series_description=s.series_description,
            num_instances=s.num_instances,
        )
        for s in session.scalars(
            select(Series)
            .where(Series.study_id == study.id)
            .order_by(Series.series_number, Series.id)
        )
    ]
    events = session.scalars(
        select(StudyEvent)
        .options(joinedload(StudyEvent.actor))
        .where(StudyEvent.study_id == study.id)
        .order_by(StudyEvent.at, StudyEvent.id)
    )
    timeline = [
        TimelineEntry(kind=e.kind, at=e.at, actor=_username(e.actor), detail=dict(e.detail or {}))
        for e in events
    ]
    consultations = [
        consultation_item(c)
        for c in session.scalars(
            select(Consultation)
            .where(Consultation.study_id == study.id)
            .order_by(Consultation.requested_at, Consultation.id)
        )
    ]
    return StudyDetail(item=item, series=series, timeline=timeline, consultations=consultations)


def worklist_item(s: Study, now: datetime) -> WorklistItem:
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
        overdue=_overdue(s, now),
    )


@dataclass(frozen=True)
class ConflictItem:
    id: int
    study_instance_uid: str
    sop_instance_uid: str
    existing_clinic: str
    incoming_clinic: str
    at: datetime
    resolved: bool


def list_conflicts(
    session: Session, *, resolved: bool | None = None, limit: int = 100
) -> list[ConflictItem]:
    """UID conflicts recorded at registration, newest first."""
    existing = aliased(Institution)
    incoming = aliased(Institution)
    stmt = (
        select(UidConflict, existing.code, incoming.code)
        .join(existing, UidConflict.existing_clinic_id == existing.id)
        .join(incoming, UidConflict.incoming_clinic_id == incoming.id)
    )
    if resolved is not None:
        stmt = stmt.where(UidConflict.resolved.is_(resolved))
    stmt = stmt.order_by(UidConflict.at.desc(), UidConflict.id.desc()).limit(limit)
    return [
        ConflictItem(
            id=c.id,
            study_instance_uid=c.study_instance_uid,
            sop_instance_uid=c.sop_instance_uid,
            existing_clinic=ex,
            incoming_clinic=inc,
            at=c.at,
            resolved=c.resolved,
        )
        for c, ex, inc in session.execute(stmt)
    ]
