"""The clinic's own studies with their reading and report status, for the clinic page.

One query answers a page: the studies (newest first) joined with their patient, their holder and
their signed documents, so the page needs no request per row. Clinic staff see their own clinic
only; administrators may name a clinic (or see every clinic). The list holds patient data: a
non-empty page is recorded like the worklist (``study.listed``, once per session and window).
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from imaging_hub.errors import NotFound
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import Permission, study_scope
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import (
    Institution,
    Patient,
    Priority,
    Report,
    ReportKind,
    ReportStatus,
    Role,
    Study,
    StudyStatus,
    User,
)
from imaging_hub.worklist.reading.assignment import effective_status

MAX_LIMIT = 200


@dataclass(frozen=True)
class ClinicStudy:
    """One row of the clinic page."""

    study_instance_uid: str
    clinic: str
    patient_name: str
    patient_id: str
    patient_sex: str
    patient_birth_date: str
    study_date: str
    study_description: str
    modalities: str
    num_instances: int
    received_at: datetime
    status: StudyStatus
    priority: Priority
    due_at: datetime | None
    #: The signer of the report, else the radiologist holding the study (None: nobody yet).
    radiologist: str | None
    #: The signed report (None until signed) and its signed addenda, oldest first.
    report_id: int | None
    addenda: tuple[int, ...]
    signed_at: datetime | None
    #: A signed document flagged critical: the one still to acknowledge, else the latest.
    critical: bool
    critical_report_id: int | None
    critical_category: str
    acknowledged: bool
    acknowledged_at: datetime | None


@dataclass(frozen=True)
class ClinicStudyPage:
    items: list[ClinicStudy]
    limit: int
    offset: int


def _like(text: str) -> str:
    needle = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{needle}%"


def clinic_studies(
    session: Session,
    caller: Caller,
    *,
    limit: int = 25,
    offset: int = 0,
    patient: str = "",
    clinic: str = "",
    batcher: audit.AccessBatcher,
    now: datetime | None = None,
) -> ClinicStudyPage:
    """A page of the clinic's studies with status and report facts; one query."""
    caller.require(Permission.clinic_studies)
    user = caller.user
    now = now or datetime.now(UTC)
    limit = max(1, min(limit, MAX_LIMIT))
    offset = max(0, offset)
    page = select(Study.id).where(study_scope(session, user))
    if user.role == Role.clinic_staff:
        page = page.where(Study.clinic_id == user.institution_id)
        if clinic and clinic != user.institution.code:
            raise NotFound("No clinic with this code is visible to you.")
    elif clinic:
        clinic_id = session.scalar(select(Institution.id).where(Institution.code == clinic))
        if clinic_id is None:
            raise NotFound("No clinic with this code is visible to you.")
        page = page.where(Study.clinic_id == clinic_id)
    patient = patient.strip()
    if patient:
        # Names in reading order: "王小东" finds "王^小东" (the component separator ignored).
        name = func.replace(Patient.patient_name, "^", "")
        page = page.join(Patient, Study.patient_pk == Patient.id).where(
            name.ilike(_like(patient.replace("^", "")), escape="\\")
            | Patient.patient_id.ilike(_like(patient), escape="\\")
        )
    page_ids = (
        page.order_by(Study.received_at.desc(), Study.id.desc()).limit(limit).offset(offset)
    ).subquery()
    rows = session.execute(
        select(Study, Patient, Institution.code, User, Report)
        .join(page_ids, page_ids.c.id == Study.id)
        .join(Patient, Study.patient_pk == Patient.id)
        .join(Institution, Study.clinic_id == Institution.id)
        .outerjoin(User, Study.assigned_to_id == User.id)
        .outerjoin(
            Report,
            and_(Report.study_id == Study.id, Report.status == ReportStatus.signed),
        )
        .order_by(Study.received_at.desc(), Study.id.desc(), Report.signed_at, Report.id)
    ).all()
    grouped: dict[int, tuple[Study, Patient, str, User | None, list[Report]]] = {}
    for study, pat, code, holder, report in rows:
        entry = grouped.setdefault(study.id, (study, pat, code, holder, []))
        if report is not None:
            entry[4].append(report)
    items = [
        _item(study, pat, code, holder, reports, now)
        for study, pat, code, holder, reports in grouped.values()
    ]
    if items:
        event = audit.record_access(
            session,
            batcher=batcher,
            session_key=caller.session_key,
            actor=caller.actor,
            action=audit.STUDY_LISTED,
            study_uid="",
            source_ip=caller.source_ip,
            object_type="clinic_studies",
        )
        if event is not None:
            session.commit()
    return ClinicStudyPage(items=items, limit=limit, offset=offset)


def _item(
    study: Study,
    patient: Patient,
    clinic: str,
    holder: User | None,
    reports: list[Report],
    now: datetime,
) -> ClinicStudy:
    main = next((r for r in reports if r.kind == ReportKind.report), None)
    addenda = tuple(r.id for r in reports if r.kind == ReportKind.addendum)
    flagged = [r for r in reports if r.critical]
    critical = next((r for r in flagged if r.acknowledged_at is None), None) or (
        flagged[-1] if flagged else None
    )
    status = effective_status(study, now)
    radiologist: str | None = None
    if main is not None and main.signer_name:
        radiologist = main.signer_name
    elif holder is not None and status != StudyStatus.unread:
        radiologist = holder.display_name or holder.username
    return ClinicStudy(
        study_instance_uid=study.study_instance_uid,
        clinic=clinic,
        patient_name=patient.patient_name,
        patient_id=patient.patient_id,
        patient_sex=patient.patient_sex,
        patient_birth_date=patient.patient_birth_date,
        study_date=study.study_date,
        study_description=study.study_description,
        modalities=study.modalities,
        num_instances=study.num_instances,
        received_at=study.received_at,
        status=status,
        priority=study.priority,
        due_at=study.due_at,
        radiologist=radiologist,
        report_id=main.id if main is not None else None,
        addenda=addenda,
        signed_at=main.signed_at if main is not None else None,
        critical=critical is not None,
        critical_report_id=critical.id if critical is not None else None,
        critical_category=critical.critical_category if critical is not None else "",
        acknowledged=critical is not None and critical.acknowledged_at is not None,
        acknowledged_at=critical.acknowledged_at if critical is not None else None,
    )
