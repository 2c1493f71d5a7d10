"""Read-side queries of the worklist (domain functions, no HTTP)."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import Session, joinedload

from imaging_hub.worklist.models import Institution, Patient, Priority, Study, StudyStatus

SortKey = Literal["priority", "due_at", "received_at", "study_date", "patient_name", "clinic"]


@dataclass(frozen=True)
class WorklistFilter:
    status: list[StudyStatus] | None = None
    priority: list[Priority] | None = None
    clinic: str | None = None
    modality: str | None = None
    patient: str | None = None
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


def _apply_filter(stmt: Select[Any], f: WorklistFilter) -> Select[Any]:
    if f.status:
        stmt = stmt.where(Study.status.in_(f.status))
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
        "priority": [Study.priority_rank, Study.due_at, Study.received_at],
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
    session: Session, f: WorklistFilter, *, scope: ColumnElement[bool] | None = None
) -> list[WorklistItem]:
    """The filtered worklist; *scope* (``policy.study_scope``) limits it to the caller's studies."""
    stmt = (
        select(Study)
        .join(Patient, Study.patient_pk == Patient.id)
        .join(Institution, Study.clinic_id == Institution.id)
        .options(joinedload(Study.patient), joinedload(Study.clinic), joinedload(Study.assigned_to))
    )
    if scope is not None:
        stmt = stmt.where(scope)
    studies: list[Study] = list(session.scalars(_apply_filter(stmt, f)).unique().all())
    return [
        WorklistItem(
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
            status=s.status,
            priority=s.priority,
            due_at=s.due_at,
            received_at=s.received_at,
            completed_at=s.completed_at,
            assigned_to=s.assigned_to.username if s.assigned_to else None,
        )
        for s in studies
    ]
