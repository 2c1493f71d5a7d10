"""Assignment of studies to radiologists: claims as leases, release, heartbeat, reassignment.

A claim is a lease: ``in_progress`` with ``lease_expires_at``. A heartbeat extends it; a lease
that ran out is treated as ``unread`` by every query at once (lazily) and is turned back into
``unread`` with a ``lease_expired`` timeline event by the periodic :func:`sweep` (or by the next
claim, whichever comes first).

No two radiologists can ever hold the same study:

- on PostgreSQL the candidate row is locked with ``SELECT ... FOR UPDATE SKIP LOCKED``, so
  concurrent ``next`` callers skip each other's rows instead of waiting or colliding;
- on every backend the claim itself is one conditional ``UPDATE ... WHERE id = ? AND <still
  claimable>``; if another transaction won in between, zero rows change and the caller tries the
  next candidate (SQLite serialises writers, so this alone is enough there).
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    RowMapping,
    and_,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.orm import Session, joinedload, sessionmaker

from imaging_hub.errors import ClaimConflict, Conflict, Forbidden, NotFound
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import Permission, get_study_in_scope, study_scope
from imaging_hub.worklist.db.models import (
    Consultation,
    ConsultationStatus,
    Eligibility,
    Institution,
    Notification,
    Patient,
    Priority,
    Role,
    Series,
    Shift,
    Study,
    StudyEvent,
    StudyStatus,
    User,
)
from imaging_hub.worklist.studies.registration import PRIORITY_RANK, LeasePolicy, SlaPolicy

log = logging.getLogger(__name__)

# Series of these modalities carry no images to read; eligibility ignores them.
NON_IMAGE_MODALITIES = ("SR", "KO", "PR", "DOC", "REG", "SEG")
# How many times `claim_next` tries another candidate when a concurrent claimer won the row.
CLAIM_ATTEMPTS = 20
OPEN_STATUSES = (StudyStatus.unread, StudyStatus.in_progress, StudyStatus.escalated)


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- predicates ------------------------------------------------------------------------------


def lease_expired(now: datetime) -> ColumnElement[bool]:
    """An ``in_progress`` study whose lease ran out: it counts as ``unread`` everywhere."""
    return and_(Study.status == StudyStatus.in_progress, Study.lease_expires_at < now)


def claimable(now: datetime) -> ColumnElement[bool]:
    return or_(Study.status == StudyStatus.unread, lease_expired(now))


def status_is(wanted: StudyStatus, now: datetime) -> ColumnElement[bool]:
    """``status == wanted`` as the caller sees it, with lease expiry applied lazily."""
    if wanted == StudyStatus.unread:
        return claimable(now)
    if wanted == StudyStatus.in_progress:
        return and_(
            Study.status == StudyStatus.in_progress,
            or_(Study.lease_expires_at.is_(None), Study.lease_expires_at >= now),
        )
    return Study.status == wanted


def effective_status(study: Study, now: datetime) -> StudyStatus:
    if (
        study.status == StudyStatus.in_progress
        and study.lease_expires_at is not None
        and study.lease_expires_at < now
    ):
        return StudyStatus.unread
    return study.status


def effective_holder(study: Study, now: datetime) -> User | None:
    if effective_status(study, now) == StudyStatus.unread:
        return None
    return study.assigned_to


def eligible_clause(eligibility: Eligibility | None) -> ColumnElement[bool]:
    """Studies a radiologist with *eligibility* may read; empty lists mean 'all'.

    Every image series of the study must be of an allowed modality and body part (a series
    without a body part does not match a body-part restriction), and the clinic must be covered.
    """
    if eligibility is None:
        return false()
    clauses: list[ColumnElement[bool]] = []
    if eligibility.clinic_ids:
        clauses.append(Study.clinic_id.in_(list(eligibility.clinic_ids)))
    image_series = and_(
        Series.study_id == Study.id, Series.modality.not_in(list(NON_IMAGE_MODALITIES))
    )
    if eligibility.modalities:
        allowed = [m.upper() for m in eligibility.modalities]
        clauses.append(~exists().where(image_series, Series.modality.not_in(allowed)))
    if eligibility.body_parts:
        parts = [p.upper() for p in eligibility.body_parts]
        clauses.append(
            ~exists().where(image_series, func.upper(Series.body_part_examined).not_in(parts))
        )
    return and_(true(), *clauses)


# --- who is on duty --------------------------------------------------------------------------


def on_duty_clause(now: datetime) -> ColumnElement[bool]:
    shift = exists().where(Shift.user_id == User.id, Shift.starts_at <= now, Shift.ends_at > now)
    return and_(User.is_active.is_(True), or_(User.on_duty.is_(True), shift))


def is_on_duty(session: Session, *, user: User, now: datetime) -> bool:
    """On duty: the manual ``on_duty`` flag, or a shift covering *now*."""
    found = session.scalar(select(User.id).where(User.id == user.id, on_duty_clause(now)))
    return found is not None


def on_duty_radiologists(session: Session, *, now: datetime) -> list[User]:
    return list(
        session.scalars(
            select(User).where(User.role == Role.radiologist, on_duty_clause(now)).order_by(User.id)
        )
    )


# --- lookups ---------------------------------------------------------------------------------


def get_study(session: Session, study_instance_uid: str) -> Study:
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_instance_uid))
    if study is None:
        raise NotFound("No study with this StudyInstanceUID.")
    return study


def _require_radiologist(session: Session, user: User, now: datetime) -> Eligibility | None:
    """Check that *user* is an on-duty radiologist; its eligibility (None: none recorded).

    One query for both: the on-duty test and the eligibility row.
    """
    if user.role != Role.radiologist:
        raise Forbidden("Only radiologists claim studies.")
    row = session.execute(
        select(on_duty_clause(now).label("on_duty"), Eligibility)
        .select_from(User)
        .outerjoin(Eligibility, Eligibility.user_id == User.id)
        .where(User.id == user.id)
    ).first()
    if row is None or not row.on_duty:
        raise Forbidden("You are not on duty; claims are for on-duty radiologists.")
    eligibility: Eligibility | None = row.Eligibility
    return eligibility


def is_eligible(session: Session, *, user: User, study: Study) -> bool:
    """Eligibility (modality, body part, clinic) within the user's scope (clinics below it)."""
    clause = and_(eligible_clause(session.get(Eligibility, user.id)), study_scope(session, user))
    return session.scalar(select(Study.id).where(Study.id == study.id, clause)) is not None


