"""``GET /api/v1/worklist`` (filters and sorting) and ``POST /api/v1/worklist/next``."""

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime, BaseModel, TypeAdapter

from imaging_hub.worklist.access.policy import study_scope
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import Priority, StudyStatus, User
from imaging_hub.worklist.http.deps import AuditDep, SessionDep, StateDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.reading.assignment import claim_next_item, utcnow
from imaging_hub.worklist.studies.queries import (
    SortKey,
    WorklistFilter,
    WorklistItem,
    claimed_item,
    list_worklist,
)

router = APIRouter(prefix="/api/v1/worklist", tags=["worklist"])


class WorklistItemOut(BaseModel):
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
    lease_expires_at: datetime | None
    overdue: bool


class WorklistOut(BaseModel):
    items: list[WorklistItemOut]
    limit: int
    offset: int


@dataclass(frozen=True)
class WorklistPage:
    items: list[WorklistItem]
    limit: int
    offset: int


_PAGE_JSON = TypeAdapter(WorklistPage)


@router.get("", response_model=WorklistOut)
def get_worklist(
    session: SessionDep,
    user: Annotated[User, require("worklist.read")],
    auditor: AuditDep,
    status: Annotated[list[StudyStatus] | None, Query()] = None,
    priority: Annotated[list[Priority] | None, Query()] = None,
    clinic: Annotated[str | None, Query(max_length=63, pattern=r"^[a-z0-9-]+$")] = None,
    modality: Annotated[str | None, Query(max_length=16, pattern=r"^[A-Za-z]{1,16}$")] = None,
    patient: Annotated[str | None, Query(max_length=64)] = None,
    due_before: AwareDatetime | None = None,
    due_after: AwareDatetime | None = None,
    overdue: bool = False,
    assigned_to_me: bool = False,
    escalated_to_me: bool = False,
    sort: SortKey = "priority",
    descending: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    f = WorklistFilter(
        status=status,
        priority=priority,
        clinic=clinic,
        modality=modality,
        patient=patient,
        due_before=due_before,
        due_after=due_after,
        overdue=overdue,
        assigned_to_me=assigned_to_me,
        escalated_to_me=escalated_to_me,
        sort=sort,
        descending=descending,
        limit=limit,
        offset=offset,
    )
    found = list_worklist(session, f, user=user, scope=study_scope(session, user))
    if found:
        auditor.access(audit.STUDY_LISTED, study_uid="", object_type="worklist")
        session.commit()
    # Serialised once, straight from the query's dataclasses (the same JSON as WorklistOut).
    page = WorklistPage(items=found, limit=limit, offset=offset)
    return Response(_PAGE_JSON.dump_json(page), media_type="application/json")


@router.post(
    "/next",
    response_model=WorklistItemOut,
    responses={204: {"description": "Nothing to read that you are eligible for."}},
)
def post_next(
    session: SessionDep, user: Annotated[User, require("study.claim")], state: StateDep
) -> WorklistItemOut | Response:
    """Claim the highest-priority, earliest-due unread study you are eligible for."""
    now = utcnow()
    claimed = claim_next_item(session=session, radiologist=user, lease=state.lease, now=now)
    if claimed is None:
        return Response(status_code=204)
    return WorklistItemOut.model_validate(
        claimed_item(claimed, holder=user, now=now), from_attributes=True
    )
