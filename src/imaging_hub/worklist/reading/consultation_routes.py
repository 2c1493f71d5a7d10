"""Consultations (escalations): the consultant's list, the opinion, withdrawal."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from imaging_hub.worklist.db.models import Consultation, ConsultationStatus, User
from imaging_hub.worklist.http.deps import SessionDep, StateDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.reading import consultations
from imaging_hub.worklist.studies.queries import consultation_item

router = APIRouter(prefix="/api/v1/consultations", tags=["consultations"])

IdPath = Annotated[int, Path(ge=1, le=2**62)]


class ConsultationOut(BaseModel):
    id: int
    study_instance_uid: str
    status: ConsultationStatus
    to_institution: str
    question: str
    opinion: str
    requested_by: str
    consultant: str | None
    requested_at: datetime
    answered_at: datetime | None


class OpinionIn(BaseModel):
    opinion: str = Field(min_length=1, max_length=10_000)


def _out(c: Consultation) -> ConsultationOut:
    return ConsultationOut.model_validate(consultation_item(c), from_attributes=True)


@router.get("", response_model=list[ConsultationOut])
def get_consultations(
    session: SessionDep,
    user: Annotated[User, require("worklist.read")],
    status: ConsultationStatus | None = None,
) -> list[ConsultationOut]:
    return [_out(c) for c in consultations.list_consultations(session, user=user, status=status)]


@router.get("/{consultation_id}", response_model=ConsultationOut)
def get_consultation(
    consultation_id: IdPath, session: SessionDep, user: Annotated[User, require("worklist.read")]
) -> ConsultationOut:
    return _out(consultations.get_consultation(session, user=user, consultation_id=consultation_id))


@router.post("/{consultation_id}/opinion", response_model=ConsultationOut)
def post_opinion(
    consultation_id: IdPath,
    payload: OpinionIn,
    session: SessionDep,
    user: Annotated[User, require("study.opinion")],
    state: StateDep,
) -> ConsultationOut:
    return _out(
        consultations.give_opinion(
            session=session,
            consultant=user,
            consultation_id=consultation_id,
            opinion=payload.opinion,
            lease=state.lease,
        )
    )


class ForwardIn(BaseModel):
    institution: str = Field(max_length=63, pattern=r"^[a-z0-9-]+$")
    note: str = Field(min_length=1, max_length=10_000)


@router.post("/{consultation_id}/forward", response_model=ConsultationOut)
def post_forward(
    consultation_id: IdPath,
    payload: ForwardIn,
    session: SessionDep,
    user: Annotated[User, require("study.opinion")],
) -> ConsultationOut:
    """Pass an open consultation further up the chain (e.g. city -> province): answered with
    the new consultation; the forwarded one keeps the note."""
    return _out(
        consultations.forward(
            session=session,
            consultant=user,
            consultation_id=consultation_id,
            institution_code=payload.institution,
            note=payload.note,
        )
    )


@router.post("/{consultation_id}/withdraw", response_model=ConsultationOut)
def post_withdraw(
    consultation_id: IdPath,
    session: SessionDep,
    user: Annotated[User, require("study.escalate")],
    state: StateDep,
) -> ConsultationOut:
    return _out(
        consultations.withdraw(
            session=session, user=user, consultation_id=consultation_id, lease=state.lease
        )
    )
