"""The clinic's own exams with their stage, for the clinic page: studies with their reading and
report status, and orders that have no study yet.

Each row has one ``stage`` word (docs/clinic-return.md, "Portal status of a clinic's exam"):
``ordered``, ``scanning``, ``discontinued`` or ``cancelled`` for an order without images at the
hub; ``receiving``, ``waiting``, ``reading``, ``signed``, ``delivered``, ``acknowledged`` or
``cancelled`` for a study. A study carries its order's facts (the order of its clinic with its
StudyInstanceUID, else its accession number); an order with such a study is not a row of its own.

Two queries answer a page, so the page needs no request per row: the page (newest first: studies
by arrival, orders by their scheduled time) is one SQL expression, joined once with the studies,
their patient, holder, order and signed documents, once with the orders. Clinic staff see their
own clinic only; administrators may name a clinic (or see every clinic). The list holds patient
data: a non-empty page is recorded like the worklist (``study.listed``, once per session and
window).
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, exists, false, func, literal, select, true, union_all
from sqlalchemy.orm import Session, aliased

from imaging_hub.errors import NotFound
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import Permission, study_scope
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import (
    Institution,
    Order,
    OrderStatus,
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
from imaging_hub.worklist.orders.orders import study_order_id
from imaging_hub.worklist.reading.assignment import effective_status

MAX_LIMIT = 200

#: The stage of a row with a study, by the study's (effective) status.
STUDY_STAGES: dict[StudyStatus, str] = {
    StudyStatus.receiving: "receiving",
    StudyStatus.unread: "waiting",
    StudyStatus.in_progress: "reading",
    StudyStatus.escalated: "reading",
    StudyStatus.signed: "signed",
    StudyStatus.delivered: "delivered",
    StudyStatus.acknowledged: "acknowledged",
    StudyStatus.cancelled: "cancelled",
}
#: The stage of an order without a study at the hub, by the order's status (a completed order
#: whose images have not reached the hub is still being scanned, as far as the clinic sees).
ORDER_STAGES: dict[OrderStatus, str] = {
    OrderStatus.scheduled: "ordered",
    OrderStatus.in_progress: "scanning",
    OrderStatus.completed: "scanning",
    OrderStatus.discontinued: "discontinued",
    OrderStatus.cancelled: "cancelled",
}


@dataclass(frozen=True)
class ClinicStudy:
    """One row of the clinic page: a study (with its order's facts, if any) or an order that
    has no study at the hub yet (``received_at`` None, ``status`` and ``stage`` the order's)."""

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
    received_at: datetime | None
    #: The study's status; for an order without a study, its stage.
    status: str
    #: One word for the clinic (docs/clinic-return.md): see STUDY_STAGES and ORDER_STAGES.
    stage: str
    order_id: int | None
    accession_number: str
    exam_type: str
    reason_for_procedure: str
    #: Why the exam was discontinued (the modality's reason) or cancelled.
    status_reason: str
    scheduled_at: datetime | None
    #: The order's status (None without an order) and when "exam done" was clicked.
    order_status: OrderStatus | None
    done_at: datetime | None
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
    studies = select(Study.id).where(study_scope(session, user))
    own_orders = select(Order.id)
    one_clinic: int | None = None
    if user.role == Role.clinic_staff:
        one_clinic = user.institution_id
        studies = studies.where(Study.clinic_id == user.institution_id)
        own_orders = own_orders.where(Order.clinic_id == user.institution_id)
        if clinic and clinic != user.institution.code:
            raise NotFound("No clinic with this code is visible to you.")
    elif user.role != Role.admin:
        own_orders = own_orders.where(false())
    if clinic and user.role != Role.clinic_staff:
        clinic_id = session.scalar(select(Institution.id).where(Institution.code == clinic))
        if clinic_id is None:
            raise NotFound("No clinic with this code is visible to you.")
        one_clinic = clinic_id
        studies = studies.where(Study.clinic_id == clinic_id)
        own_orders = own_orders.where(Order.clinic_id == clinic_id)
    patient = patient.strip()
    if patient:
        # Names in reading order: "王小东" finds "王^小东" (the component separator ignored).
        needle = _like(patient.replace("^", ""))
        name = func.replace(Patient.patient_name, "^", "")
        studies = studies.join(Patient, Study.patient_pk == Patient.id).where(
            name.ilike(needle, escape="\\") | Patient.patient_id.ilike(_like(patient), escape="\\")
        )
        own_orders = own_orders.where(
            func.replace(Order.patient_name, "^", "").ilike(needle, escape="\\")
            | Order.patient_id.ilike(_like(patient), escape="\\")
        )
    page = _page(studies, own_orders, limit=limit, offset=offset, clinic_id=one_clinic)
    rows = session.execute(
        select(Study, Patient, Institution.code, User, Report, Order, page.c.at)
        .join(page, and_(page.c.kind == "s", page.c.id == Study.id))
        .join(Patient, Study.patient_pk == Patient.id)
        .join(Institution, Study.clinic_id == Institution.id)
        .outerjoin(User, Study.assigned_to_id == User.id)
        .outerjoin(Order, Order.id == study_order_id())
        .outerjoin(
            Report,
            and_(Report.study_id == Study.id, Report.status == ReportStatus.signed),
        )
        .order_by(Study.received_at.desc(), Study.id.desc(), Report.signed_at, Report.id)
    ).all()
    grouped: dict[int, tuple[Study, Patient, str, User | None, Order | None, list[Report]]] = {}
    for study, pat, code, holder, report, order, _at in rows:
        entry = grouped.setdefault(study.id, (study, pat, code, holder, order, []))
        if report is not None:
            entry[5].append(report)
    keyed: list[tuple[datetime, str, int, ClinicStudy]] = [
        (study.received_at, "s", study.id, _item(study, pat, code, holder, order, reports, now))
        for study, pat, code, holder, order, reports in grouped.values()
    ]
    for order, code in session.execute(
        select(Order, Institution.code)
        .join(page, and_(page.c.kind == "o", page.c.id == Order.id))
        .join(Institution, Order.clinic_id == Institution.id)
    ).all():
        keyed.append((order.scheduled_at, "o", order.id, _order_item(order, code)))
    # The page's order (as in _page): newest first, then studies before orders, newest id first.
    keyed.sort(key=lambda k: -k[2])
    keyed.sort(key=lambda k: k[1])
    keyed.sort(key=lambda k: k[0], reverse=True)
    items = [k[3] for k in keyed]
    if items:
        event = audit.record_access_for(
            session,
            caller,
            batcher=batcher,
            action=audit.STUDY_LISTED,
            study_uid="",
            object_type="clinic_studies",
        )
        if event is not None:
            session.commit()
    return ClinicStudyPage(items=items, limit=limit, offset=offset)


def _page(studies: Any, orders: Any, *, limit: int, offset: int, clinic_id: int | None) -> Any:
    """The page as a subquery of (kind, id, at): ``s`` studies (at: received) and ``o`` orders
    without a study (at: scheduled), newest first. Each part is cut to ``limit + offset`` rows
    before they are merged, so each may use its own index. *clinic_id*: the one clinic listed
    (None: every clinic)."""
    study_ids = studies.subquery()
    order_ids = orders.subquery()
    # Aliases of their own: nothing in here may correlate with the queries that embed the page.
    study, order = aliased(Study), aliased(Order)
    by_uid, matched, by_accession = aliased(Study), aliased(Order), aliased(Study)
    study_part = (
        select(literal("s").label("kind"), study.id.label("id"), study.received_at.label("at"))
        .join(study_ids, study_ids.c.id == study.id)
        .order_by(study.received_at.desc(), study.id.desc())
        .limit(limit + offset)
    )
    order_part = (
        select(literal("o").label("kind"), order.id.label("id"), order.scheduled_at.label("at"))
        .join(order_ids, order_ids.c.id == order.id)
        .where(
            # No study of the clinic with the order's StudyInstanceUID (a unique index) ...
            ~exists()
            .where(
                by_uid.study_instance_uid == order.study_instance_uid,
                by_uid.clinic_id == order.clinic_id,
            )
            .correlate(order),
            # ... nor with its accession number (one set for the query, from the studies' side).
            order.id.not_in(
                select(matched.id)
                .join(
                    by_accession,
                    and_(
                        by_accession.clinic_id == matched.clinic_id,
                        by_accession.accession_number == matched.accession_number,
                    ),
                )
                .where(
                    matched.accession_number != "",
                    true() if clinic_id is None else by_accession.clinic_id == clinic_id,
                )
            ),
        )
        .order_by(order.scheduled_at.desc(), order.id.desc())
        .limit(limit + offset)
    )
    merged = union_all(select(study_part.subquery()), select(order_part.subquery())).subquery()
    return (
        select(merged.c.kind, merged.c.id, merged.c.at)
        .order_by(merged.c.at.desc(), merged.c.kind, merged.c.id.desc())
        .limit(limit)
        .offset(offset)
        .subquery()
    )


def _order_item(order: Order, clinic: str) -> ClinicStudy:
    stage = ORDER_STAGES[order.status]
    return ClinicStudy(
        study_instance_uid=order.study_instance_uid,
        clinic=clinic,
        patient_name=order.patient_name,
        patient_id=order.patient_id,
        patient_sex=order.patient_sex,
        patient_birth_date=order.patient_birth_date,
        study_date="",
        study_description=order.requested_procedure_description,
        modalities=order.modality,
        num_instances=0,
        received_at=None,
        status=stage,
        stage=stage,
        order_id=order.id,
        accession_number=order.accession_number,
        exam_type=order.exam_type,
        reason_for_procedure=order.reason_for_procedure,
        status_reason=order.status_reason,
        scheduled_at=order.scheduled_at,
        order_status=order.status,
        done_at=order.done_at,
        priority=order.priority,
        due_at=None,
        radiologist=None,
        report_id=None,
        addenda=(),
        signed_at=None,
        critical=False,
        critical_report_id=None,
        critical_category="",
        acknowledged=False,
        acknowledged_at=None,
    )


def _study_stage(status: StudyStatus, order: Order | None) -> str:
    """The stage of a study; images of a discontinued step that are still arriving (the study
    is not complete for reading) show the modality's discontinuation."""
    if (
        status == StudyStatus.receiving
        and order is not None
        and order.status == OrderStatus.discontinued
    ):
        return "discontinued"
    return STUDY_STAGES[status]


def _item(
    study: Study,
    patient: Patient,
    clinic: str,
    holder: User | None,
    order: Order | None,
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
        status=status.value,
        stage=_study_stage(status, order),
        order_id=order.id if order is not None else None,
        accession_number=study.accession_number or (order.accession_number if order else ""),
        exam_type=order.exam_type if order is not None else "",
        reason_for_procedure=order.reason_for_procedure if order is not None else "",
        status_reason=(order.status_reason if order is not None else "") or study.cancel_reason,
        scheduled_at=order.scheduled_at if order is not None else None,
        order_status=order.status if order is not None else None,
        done_at=order.done_at if order is not None else None,
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
