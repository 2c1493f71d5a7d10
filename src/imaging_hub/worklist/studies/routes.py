"""One study: detail with timeline, claim / release / heartbeat, reassignment, priority,
escalation. Thin: every route calls one domain function."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from imaging_hub.dicom.uids import UID_PATTERN
from imaging_hub.worklist.access.policy import get_study_in_scope
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import Priority, Study, User
from imaging_hub.worklist.http.deps import AuditDep, SessionDep, StateDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.reading import assignment, consultations
from imaging_hub.worklist.reading.consultation_routes import ConsultationOut
from imaging_hub.worklist.reading.routes import WorklistItemOut
from imaging_hub.worklist.studies.queries import consultation_item, study_detail, worklist_item

router = APIRouter(prefix="/api/v1/studies", tags=["studies"])

UidPath = Annotated[str, Path(max_length=64, pattern=UID_PATTERN.pattern)]


class SeriesOut(BaseModel):
    series_instance_uid: str
    modality: str
    body_part_examined: str
    series_number: int | None
    series_description: str
    num_instances: int


class TimelineOut(BaseModel):
    kind: str
    at: datetime
    actor: str | None
    detail: dict[str, Any]


class StudyDetailOut(BaseModel):
    study: WorklistItemOut
    series: list[SeriesOut]
    timeline: list[TimelineOut]
    consultations: list[ConsultationOut]


class AssignIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)


class PriorityIn(BaseModel):
    priority: Priority


class EscalateIn(BaseModel):
    institution: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9-]+$")
    question: str = Field(min_length=1, max_length=10_000)


def _out(study: Study) -> WorklistItemOut:
    return WorklistItemOut.model_validate(
        worklist_item(study, assignment.utcnow()), from_attributes=True
    )


@router.get("/{study_instance_uid}", response_model=StudyDetailOut)
def get_study(
    study_instance_uid: UidPath,
    session: SessionDep,
    user: Annotated[User, require("study.read_phi")],
    auditor: AuditDep,
) -> StudyDetailOut:
    get_study_in_scope(session, principal=user, study_instance_uid=study_instance_uid)
    auditor.access(audit.STUDY_OPENED, study_uid=study_instance_uid)
    session.commit()
    detail = study_detail(session, user=user, study_instance_uid=study_instance_uid)
    return StudyDetailOut.model_validate(
        {
            "study": detail.item,
            "series": detail.series,
            "timeline": detail.timeline,
            "consultations": detail.consultations,
        },
        from_attributes=True,
    )


@router.post("/{study_instance_uid}/claim", response_model=WorklistItemOut)
def post_claim(
    study_instance_uid: UidPath,
    session: SessionDep,
    user: Annotated[User, require("study.claim")],
    state: StateDep,
) -> WorklistItemOut:
    get_study_in_scope(session, principal=user, study_instance_uid=study_instance_uid)
    return _out(
        assignment.claim(
            session=session,
            radiologist=user,
            study_instance_uid=study_instance_uid,
            lease=state.lease,
        )
    )


@router.post("/{study_instance_uid}/heartbeat", response_model=WorklistItemOut)
def post_heartbeat(
    study_instance_uid: UidPath,
    session: SessionDep,
    user: Annotated[User, require("study.claim")],
    state: StateDep,
) -> WorklistItemOut:
    get_study_in_scope(session, principal=user, study_instance_uid=study_instance_uid)
    return _out(
        assignment.heartbeat(
            session=session,
            radiologist=user,
            study_instance_uid=study_instance_uid,
            lease=state.lease,
        )
    )


@router.post("/{study_instance_uid}/release", response_model=WorklistItemOut)
def post_release(
    study_instance_uid: UidPath, session: SessionDep, user: Annotated[User, require("study.claim")]
) -> WorklistItemOut:
    return _out(
        assignment.release(session=session, user=user, study_instance_uid=study_instance_uid)
    )


@router.post("/{study_instance_uid}/assign", response_model=WorklistItemOut)
def post_assign(
    study_instance_uid: UidPath,
    payload: AssignIn,
    session: SessionDep,
    user: Annotated[User, require("study.assign")],
    state: StateDep,
) -> WorklistItemOut:
    """Admin reassignment to an eligible radiologist."""
    get_study_in_scope(session, principal=user, study_instance_uid=study_instance_uid)
    return _out(
        assignment.reassign(
            session=session,
            admin=user,
            study_instance_uid=study_instance_uid,
            to_username=payload.username,
            lease=state.lease,
        )
    )


@router.post("/{study_instance_uid}/priority", response_model=WorklistItemOut)
def post_priority(
    study_instance_uid: UidPath,
    payload: PriorityIn,
    session: SessionDep,
    user: Annotated[User, require("study.prioritize")],
    state: StateDep,
) -> WorklistItemOut:
    """Change the priority (radiologist or admin); the due time follows the SLA."""
    get_study_in_scope(session, principal=user, study_instance_uid=study_instance_uid)
    return _out(
        assignment.set_priority(
            session=session,
            user=user,
            study_instance_uid=study_instance_uid,
            priority=payload.priority,
            sla=state.sla,
        )
    )


@router.post("/{study_instance_uid}/escalate", response_model=ConsultationOut, status_code=201)
def post_escalate(
    study_instance_uid: UidPath,
    payload: EscalateIn,
    session: SessionDep,
    user: Annotated[User, require("study.escalate")],
    auditor: AuditDep,
) -> ConsultationOut:
    """Ask a city or provincial institution for a second opinion on a study you hold."""
    get_study_in_scope(session, principal=user, study_instance_uid=study_instance_uid)
    c = consultations.escalate(
        session=session,
        radiologist=user,
        study_instance_uid=study_instance_uid,
        institution_code=payload.institution,
        question=payload.question,
    )
    auditor.record(
        audit.STUDY_ESCALATED,
        object_type="consultation",
        object_id=str(c.id),
        study_uid=study_instance_uid,
        detail={"to": payload.institution},
    )
    session.commit()
    return ConsultationOut.model_validate(consultation_item(c), from_attributes=True)
