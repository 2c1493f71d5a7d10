"""One study: detail with timeline, claim / release / heartbeat, reassignment, priority,
escalation. Thin: every route parses, calls one domain function and answers its dataclass."""

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from imaging_hub.dicom.uids import UID_PATTERN
from imaging_hub.worklist.db.models import Priority, Study, User
from imaging_hub.worklist.http.deps import CallerDep, SessionDep, StateDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.reading import assignment, consultations
from imaging_hub.worklist.reading.consultations import ConsultationItem, consultation_item
from imaging_hub.worklist.reading.queries import WorklistItem, worklist_item
from imaging_hub.worklist.studies.queries import StudyDetail, open_study

router = APIRouter(prefix="/api/v1/studies", tags=["studies"])

UidPath = Annotated[str, Path(max_length=64, pattern=UID_PATTERN.pattern)]


class AssignIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)


class PriorityIn(BaseModel):
    priority: Priority


class EscalateIn(BaseModel):
    institution: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9-]+$")
    question: str = Field(min_length=1, max_length=10_000)


def _item(study: Study) -> WorklistItem:
    return worklist_item(study, assignment.utcnow())


@router.get("/{study_instance_uid}", response_model=StudyDetail)
def get_study(
    study_instance_uid: UidPath,
    session: SessionDep,
    _: Annotated[User, require("study.read_phi")],
    caller: CallerDep,
    state: StateDep,
) -> StudyDetail:
    return open_study(session, caller, study_instance_uid, batcher=state.access_batcher)


@router.post("/{study_instance_uid}/claim", response_model=WorklistItem)
def post_claim(
    study_instance_uid: UidPath,
    session: SessionDep,
    _: Annotated[User, require("study.claim")],
    caller: CallerDep,
    state: StateDep,
) -> WorklistItem:
    return _item(assignment.claim(session, caller, study_instance_uid, lease=state.lease))


@router.post("/{study_instance_uid}/heartbeat", response_model=WorklistItem)
def post_heartbeat(
    study_instance_uid: UidPath,
    session: SessionDep,
    _: Annotated[User, require("study.claim")],
    caller: CallerDep,
    state: StateDep,
) -> WorklistItem:
    return _item(assignment.heartbeat(session, caller, study_instance_uid, lease=state.lease))


@router.post("/{study_instance_uid}/release", response_model=WorklistItem)
def post_release(
    study_instance_uid: UidPath,
    session: SessionDep,
    _: Annotated[User, require("study.claim")],
    caller: CallerDep,
) -> WorklistItem:
    return _item(assignment.release(session, caller, study_instance_uid))


@router.post("/{study_instance_uid}/assign", response_model=WorklistItem)
def post_assign(
    study_instance_uid: UidPath,
    payload: AssignIn,
    session: SessionDep,
    _: Annotated[User, require("study.assign")],
    caller: CallerDep,
    state: StateDep,
) -> WorklistItem:
    """Admin reassignment to an eligible radiologist."""
    return _item(
        assignment.reassign(
            session, caller, study_instance_uid, to_username=payload.username, lease=state.lease
        )
    )


@router.post("/{study_instance_uid}/priority", response_model=WorklistItem)
def post_priority(
    study_instance_uid: UidPath,
    payload: PriorityIn,
    session: SessionDep,
    _: Annotated[User, require("study.prioritize")],
    caller: CallerDep,
    state: StateDep,
) -> WorklistItem:
    """Change the priority (radiologist or admin); the due time follows the SLA."""
    return _item(
        assignment.set_priority(
            session, caller, study_instance_uid, priority=payload.priority, sla=state.sla
        )
    )


@router.post("/{study_instance_uid}/escalate", response_model=ConsultationItem, status_code=201)
def post_escalate(
    study_instance_uid: UidPath,
    payload: EscalateIn,
    session: SessionDep,
    _: Annotated[User, require("study.escalate")],
    caller: CallerDep,
) -> ConsultationItem:
    """Ask a city or provincial institution for a second opinion on a study you hold."""
    return consultation_item(
        consultations.escalate(
            session,
            caller,
            study_instance_uid,
            institution_code=payload.institution,
            question=payload.question,
        )
    )
