"""Consultations (escalations): the consultant's list, the opinion, forwarding, withdrawal."""

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from imaging_hub.worklist.db.models import ConsultationStatus, User
from imaging_hub.worklist.http.deps import CallerDep, SessionDep, StateDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.reading import consultations
from imaging_hub.worklist.reading.consultations import (
    ConsultationItem,
    ConsultingTarget,
    consultation_item,
)

router = APIRouter(prefix="/api/v1/consultations", tags=["consultations"])

IdPath = Annotated[int, Path(ge=1, le=2**62)]


class OpinionIn(BaseModel):
    opinion: str = Field(min_length=1, max_length=10_000)


class ForwardIn(BaseModel):
    institution: str = Field(max_length=63, pattern=r"^[a-z0-9-]+$")
    note: str = Field(min_length=1, max_length=10_000)


@router.get("", response_model=list[ConsultationItem])
def get_consultations(
    session: SessionDep,
    _: Annotated[User, require("worklist.read")],
    caller: CallerDep,
    status: ConsultationStatus | None = None,
) -> list[ConsultationItem]:
    return consultations.list_consultations(session, caller, status=status)


@router.get("/targets", response_model=list[ConsultingTarget])
def get_targets(
    session: SessionDep,
    _: Annotated[User, require("study.escalate")],
    caller: CallerDep,
) -> list[ConsultingTarget]:
    """The institutions the caller may escalate to: the city and provincial ones above the
    caller's institution, nearest first (``code``, ``name``, ``level``)."""
    return consultations.consulting_targets(session, caller)


@router.get("/{consultation_id}", response_model=ConsultationItem)
def get_consultation(
    consultation_id: IdPath,
    session: SessionDep,
    _: Annotated[User, require("worklist.read")],
    caller: CallerDep,
) -> ConsultationItem:
    return consultation_item(consultations.get_consultation(session, caller, consultation_id))


@router.post("/{consultation_id}/opinion", response_model=ConsultationItem)
def post_opinion(
    consultation_id: IdPath,
    payload: OpinionIn,
    session: SessionDep,
    _: Annotated[User, require("study.opinion")],
    caller: CallerDep,
    state: StateDep,
) -> ConsultationItem:
    return consultation_item(
        consultations.give_opinion(
            session, caller, consultation_id, opinion=payload.opinion, lease=state.lease
        )
    )


@router.post("/{consultation_id}/forward", response_model=ConsultationItem)
def post_forward(
    consultation_id: IdPath,
    payload: ForwardIn,
    session: SessionDep,
    _: Annotated[User, require("study.opinion")],
    caller: CallerDep,
) -> ConsultationItem:
    """Pass an open consultation further up the chain (e.g. city -> province): answered with
    the new consultation; the forwarded one keeps the note."""
    return consultation_item(
        consultations.forward(
            session,
            caller,
            consultation_id,
            institution_code=payload.institution,
            note=payload.note,
        )
    )


@router.post("/{consultation_id}/withdraw", response_model=ConsultationItem)
def post_withdraw(
    consultation_id: IdPath,
    session: SessionDep,
    _: Annotated[User, require("study.escalate")],
    caller: CallerDep,
    state: StateDep,
) -> ConsultationItem:
    return consultation_item(
        consultations.withdraw(session, caller, consultation_id, lease=state.lease)
    )
