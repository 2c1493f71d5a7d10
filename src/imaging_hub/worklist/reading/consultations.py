"""Escalation up the five-level chain: a hub radiologist asks a city or provincial institution.

The radiologist holding a study asks an ancestor institution (city or province) a question; the
study becomes ``escalated`` (no lease runs meanwhile) and shows in that institution's consultants'
worklist. The first consultant to answer attaches the opinion; the study returns to the asking
radiologist (``in_progress`` with a fresh lease), who finalises it by signing. Every step is on
the study's timeline.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from imaging_hub.errors import ClaimConflict, Conflict, Forbidden, NotFound
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import Permission, get_study_in_scope
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import (
    Consultation,
    ConsultationStatus,
    Institution,
    InstitutionLevel,
    Notification,
    Role,
    Study,
    StudyStatus,
    User,
)
from imaging_hub.worklist.reading.assignment import (
    add_event,
    leased_to,
    require_holder,
    update_study,
    utcnow,
)
from imaging_hub.worklist.studies.registration import LeasePolicy

CONSULTING_LEVELS = (InstitutionLevel.city, InstitutionLevel.province)
MAX_TEXT = 10_000


@dataclass(frozen=True)
class ConsultationItem:
    """A consultation as the API shows it."""

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


def consultation_item(c: Consultation) -> ConsultationItem:
    return ConsultationItem(
        id=c.id,
        study_instance_uid=c.study.study_instance_uid,
        status=c.status,
        to_institution=c.to_institution.code,
        question=c.question,
        opinion=c.opinion,
        requested_by=c.requested_by.username,
        consultant=c.consultant.username if c.consultant is not None else None,
        requested_at=c.requested_at,
        answered_at=c.answered_at,
    )


def ancestors(session: Session, institution: Institution) -> list[Institution]:
    """The chain above *institution*, nearest first (bounded: five levels)."""
    chain: list[Institution] = []
    current = institution.parent
    while current is not None and len(chain) < len(InstitutionLevel):
        chain.append(current)
        current = current.parent
    return chain


@dataclass(frozen=True)
class ConsultingTarget:
    """An institution the caller may ask for an opinion (city or province above theirs)."""

    code: str
    name: str
    level: InstitutionLevel


def consulting_targets(session: Session, caller: Caller) -> list[ConsultingTarget]:
    """The city and provincial institutions in the chain above the caller's institution, nearest
    first: exactly those :func:`escalate` accepts (no PHI)."""
    caller.require(Permission.study_escalate)
    user = caller.user
    return [
        ConsultingTarget(code=i.code, name=i.name, level=i.level)
        for i in ancestors(session, user.institution)
        if i.level in CONSULTING_LEVELS
    ]


def consulting_institution(session: Session, code: str, *, above: Institution) -> Institution:
    """The city or provincial institution *code* in the chain above *above*, to be asked."""
    target = session.scalar(select(Institution).where(Institution.code == code))
    if target is None:
        raise NotFound("No institution with this code.")
    if target.level not in CONSULTING_LEVELS:
        raise Conflict("Consultations go to a city or provincial institution.")
    if target.id not in {i.id for i in ancestors(session, above)}:
        raise Conflict("Consultations go up the caller's own chain of institutions.")
    return target


def escalate(
    session: Session,
    caller: Caller,
    study_instance_uid: str,
    *,
    institution_code: str,
    question: str,
    now: datetime | None = None,
) -> Consultation:
    """Ask a city or provincial institution above the caller's for a second opinion on a study
    the caller holds; audited."""
    radiologist = caller.user
    now = now or utcnow()
    if radiologist.role != Role.radiologist:
        raise Forbidden("Only radiologists escalate studies.")
    caller.require(Permission.study_escalate)
    question = question.strip()
    if not question or len(question) > MAX_TEXT:
        raise Conflict("A consultation needs a question of at most 10,000 characters.")
    study = get_study_in_scope(
        session, principal=radiologist, study_instance_uid=study_instance_uid
    )
    require_holder(study, radiologist, now)
    target = consulting_institution(session, institution_code, above=radiologist.institution)
    if not update_study(
        session,
        Study.id == study.id,
        Study.status == StudyStatus.in_progress,
        Study.assigned_to_id == radiologist.id,
        Study.lease_expires_at >= now,
        status=StudyStatus.escalated,
        lease_expires_at=None,
        updated_at=now,
    ):
        session.rollback()
        raise ClaimConflict("The claim on this study changed meanwhile; reload the worklist.")
    consultation = Consultation(
        study_id=study.id,
        requested_by_id=radiologist.id,
        to_institution_id=target.id,
        question=question,
        requested_at=now,
    )
    session.add(consultation)
    session.flush()
    add_event(
        session,
        study,
        "escalated",
        at=now,
        actor=radiologist,
        consultation_id=consultation.id,
        to_institution=target.code,
        to_level=target.level.value,
        question=question,
    )
    _notify_consultants(
        session, target, study_id=study.id, consultation_id=consultation.id, now=now
    )
    audit.record_for(
        session,
        caller,
        audit.STUDY_ESCALATED,
        object_type="consultation",
        object_id=str(consultation.id),
        study_uid=study.study_instance_uid,
        detail={"to": institution_code},
    )
    session.commit()
    session.refresh(consultation)
    return consultation


def get_consultation(session: Session, caller: Caller, consultation_id: int) -> Consultation:
    """A consultation the caller may see: its consultants' institution, its asker, admins."""
    caller.require(Permission.worklist_read)
    user = caller.user
    c = session.get(Consultation, consultation_id)
    if c is None or not (
        user.role == Role.admin
        or c.requested_by_id == user.id
        or (user.role == Role.consultant and c.to_institution_id == user.institution_id)
    ):
        raise NotFound("No consultation with this id.")
    return c


