"""``GET /api/v1/clinic/studies``: the clinic page's list (studies with report status, and
orders without images yet; each row with its ``stage``, see docs/orders.md)."""

from typing import Annotated

from fastapi import APIRouter, Query

from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.http.deps import CallerDep, SessionDep, StateDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.studies.clinic import MAX_LIMIT, ClinicStudyPage, clinic_studies

router = APIRouter(prefix="/api/v1/clinic", tags=["clinic"])


@router.get("/studies", response_model=ClinicStudyPage)
def get_clinic_studies(
    session: SessionDep,
    _: Annotated[User, require("clinic.studies")],
    caller: CallerDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 25,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    patient: Annotated[str, Query(max_length=64)] = "",
    clinic: Annotated[str, Query(max_length=63, pattern=r"^[a-z0-9-]*$")] = "",
) -> ClinicStudyPage:
    """The caller's clinic's exams, newest first: studies with their reading status, signed
    documents and order, and orders that have no study yet; each row with its ``stage``
    (clinic staff: their own clinic; administrators: ``clinic`` or every clinic)."""
    return clinic_studies(
        session,
        caller,
        limit=limit,
        offset=offset,
        patient=patient,
        clinic=clinic,
        batcher=state.access_batcher,
    )
