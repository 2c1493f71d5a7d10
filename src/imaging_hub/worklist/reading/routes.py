"""``GET /api/v1/worklist`` (filters and sorting) and ``POST /api/v1/worklist/next``."""

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime, TypeAdapter

from imaging_hub.worklist.db.models import Priority, StudyStatus, User
from imaging_hub.worklist.http.deps import CallerDep, SessionDep, StateDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.reading.queries import (
    SortKey,
    WorklistFilter,
    WorklistItem,
    WorklistPage,
    next_item,
    worklist,
)

router = APIRouter(prefix="/api/v1/worklist", tags=["worklist"])

_PAGE_JSON = TypeAdapter(WorklistPage)


@router.get("", response_model=WorklistPage)
def get_worklist(
    session: SessionDep,
    _: Annotated[User, require("worklist.read")],
    caller: CallerDep,
    state: StateDep,
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
    page = worklist(session, caller, f, batcher=state.access_batcher)
    # Serialised once, straight from the domain's dataclasses (the documented response model).
    return Response(_PAGE_JSON.dump_json(page), media_type="application/json")


@router.post(
    "/next",
    response_model=WorklistItem,
    responses={204: {"description": "Nothing to read that you are eligible for."}},
)
def post_next(
    session: SessionDep,
    _: Annotated[User, require("study.claim")],
    caller: CallerDep,
    state: StateDep,
) -> WorklistItem | Response:
    """Claim the highest-priority, earliest-due unread study you are eligible for."""
    claimed = next_item(session, caller, lease=state.lease)
    return Response(status_code=204) if claimed is None else claimed