def add_event(
    session: Session,
    study: Study | int,
    kind: str,
    *,
    at: datetime,
    actor: User | None = None,
    **detail: object,
) -> None:
    session.add(
        StudyEvent(
            study_id=study if isinstance(study, int) else study.id,
            kind=kind,
            actor_id=actor.id if actor is not None else None,
            at=at,
            detail=dict(detail),
        )
    )


def update_study(session: Session, *conditions: ColumnElement[bool], **values: object) -> bool:
    """One conditional ``UPDATE studies SET ... WHERE ...``; True if exactly one row changed."""
    result = session.execute(
        update(Study)
        .where(*conditions)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def leased_to(user_id: int, lease: LeasePolicy, now: datetime) -> dict[str, object]:
    """Column values of a study claimed by *user_id* with a fresh lease."""
    return {
        "status": StudyStatus.in_progress,
        "assigned_to_id": user_id,
        "claimed_at": now,
        "lease_expires_at": now + lease.lease,
        "updated_at": now,
    }


UNCLAIMED: dict[str, object] = {
    "status": StudyStatus.unread,
    "assigned_to_id": None,
    "claimed_at": None,
    "lease_expires_at": None,
}


def _take(
    session: Session,
    *,
    study_id: int,
    previous_holder: int | None,
    user: User,
    lease: LeasePolicy,
    now: datetime,
) -> bool:
    """The one conditional UPDATE that hands a still-claimable study to *user*."""
    holder = (
        Study.assigned_to_id.is_(None)
        if previous_holder is None
        else Study.assigned_to_id == previous_holder
    )
    return update_study(
        session, Study.id == study_id, claimable(now), holder, **leased_to(user.id, lease, now)
    )


def _record_claim(
    session: Session,
    *,
    study_id: int,
    previous_status: StudyStatus,
    previous_holder: int | None,
    actor: User | None,
    now: datetime,
    kind: str = "claimed",
    **detail: object,
) -> None:
    if previous_status == StudyStatus.in_progress:
        add_event(session, study_id, "lease_expired", at=now, previous_holder_id=previous_holder)
    add_event(session, study_id, kind, at=now, actor=actor, **detail)


# --- claims ----------------------------------------------------------------------------------


QUEUE_ORDER = (Study.priority_rank, Study.due_at, Study.id)


class NotEligible(Conflict):
    """A reassignment to a radiologist outside their eligibility or off duty."""

    code = "not_eligible"


@dataclass(frozen=True)
class _Candidate:
    id: int
    status: StudyStatus
    holder: int | None
    key: tuple[int, datetime, int]


def _next_candidate(
    session: Session, clause: ColumnElement[bool], now: datetime
) -> _Candidate | None:
    """Lock the first claimable study in queue order, skipping rows other claimers hold.

    Two small index scans instead of one over every open study: unread studies (partial index
    ``ix_studies_unread``, where claimed studies never get in the way) and claims whose lease ran
    out (few: at most one per radiologist, and the sweep turns them back into unread). The
    earlier of the two wins; the other row's lock ends with this transaction.
    """
    columns = (Study.id, Study.status, Study.assigned_to_id, Study.priority_rank, Study.due_at)
    expired = session.execute(
        select(*columns)
        .where(lease_expired(now), clause)
        .order_by(*QUEUE_ORDER)
        .limit(1)
        .with_for_update(skip_locked=True, of=Study)
    ).first()
    unread = session.execute(
        select(*columns)
        .where(Study.status == StudyStatus.unread, clause)
        .order_by(*QUEUE_ORDER)
        .limit(1)
        .with_for_update(skip_locked=True, of=Study)
    ).first()
    found = [
        _Candidate(r.id, r.status, r.assigned_to_id, (r.priority_rank, r.due_at or now, r.id))
        for r in (expired, unread)
        if r is not None
    ]
    return min(found, key=lambda c: c.key) if found else None


def claim_next(
    *, session: Session, radiologist: User, lease: LeasePolicy, now: datetime | None = None
) -> Study | None:
    """Claim the highest-priority, earliest-due study *radiologist* may read; None if none.

    Commits the session. Raises Forbidden for a caller who is not an on-duty radiologist.
    """
    claimed = _claim_next(session=session, radiologist=radiologist, lease=lease, now=now)
    if claimed is None:
        return None
    study = session.get(
        Study,
        claimed.id,
        populate_existing=True,
        options=[joinedload(Study.patient), joinedload(Study.clinic)],
    )
    assert study is not None
    return study


def claim_next_item(
    *, session: Session, radiologist: User, lease: LeasePolicy, now: datetime | None = None
) -> RowMapping | None:
    """:func:`claim_next` for the API: the claimed study's :func:`worklist_columns` (see
    ``queries.claimed_item``), without loading ORM objects again (on PostgreSQL the claim's own
    ``RETURNING`` carries them)."""
    return _claim_next(session=session, radiologist=radiologist, lease=lease, now=now)


def worklist_columns() -> tuple[Any, ...]:
    """The columns of a worklist item (``queries.WorklistItem``), named like its fields; the
    holder's username (``assigned_to``) and ``overdue`` are added by the caller."""
    return (
        Study.id,
        Study.study_instance_uid,
        Patient.patient_name,
        Patient.patient_id,
        Patient.patient_sex,
        Patient.patient_birth_date,
        Study.modalities,
        Study.body_part_examined,
        Study.study_date,
        Study.study_description,
        Study.accession_number,
        Institution.code.label("clinic"),
        Institution.name.label("clinic_name"),
        Study.num_series,
        Study.num_instances,
        Study.status,
        Study.priority,
        Study.due_at,
        Study.received_at,
        Study.completed_at,
        Study.lease_expires_at,
    )


def _claim_next(
    *, session: Session, radiologist: User, lease: LeasePolicy, now: datetime | None = None
) -> RowMapping | None:
    now = now or utcnow()
    eligibility = _require_radiologist(session, radiologist, now)
    clause = and_(eligible_clause(eligibility), study_scope(session, radiologist))
    if session.get_bind().dialect.name == "postgresql":
        return _claim_next_locked(
            session=session, radiologist=radiologist, clause=clause, lease=lease, now=now
        )
    for _ in range(CLAIM_ATTEMPTS):
        row = _next_candidate(session, clause, now)
        if row is None:
            session.rollback()
            return None
        study_id, previous_status, previous_holder = row.id, row.status, row.holder
        if _take(
            session,
            study_id=study_id,
            previous_holder=previous_holder,
            user=radiologist,
            lease=lease,
            now=now,
        ):
            _record_claim(
                session,
                study_id=study_id,
                previous_status=previous_status,
                previous_holder=previous_holder,
                actor=radiologist,
                now=now,
                via="next",
            )
            session.commit()
            found = session.execute(
                select(*worklist_columns())
                .join(Patient, Study.patient_pk == Patient.id)
                .join(Institution, Study.clinic_id == Institution.id)
                .where(Study.id == study_id)
            ).one()
            return found._mapping
        session.rollback()  # a concurrent claimer won this row (SQLite): try the next one
    raise ClaimConflict("The worklist is too busy right now; try again.")


def _claim_next_locked(
    *,
    session: Session,
    radiologist: User,
    clause: ColumnElement[bool],
    lease: LeasePolicy,
    now: datetime,
) -> RowMapping | None:
    """PostgreSQL: the whole claim in one statement and one insert, then COMMIT.

    ``UPDATE studies ... FROM (the first of two row-locked candidates) RETURNING ...``: the
    candidates are the first unread study and the first study whose lease ran out, each found
    with ``SELECT ... FOR UPDATE SKIP LOCKED`` (concurrent claimers skip each other's rows); the
    earlier in queue order is taken. The ``RETURNING`` clause carries the worklist columns, so
    nothing is read again.
    """
    columns = (Study.id, Study.status, Study.assigned_to_id, Study.priority_rank, Study.due_at)

    def candidate(condition: ColumnElement[bool], name: str) -> Any:
        return (
            select(*columns)
            .where(condition, clause)
            .order_by(*QUEUE_ORDER)
            .limit(1)
            .with_for_update(skip_locked=True, of=Study)
            .cte(name)
        )

    unread = candidate(Study.status == StudyStatus.unread, "unread_candidate")
    expired = candidate(lease_expired(now), "expired_candidate")
    both = union_all(select(unread), select(expired)).subquery("candidates")
    pick = (
        select(both).order_by(both.c.priority_rank, both.c.due_at, both.c.id).limit(1).cte("picked")
    )
    row = session.execute(
        update(Study)
        .where(
            Study.id == pick.c.id,
            Patient.id == Study.patient_pk,
            Institution.id == Study.clinic_id,
        )
        .values(**leased_to(radiologist.id, lease, now))
        .returning(
            *worklist_columns(),
            pick.c.status.label("previous_status"),
            pick.c.assigned_to_id.label("previous_holder"),
        )
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        session.rollback()
        return None
    _record_claim(
        session,
        study_id=row.id,
        previous_status=StudyStatus(row.previous_status),
        previous_holder=row.previous_holder,
        actor=radiologist,
        now=now,
        via="next",
    )
    session.commit()
    return row._mapping


def _in_scope(session: Session, caller: Caller, permission: Permission, uid: str) -> Study:
    """The study *uid* for *caller*: the permission checked, then the scope (NotFound outside
    it, like an unknown study)."""
    caller.require(permission)
    return get_study_in_scope(session, principal=caller.user, study_instance_uid=uid)


def claim(
    session: Session,
    caller: Caller,
    study_instance_uid: str,
    *,
    lease: LeasePolicy,
    now: datetime | None = None,
) -> Study:
    """Claim one study explicitly; claiming a study you already hold renews the lease."""
    now = now or utcnow()
    study = _in_scope(session, caller, Permission.study_claim, study_instance_uid)
    radiologist = caller.user
    _require_radiologist(session, radiologist, now)
    if not is_eligible(session, user=radiologist, study=study):
        raise Forbidden("You are not eligible to read this study (modality, body part or clinic).")
    status = effective_status(study, now)
    if status == StudyStatus.in_progress and study.assigned_to_id == radiologist.id:
        return _extend(session, study, radiologist, lease=lease, now=now)
    if status == StudyStatus.in_progress:
        raise ClaimConflict("This study is already claimed by another radiologist.")
    if status != StudyStatus.unread:
        raise ClaimConflict(f"A study that is {status.value} cannot be claimed.")
    previous_status, previous_holder = study.status, study.assigned_to_id
    locked = session.execute(
        select(Study.id).where(Study.id == study.id).with_for_update(of=Study)
    ).first()
    if locked is None or not _take(
        session,
        study_id=study.id,
        previous_holder=previous_holder,
        user=radiologist,
        lease=lease,
        now=now,
    ):
        session.rollback()
        raise ClaimConflict("This study was claimed by another radiologist a moment ago.")
    _record_claim(
        session,
        study_id=study.id,
        previous_status=previous_status,
        previous_holder=previous_holder,
        actor=radiologist,
        now=now,
        via="claim",
    )
    session.commit()
    session.refresh(study)
    return study


def require_holder(study: Study, user: User, now: datetime) -> None:
    status = effective_status(study, now)
    if status == StudyStatus.unread and study.assigned_to_id == user.id:
        raise ClaimConflict("Your claim on this study has expired; claim it again.")
    if status != StudyStatus.in_progress:
        raise ClaimConflict(f"This study is {status.value}, not claimed.")
    if study.assigned_to_id != user.id:
        raise ClaimConflict("This study is claimed by another radiologist.")


def _conditional(
    session: Session, study: Study, user_id: int, now: datetime, **values: object
) -> None:
    """Apply *values* only if *user_id* still holds an unexpired lease; else ClaimConflict."""
    if not update_study(
        session,
        Study.id == study.id,
        Study.assigned_to_id == user_id,
        Study.status == StudyStatus.in_progress,
        Study.lease_expires_at >= now,
        updated_at=now,
        **values,
    ):
        session.rollback()
        raise ClaimConflict("The claim on this study changed meanwhile; reload the worklist.")


def heartbeat(
    session: Session,
    caller: Caller,
    study_instance_uid: str,
    *,
    lease: LeasePolicy,
    now: datetime | None = None,
) -> Study:
    """Extend the caller's lease on a study it holds."""
    now = now or utcnow()
    study = _in_scope(session, caller, Permission.study_claim, study_instance_uid)
    return _extend(session, study, caller.user, lease=lease, now=now)


def _extend(
    session: Session, study: Study, radiologist: User, *, lease: LeasePolicy, now: datetime
) -> Study:
    require_holder(study, radiologist, now)
    _conditional(session, study, radiologist.id, now, lease_expires_at=now + lease.lease)
    session.commit()
    session.refresh(study)
    return study


def release(
    session: Session, caller: Caller, study_instance_uid: str, *, now: datetime | None = None
) -> Study:
    """Give a claimed study back to the queue (its holder)."""
    now = now or utcnow()
    study = _in_scope(session, caller, Permission.study_claim, study_instance_uid)
    user = caller.user
    require_holder(study, user, now)
    holder = user.id
    _conditional(session, study, holder, now, **UNCLAIMED)
    add_event(session, study, "released", at=now, actor=user, previous_holder_id=holder)
    session.commit()
    session.refresh(study)
    return study


def reassign(
    session: Session,
    caller: Caller,
    study_instance_uid: str,
    *,
    to_username: str,
    lease: LeasePolicy,
    now: datetime | None = None,
) -> Study:
    """An admin hands an unread or claimed study to an eligible radiologist."""
    now = now or utcnow()
    admin = caller.user
    if admin.role != Role.admin:
        raise Forbidden("Only an administrator reassigns studies.")
    study = _in_scope(session, caller, Permission.study_assign, study_instance_uid)
    target = session.scalar(select(User).where(User.username == to_username))
    if target is None or not target.is_active:
        raise NotFound("No active user with this username.")
    if target.role != Role.radiologist:
        raise Conflict("Studies are assigned to radiologists only.")
    if not is_eligible(session, user=target, study=study):
        raise NotEligible(
            "This radiologist is not eligible for the study (modality, body part or clinic) "
            "or not on duty now."
        )
    status = effective_status(study, now)
    if status not in (StudyStatus.unread, StudyStatus.in_progress):
        raise ClaimConflict(f"A study that is {status.value} cannot be reassigned.")
    previous = study.assigned_to_id if status == StudyStatus.in_progress else None
    unchanged = (
        Study.assigned_to_id.is_(None)
        if study.assigned_to_id is None
        else Study.assigned_to_id == study.assigned_to_id
    )
    if not update_study(
        session,
        Study.id == study.id,
        Study.status == study.status,
        unchanged,
        **leased_to(target.id, lease, now),
    ):
        session.rollback()
        raise ClaimConflict("The study changed meanwhile; reload and try again.")
    add_event(
        session,
        study,
        "assigned",
        at=now,
        actor=admin,
        to_user_id=target.id,
        previous_holder_id=previous,
    )
    session.add(Notification(user_id=target.id, kind="assigned", study_id=study.id, at=now))
    session.commit()
    session.refresh(study)
    return study


def set_priority(
    session: Session,
    caller: Caller,
    study_instance_uid: str,
    *,
    priority: Priority,
    sla: SlaPolicy,
    now: datetime | None = None,
) -> Study:
    """Change a study's priority (radiologist or admin); the due time is recomputed."""
    now = now or utcnow()
    user = caller.user
    if user.role not in (Role.radiologist, Role.admin):
        raise Forbidden("Only radiologists and administrators change priorities.")
    study = _in_scope(session, caller, Permission.study_prioritize, study_instance_uid)
    if study.status not in (StudyStatus.receiving, *OPEN_STATUSES):
        raise Conflict(f"The priority of a {study.status.value} study cannot change.")
    if study.priority == priority:
        return study
    old = study.priority
    study.priority = priority
    study.priority_rank = PRIORITY_RANK[priority]
    study.due_at = sla.due(priority, study.completed_at) if study.completed_at else None
    study.overdue_notified_at = None
    study.updated_at = now
    add_event(
        session, study, "priority_changed", at=now, actor=user, old=old.value, new=priority.value
    )
    session.commit()
    session.refresh(study)
    return study


def record_signed(
    *, session: Session, radiologist: User, study_instance_uid: str, now: datetime | None = None
) -> Study:
    """The study's report was signed by its holder: the read is finished.

    The domain hook for the reading room (signing itself lives there). Answered consultations
    are closed: the hub radiologist's signed report is the final word.
    """
    now = now or utcnow()
    study = get_study(session, study_instance_uid)
    require_holder(study, radiologist, now)
    _conditional(
        session,
        study,
        radiologist.id,
        now,
        status=StudyStatus.signed,
        signed_at=now,
        lease_expires_at=None,
    )
    for consultation in session.scalars(
        select(Consultation).where(
            Consultation.study_id == study.id,
            Consultation.status == ConsultationStatus.answered,
        )
    ):
        consultation.status = ConsultationStatus.closed
        consultation.closed_at = now
    add_event(session, study, "signed", at=now, actor=radiologist)
    session.commit()
    session.refresh(study)
    return study


# --- background work: expiry, overdue STAT, auto-assign --------------------------------------


def expire_leases(*, session: Session, now: datetime | None = None) -> list[str]:
    """Return abandoned studies to the queue with a ``lease_expired`` event; their UIDs."""
    now = now or utcnow()
    rows = session.execute(
        select(Study.id, Study.study_instance_uid, Study.assigned_to_id).where(lease_expired(now))
    ).all()
    expired: list[str] = []
    for study_id, uid, holder in rows:
        if update_study(
            session,
            Study.id == study_id,
            lease_expired(now),
            Study.assigned_to_id == holder,
            updated_at=now,
            **UNCLAIMED,
        ):
            add_event(session, study_id, "lease_expired", at=now, previous_holder_id=holder)
            expired.append(uid)
    session.commit()
    if expired:
        log.info("returned %d abandoned studies to the queue", len(expired))
    return expired


def notify_overdue_stat(*, session: Session, now: datetime | None = None) -> list[str]:
    """Push every newly overdue STAT study to every on-duty radiologist, once; their UIDs."""
    now = now or utcnow()
    rows = session.execute(
        select(Study.id, Study.study_instance_uid).where(
            Study.status.in_(OPEN_STATUSES),
            Study.priority_rank == PRIORITY_RANK[Priority.stat],
            Study.due_at < now,
            Study.overdue_notified_at.is_(None),
        )
    ).all()
    notified: list[str] = []
    if not rows:
        session.rollback()
        return notified
    radiologists = on_duty_radiologists(session, now=now)
    for study_id, uid in rows:
        if not update_study(
            session,
            Study.id == study_id,
            Study.overdue_notified_at.is_(None),
            overdue_notified_at=now,
        ):
            continue  # another worker got there first
        add_event(session, study_id, "overdue", at=now, notified=len(radiologists))
        if radiologists:
            # One multi-row INSERT per study (no ORM objects: a backlog of overdue STAT studies
            # times every on-duty radiologist can be thousands of rows).
            session.execute(
                insert(Notification),
                [
                    {
                        "user_id": user.id,
                        "kind": "overdue_stat",
                        "study_id": study_id,
                        "at": now,
                        "read_at": None,
                        "detail": {"study_instance_uid": uid},
                    }
                    for user in radiologists
                ],
            )
        notified.append(uid)
    session.commit()
    if notified:
        log.warning("%d STAT studies overdue; on-duty radiologists notified", len(notified))
    return notified


def outstanding_work(session: Session, *, user_ids: list[int]) -> dict[int, int]:
    """Studies each user holds (claimed or escalated and awaiting an opinion)."""
    counts = {uid: 0 for uid in user_ids}
    rows = session.execute(
        select(Study.assigned_to_id, func.count(Study.id))
        .where(
            Study.assigned_to_id.in_(user_ids),
            Study.status.in_([StudyStatus.in_progress, StudyStatus.escalated]),
        )
        .group_by(Study.assigned_to_id)
    ).all()
    for uid, n in rows:
        if uid is not None:
            counts[int(uid)] = int(n)
    return counts


def auto_assign(
    *, session: Session, lease: LeasePolicy, now: datetime | None = None, batch: int = 50
) -> list[tuple[str, str]]:
    """Hand unread studies to the eligible on-duty radiologist with the least outstanding work.

    Returns (StudyInstanceUID, username) pairs. An assignment is an ordinary claim with a lease:
    if nobody works on it, it expires and comes back.
    """
    now = now or utcnow()
    radiologists = on_duty_radiologists(session, now=now)
    if not radiologists:
        session.rollback()
        return []
    load = outstanding_work(session, user_ids=[r.id for r in radiologists])
    clauses = {
        r.id: and_(eligible_clause(session.get(Eligibility, r.id)), study_scope(session, r))
        for r in radiologists
    }
    assigned: list[tuple[str, str]] = []
    candidates = session.execute(
        select(Study.id, Study.study_instance_uid, Study.status, Study.assigned_to_id)
        .where(Study.status.in_([StudyStatus.unread, StudyStatus.in_progress]), claimable(now))
        .order_by(Study.priority_rank, Study.due_at, Study.id)
        .limit(batch)
    ).all()
    for study_id, uid, previous_status, previous_holder in candidates:
        eligible = [
            r
            for r in radiologists
            if session.scalar(select(Study.id).where(Study.id == study_id, clauses[r.id]))
        ]
        if not eligible:
            continue
        chosen = min(eligible, key=lambda r: (load[r.id], r.id))
        if not _take(
            session,
            study_id=study_id,
            previous_holder=previous_holder,
            user=chosen,
            lease=lease,
            now=now,
        ):
            continue
        _record_claim(
            session,
            study_id=study_id,
            previous_status=previous_status,
            previous_holder=previous_holder,
            actor=None,
            now=now,
            kind="assigned",
            to_user_id=chosen.id,
            policy="least_outstanding",
        )
        session.add(Notification(user_id=chosen.id, kind="assigned", study_id=study_id, at=now))
        load[chosen.id] += 1
        assigned.append((uid, chosen.username))
    session.commit()
    return assigned


def sweep(
    *,
    sessions: sessionmaker[Session],
    lease: LeasePolicy,
    auto_assign_enabled: bool,
    now: datetime | None = None,
) -> None:
    """One pass of the periodic background work; safe to run in every worker at once."""
    now = now or utcnow()
    with sessions() as session:
        expire_leases(session=session, now=now)
        notify_overdue_stat(session=session, now=now)
        if auto_assign_enabled:
            auto_assign(session=session, lease=lease, now=now)