def _asked_of(session: Session, consultant: User, consultation_id: int) -> Consultation:
    """An open consultation addressed to *consultant*'s institution (NotFound / Conflict)."""
    c = session.get(Consultation, consultation_id)
    if c is None or c.to_institution_id != consultant.institution_id:
        raise NotFound("No consultation with this id for your institution.")
    if c.status != ConsultationStatus.open:
        raise Conflict(f"This consultation is {c.status.value}; it takes no further action.")
    return c


def _leave_open(
    session: Session, c: Consultation, status: ConsultationStatus, **values: object
) -> bool:
    """Move *c* from open to *status* with one conditional UPDATE; False if it was not open."""
    result = session.execute(
        update(Consultation)
        .where(Consultation.id == c.id, Consultation.status == ConsultationStatus.open)
        .values(status=status, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def give_opinion(
    session: Session,
    caller: Caller,
    consultation_id: int,
    *,
    opinion: str,
    lease: LeasePolicy,
    now: datetime | None = None,
) -> Consultation:
    """A consultant of the asked institution answers; the study goes back to the asker."""
    consultant = caller.user
    now = now or utcnow()
    if consultant.role != Role.consultant:
        raise Forbidden("Only consultants give opinions.")
    caller.require(Permission.study_opinion)
    opinion = opinion.strip()
    if not opinion or len(opinion) > MAX_TEXT:
        raise Conflict("An opinion must have between 1 and 10,000 characters.")
    c = _asked_of(session, consultant, consultation_id)
    if not _leave_open(
        session,
        c,
        ConsultationStatus.answered,
        opinion=opinion,
        consultant_id=consultant.id,
        answered_at=now,
    ):
        session.rollback()
        raise Conflict("Another consultant answered this consultation a moment ago.")
    _return_to_asker(session, c, lease=lease, now=now)
    add_event(
        session,
        c.study_id,
        "opinion",
        at=now,
        actor=consultant,
        consultation_id=c.id,
        institution=c.to_institution.code,
        opinion=opinion,
    )
    session.add(
        Notification(
            user_id=c.requested_by_id,
            kind="opinion",
            study_id=c.study_id,
            at=now,
            detail={"consultation_id": c.id},
        )
    )
    session.commit()
    session.refresh(c)
    return c


def forward(
    session: Session,
    caller: Caller,
    consultation_id: int,
    *,
    institution_code: str,
    note: str,
    now: datetime | None = None,
) -> Consultation:
    """A consultant passes an open consultation further up the chain (city -> province).

    The consultation becomes ``forwarded`` (the consultant and its note recorded on it) and a new
    open consultation with the same asker and question goes to *institution_code*, which must be
    a consulting institution above the consultant's own. The study stays escalated; the answer
    of the new institution returns it to the asking radiologist as usual. Returns the new one.
    """
    consultant = caller.user
    now = now or utcnow()
    if consultant.role != Role.consultant:
        raise Forbidden("Only consultants forward consultations.")
    caller.require(Permission.study_opinion)
    note = note.strip()
    if not note or len(note) > MAX_TEXT:
        raise Conflict("Forwarding needs a note of at most 10,000 characters.")
    c = _asked_of(session, consultant, consultation_id)
    target = consulting_institution(session, institution_code, above=consultant.institution)
    if not _leave_open(
        session,
        c,
        ConsultationStatus.forwarded,
        opinion=note,
        consultant_id=consultant.id,
        closed_at=now,
    ):
        session.rollback()
        raise Conflict("This consultation was answered or forwarded a moment ago.")
    onward = Consultation(
        study_id=c.study_id,
        requested_by_id=c.requested_by_id,
        to_institution_id=target.id,
        question=c.question,
        requested_at=now,
    )
    session.add(onward)
    session.flush()
    add_event(
        session,
        c.study_id,
        "consultation_forwarded",
        at=now,
        actor=consultant,
        consultation_id=c.id,
        new_consultation_id=onward.id,
        from_institution=c.to_institution.code,
        to_institution=target.code,
        to_level=target.level.value,
        note=note,
    )
    _notify_consultants(session, target, study_id=c.study_id, consultation_id=onward.id, now=now)
    session.add(
        Notification(
            user_id=c.requested_by_id,
            kind="consultation_forwarded",
            study_id=c.study_id,
            at=now,
            detail={"consultation_id": onward.id, "to_institution": target.code},
        )
    )
    session.commit()
    session.refresh(onward)
    return onward


def _notify_consultants(
    session: Session,
    institution: Institution,
    *,
    study_id: int,
    consultation_id: int,
    now: datetime,
) -> None:
    """Tell every active consultant of *institution* about a consultation it was asked."""
    for consultant in session.scalars(
        select(User).where(
            User.institution_id == institution.id, User.role == Role.consultant, User.is_active
        )
    ):
        session.add(
            Notification(
                user_id=consultant.id,
                kind="consultation",
                study_id=study_id,
                at=now,
                detail={"consultation_id": consultation_id},
            )
        )


def withdraw(
    session: Session,
    caller: Caller,
    consultation_id: int,
    *,
    lease: LeasePolicy,
    now: datetime | None = None,
) -> Consultation:
    """The asking radiologist withdraws an open consultation."""
    caller.require(Permission.study_escalate)
    user = caller.user
    now = now or utcnow()
    c = session.get(Consultation, consultation_id)
    if c is None or not (user.role == Role.admin or c.requested_by_id == user.id):
        raise NotFound("No consultation with this id.")
    if c.status != ConsultationStatus.open:
        raise Conflict(f"This consultation is {c.status.value}; only open ones can be withdrawn.")
    if not _leave_open(session, c, ConsultationStatus.withdrawn, closed_at=now):
        session.rollback()
        raise Conflict("This consultation was answered a moment ago.")
    _return_to_asker(session, c, lease=lease, now=now)
    add_event(
        session, c.study_id, "consultation_withdrawn", at=now, actor=user, consultation_id=c.id
    )
    session.commit()
    session.refresh(c)
    return c


def _return_to_asker(
    session: Session, c: Consultation, *, lease: LeasePolicy, now: datetime
) -> None:
    if not update_study(
        session,
        Study.id == c.study_id,
        Study.status == StudyStatus.escalated,
        **leased_to(c.requested_by_id, lease, now),
    ):
        session.rollback()
        raise Conflict("The study is no longer escalated.")


def list_consultations(
    session: Session, caller: Caller, *, status: ConsultationStatus | None = None, limit: int = 100
) -> list[ConsultationItem]:
    """Consultations the caller takes part in: to its institution (consultants), asked by it
    (radiologists), or all (admins); newest first."""
    caller.require(Permission.worklist_read)
    user = caller.user
    stmt = select(Consultation)
    if user.role == Role.consultant:
        stmt = stmt.where(Consultation.to_institution_id == user.institution_id)
    elif user.role == Role.radiologist:
        stmt = stmt.where(Consultation.requested_by_id == user.id)
    elif user.role != Role.admin:
        raise Forbidden("Clinic accounts take no part in consultations.")
    if status is not None:
        stmt = stmt.where(Consultation.status == status)
    stmt = stmt.order_by(Consultation.requested_at.desc(), Consultation.id.desc()).limit(limit)
    return [consultation_item(c) for c in session.scalars(stmt)]
