"""``GET /api/v1/institutions``: thin edge over :mod:`imaging_hub.worklist.admin.institutions`."""

from typing import Annotated

from fastapi import APIRouter

from imaging_hub.worklist.admin.institutions import READ, InstitutionView, list_institutions
from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.http.deps import CallerDep, SessionDep
from imaging_hub.worklist.http.permissions import require

router = APIRouter(prefix="/api/v1", tags=["admin"])


@router.get("/institutions", response_model=list[InstitutionView])
def get_institutions(
    _: Annotated[User, require(READ)], caller: CallerDep, session: SessionDep
) -> list[InstitutionView]:
    """Code, name, level and parent code of every institution (for showing names, not codes)."""
    return list_institutions(session, caller)
