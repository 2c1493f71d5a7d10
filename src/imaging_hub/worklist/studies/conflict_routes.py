"""``GET /api/v1/admin/conflicts``: UIDs that arrived from a second clinic (never merged)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.http.deps import SessionDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.studies.queries import list_conflicts

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


class ConflictOut(BaseModel):
    id: int
    study_instance_uid: str
    sop_instance_uid: str
    existing_clinic: str
    incoming_clinic: str
    at: datetime
    resolved: bool


@router.get("/conflicts", response_model=list[ConflictOut])
def get_conflicts(
    session: SessionDep,
    user: Annotated[User, require("admin.gateways")],
    resolved: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ConflictOut]:
    """StudyInstanceUIDs (or SOP Instance UIDs) that arrived from a second clinic."""
    return [
        ConflictOut.model_validate(c, from_attributes=True)
        for c in list_conflicts(session, resolved=resolved, limit=limit)
    ]
