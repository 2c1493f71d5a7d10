"""``GET /api/v1/admin/conflicts``: UIDs that arrived from a second clinic (never merged)."""

from typing import Annotated

from fastapi import APIRouter, Query

from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.http.deps import CallerDep, SessionDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.studies.queries import ConflictItem, list_conflicts

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.get("/conflicts", response_model=list[ConflictItem])
def get_conflicts(
    session: SessionDep,
    _: Annotated[User, require("admin.gateways")],
    caller: CallerDep,
    resolved: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ConflictItem]:
    """StudyInstanceUIDs (or SOP Instance UIDs) that arrived from a second clinic."""
    return list_conflicts(session, caller, resolved=resolved, limit=limit)
