"""One study as its readers see it: detail with series, timeline and consultations; and the
UID conflicts recorded at registration (domain functions, no HTTP).

Each function takes the :class:`Caller` and decides permission, scope and the audit record.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased, joinedload

from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import Permission, get_study_in_scope
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import (
    Consultation,
    Institution,
    Series,
    StudyEvent,
    UidConflict,
)
from imaging_hub.worklist.reading.consultations import ConsultationItem, consultation_item
from imaging_hub.worklist.reading.queries import WorklistItem, worklist_item


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
class StudyDetail:
    study: WorklistItem
    series: list[SeriesItem] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    consultations: list[ConsultationItem] = field(default_factory=list)


def open_study(
    session: Session,
    caller: Caller,
    study_instance_uid: str,
    *,
    batcher: audit.AccessBatcher,
    now: datetime | None = None,
) -> StudyDetail:
    """One study in *caller*'s scope (NotFound otherwise, like an unknown one) with its series,
    timeline and consultations; the read is recorded (once per session per window)."""
    caller.require(Permission.study_read_phi)
    study = get_study_in_scope(
        session, principal=caller.user, study_instance_uid=study_instance_uid
    )
    event = audit.record_access_for(
        session,
        caller,
        batcher=batcher,
        action=audit.STUDY_OPENED,
        study_uid=study_instance_uid,
    )
    if event is not None:
        session.commit()
    now = now or datetime.now(UTC)
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
        TimelineEntry(
            kind=e.kind,
            at=e.at,
            actor=e.actor.username if e.actor is not None else None,
            detail=dict(e.detail or {}),
        )
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
    return StudyDetail(
        study=worklist_item(study, now),
        series=series,
        timeline=timeline,
        consultations=consultations,
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
    session: Session, caller: Caller, *, resolved: bool | None = None, limit: int = 100
) -> list[ConflictItem]:
    """UID conflicts recorded at registration, newest first (gateway administrators)."""
    caller.require(Permission.admin_gateways)
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
