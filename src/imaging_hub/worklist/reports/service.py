"""Reports: drafts, signing, addenda, the signed PDF, critical results and their receipt.

Domain functions take the :class:`Caller` and decide everything: permission, scope (a study
outside the caller's scope answers like an unknown one), the rules below, the study's timeline,
the audit record and the commit. Routers only translate.

Rules:

- a draft belongs to its author; only the radiologist holding the study's claim writes and signs
  the report (403 ``report_not_holder``); another radiologist's draft cannot be signed (403
  ``report_not_author``);
- signing needs a non-empty impression (422 ``report_impression_empty``) and the caller's
  password (401 ``signing_password_wrong``: nothing signed, the attempt audited and throttled
  per user like logins); a signed report never changes (409 ``report_already_signed``);
- corrections are addenda: a new document amending the latest signed one, signed the same way;
  the study stays signed and the first PDF is untouched;
- a draft may mark one key image (an image instance of the same study, a frame, the window
  shown): validated when saved (422 ``report_key_image_invalid``), rendered server-side to PNG
  at signing (at most :data:`KEY_IMAGE_MAX_PX` a side) and printed in the PDF; an addendum
  marks its own;
- a report flagged critical notifies the clinic's staff when signed and stays open until a
  clinic user acknowledges it; unacknowledged after ``report_critical_ack_minutes`` the signer and
  the hub admins are notified (:func:`notify_unacknowledged_critical`, from the sweep).
"""

import logging
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from imaging_hub.dicom.render import render_frame
from imaging_hub.dicom.report_objects import (
    build_encapsulated_pdf,
    build_report_sr,
    patient_study_attributes,
)
from imaging_hub.dicom.uids import is_valid_uid
from imaging_hub.errors import Conflict, Forbidden, ImagingHubError, InvalidDicomError, NotFound
from imaging_hub.storage import ObjectStore, report_key
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import Permission, get_study_in_scope, study_scope
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import (
    Instance,
    Notification,
    Order,
    Report,
    ReportKind,
    ReportStatus,
    Role,
    Series,
    Study,
    StudyStatus,
    User,
)
from imaging_hub.worklist.reading.assignment import add_event, effective_status, record_signed
from imaging_hub.worklist.reports import credentials, objects, templates
from imaging_hub.worklist.reports.credentials import ReportsRuntime
from imaging_hub.worklist.reports.pdf import ReportDocument, render_report_pdf
from imaging_hub.worklist.reports.pki import InvalidSigningPassword
from imaging_hub.worklist.reports.signing import sign_pdf

log = logging.getLogger(__name__)

# Audit actions.
REPORT_DRAFTED = "report.drafted"  # detail.op: created (later saves are not audited)
REPORT_SIGNED = audit.REPORT_SIGNED
REPORT_SIGN_FAILED = "report.sign_failed"
REPORT_READ = "report.read"
REPORT_DOWNLOADED = audit.REPORT_DOWNLOADED
REPORT_ACKNOWLEDGED = "report.acknowledged"

#: Study states after the report was signed (an addendum may follow in any of them).
SIGNED_STATES = (StudyStatus.signed, StudyStatus.delivered, StudyStatus.acknowledged)
AckMethod = Literal["phone", "portal", "in_person", "message"]

FINDINGS_MAX = 20_000
IMPRESSION_MAX = 10_000
#: The key image is rendered to fit this many pixels a side (never enlarged).
KEY_IMAGE_MAX_PX = 1024
#: Frame numbers (1-based) and window values beyond these are not from a viewer.
KEY_IMAGE_MAX_FRAME = 100_000
KEY_IMAGE_MAX_WINDOW = 1e7


class ReportNotHolder(Forbidden):
    """Only the radiologist holding the study's claim writes and signs its report."""

    code = "report_not_holder"


class NotReportAuthor(Forbidden):
    """A draft belongs to its author: another radiologist cannot change or sign it."""

    code = "report_not_author"


class ReportAlreadySigned(Conflict):
    """A signed report never changes: sign once; corrections are addenda."""

    code = "report_already_signed"


class ReportNotSigned(Conflict):
    """An addendum amends a signed report: there is none yet."""

    code = "report_not_signed"


class EmptyImpression(ImagingHubError):
    """A report is signed only with an impression (HTTP 422)."""

    code = "report_impression_empty"


class InvalidReport(ImagingHubError):
    """A draft with an unknown template or a critical category not in the list (HTTP 422)."""

    code = "report_invalid"


class InvalidKeyImageReference(ImagingHubError):
    """The key image is not an image instance of this study, its frame is out of range, its
    window incomplete, or it cannot be rendered (HTTP 422)."""

    code = "report_key_image_invalid"


class ReportNotCritical(Conflict):
    """Only a critical result is acknowledged."""

    code = "report_not_critical"


class AlreadyAcknowledged(Conflict):
    """The critical result was acknowledged already."""

    code = "report_already_acknowledged"


# --- what the API answers --------------------------------------------------------------------


@dataclass(frozen=True)
class KeyImageRef:
    """The key image of a report: an image instance of the study, its frame (1-based, as in
    WADO-RS) and the window shown (centre/width in the image's modality units), or neither for
    the image's own VOI."""

    series_instance_uid: str
    sop_instance_uid: str
    frame: int = 1
    window_center: float | None = None
    window_width: float | None = None


@dataclass(frozen=True)
class ReportItem:
    id: int
    kind: ReportKind
    status: ReportStatus
    study_instance_uid: str
    predecessor_id: int | None
    author: str
    author_name: str
    template: str
    findings: str
    impression: str
    critical: bool
    critical_category: str
    created_at: datetime
    updated_at: datetime
    signed_at: datetime | None
    #: SHA-256 of the signed PDF (what ``GET /api/v1/reports/{id}/pdf`` returns).
    sha256: str
    signer_name: str
    signer_certificate_serial: str
    pdf_url: str | None
    #: The Encapsulated PDF and SR instances in the study (DICOMweb).
    pdf_sop_instance_uid: str
    sr_sop_instance_uid: str
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    acknowledgement_method: str
    acknowledgement_read_back: str
    #: The key image marked on the draft (printed in the signed PDF), or null.
    key_image: KeyImageRef | None = None


@dataclass(frozen=True)
class ReportChain:
    """A study's reports as the caller may see them: the signed report, its addenda (oldest
    first), and the caller's own draft (of the report or of an addendum)."""

    study_instance_uid: str
    study_status: StudyStatus
    clinical_question: str
    suggested_template: str
    critical_categories: tuple[str, ...]
    report: ReportItem | None
    addenda: tuple[ReportItem, ...]
    draft: ReportItem | None
    #: Whether the caller may write now: the report (holding the claim) or an addendum.
    can_write_report: bool
    can_write_addendum: bool
    #: The latest signed report of another study of the same patient in the caller's scope.
    prior_report: "PriorReport | None" = None


@dataclass(frozen=True)
class PriorReport:
    """The patient's previous signed report (text only), shown beside the editor."""

    id: int
    study_instance_uid: str
    study_date: str
    modality: str
    signed_at: datetime | None
    findings: str
    impression: str
    radiologist: str


@dataclass(frozen=True)
class DraftInput:
    template: str = ""
    findings: str = ""
    impression: str = ""
    critical: bool = False
    critical_category: str = ""
    #: The key image; None removes it (the draft is saved whole).
    key_image: KeyImageRef | None = None


@dataclass(frozen=True)
class ReportPdf:
    report_id: int
    filename: str
    sha256: str
    data: bytes


def _key_image_of(report: Report) -> KeyImageRef | None:
    stored: dict[str, Any] | None = report.key_image
    if not stored:
        return None
    return KeyImageRef(
        series_instance_uid=str(stored["series_instance_uid"]),
        sop_instance_uid=str(stored["sop_instance_uid"]),
        frame=int(stored.get("frame", 1)),
        window_center=stored.get("window_center"),
        window_width=stored.get("window_width"),
    )


def report_item(report: Report) -> ReportItem:
    signed = report.status == ReportStatus.signed
    return ReportItem(
        id=report.id,
        kind=report.kind,
        status=report.status,
        study_instance_uid=report.study.study_instance_uid,
        predecessor_id=report.predecessor_id,
        author=report.author.username,
        author_name=report.author.display_name or report.author.username,
        template=report.template,
        findings=report.findings,
        impression=report.impression,
        critical=report.critical,
        critical_category=report.critical_category,
        created_at=report.created_at,
        updated_at=report.updated_at,
        signed_at=report.signed_at,
        sha256=report.sha256,
        signer_name=report.signer_name,
        signer_certificate_serial=report.signer_certificate_serial,
        pdf_url=f"/api/v1/reports/{report.id}/pdf" if signed else None,
        pdf_sop_instance_uid=report.pdf_sop_instance_uid,
        sr_sop_instance_uid=report.sr_sop_instance_uid,
        acknowledged_at=report.acknowledged_at,
        acknowledged_by=report.acknowledged_by.username if report.acknowledged_by else None,
        acknowledgement_method=report.acknowledgement_method,
        acknowledgement_read_back=report.acknowledgement_read_back,
        key_image=_key_image_of(report),
    )


# --- lookups ---------------------------------------------------------------------------------


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def _report_in_scope(session: Session, user: User, report_id: int) -> Report:
    """The report if its study is in *user*'s scope and the user may see it: signed ones, and
    drafts to radiologists (whose own drafts are theirs; another's is refused where it
    matters). NotFound otherwise, like an unknown id."""
    report = session.scalar(
        select(Report)
        .join(Study, Report.study_id == Study.id)
        .where(Report.id == report_id, study_scope(session, user))
    )
    if report is None or (report.status != ReportStatus.signed and user.role != Role.radiologist):
        raise NotFound("No report with this id is visible to you.")
    return report


def _signed_chain(session: Session, study: Study) -> list[Report]:
    return list(
        session.scalars(
            select(Report)
            .where(Report.study_id == study.id, Report.status == ReportStatus.signed)
            .order_by(Report.signed_at, Report.id)
        )
    )


def _own_draft(session: Session, study: Study, user: User, kind: ReportKind) -> Report | None:
    return session.scalar(
        select(Report)
        .where(
            Report.study_id == study.id,
            Report.author_id == user.id,
            Report.status == ReportStatus.draft,
            Report.kind == kind,
        )
        .order_by(Report.id.desc())
        .limit(1)
    )


def matching_order(session: Session, study: Study) -> Order | None:
    match = Order.study_instance_uid == study.study_instance_uid
    if study.accession_number:
        match = or_(match, Order.accession_number == study.accession_number)
    return session.scalar(
        select(Order).where(Order.clinic_id == study.clinic_id, match).order_by(Order.id).limit(1)
    )


def clinical_question(session: Session, study: Study) -> str:
    """What the clinic asked: the matching order's Reason for the Requested Procedure; empty
    without an order (neither the requested procedure nor the study description is a
    clinician's question, so neither is shown as one)."""
    order = matching_order(session, study)
    return order.reason_for_procedure if order is not None else ""


def _holds_claim(study: Study, user: User, now: datetime) -> bool:
    return (
        effective_status(study, now) == StudyStatus.in_progress and study.assigned_to_id == user.id
    )


def _require_holder(study: Study, user: User, now: datetime) -> None:
    if not _holds_claim(study, user, now):
        raise ReportNotHolder(
            "Only the radiologist holding this study's claim writes and signs its report."
        )


# --- reading the chain -----------------------------------------------------------------------


def _prior_report(session: Session, user: User, study: Study) -> Report | None:
    """The latest signed report (not addendum) of another study of *study*'s patient that
    *user* may see; one query."""
    return session.scalar(
        select(Report)
        .join(Study, Report.study_id == Study.id)
        .where(
            Study.patient_pk == study.patient_pk,
            Study.id != study.id,
            Report.kind == ReportKind.report,
            Report.status == ReportStatus.signed,
            study_scope(session, user),
        )
        .order_by(Report.signed_at.desc(), Report.id.desc())
        .limit(1)
    )


def prior_report_item(report: Report) -> PriorReport:
    return PriorReport(
        id=report.id,
        study_instance_uid=report.study.study_instance_uid,
        study_date=report.study.study_date,
        modality=report.study.modalities,
        signed_at=report.signed_at,
        findings=report.findings,
        impression=report.impression,
        radiologist=report.signer_name or report.author.display_name or report.author.username,
    )


def get_chain(
    session: Session,
    caller: Caller,
    study_instance_uid: str,
    *,
    runtime: ReportsRuntime,
    batcher: audit.AccessBatcher,
    now: datetime | None = None,
) -> ReportChain:
    """The study's report chain for the caller; a read of signed text is audited (once per
    session and window)."""
    caller.require(Permission.report_read)
    user = caller.user
    now = _now(now)
    study = get_study_in_scope(session, principal=user, study_instance_uid=study_instance_uid)
    signed = _signed_chain(session, study)
    main = next((r for r in signed if r.kind == ReportKind.report), None)
    addenda = tuple(report_item(r) for r in signed if r.kind == ReportKind.addendum)
    prior = _prior_report(session, user, study)
    draft: Report | None = None
    if user.role == Role.radiologist:
        draft = _own_draft(session, study, user, ReportKind.addendum if main else ReportKind.report)
    chain = ReportChain(
        study_instance_uid=study.study_instance_uid,
        study_status=effective_status(study, now),
        clinical_question=clinical_question(session, study),
        suggested_template=templates.suggested_template(
            session, study.modalities, study.body_part_examined
        ),
        critical_categories=runtime.critical_categories,
        report=report_item(main) if main else None,
        addenda=addenda,
        draft=report_item(draft) if draft else None,
        can_write_report=main is None
        and caller.user.role == Role.radiologist
        and _holds_claim(study, user, now),
        can_write_addendum=main is not None
        and user.role == Role.radiologist
        and study.status in SIGNED_STATES,
        prior_report=prior_report_item(prior) if prior else None,
    )
    if prior is not None:
        # Reading the prior report is a read of that study's signed text: audited like one.
        audit.record_access_for(
            session,
            caller,
            batcher=batcher,
            action=REPORT_READ,
            study_uid=prior.study.study_instance_uid,
            object_type="study",
            detail={"as_prior_of": study.study_instance_uid},
        )
    if signed:
        audit.record_access_for(
            session,
            caller,
            batcher=batcher,
            action=REPORT_READ,
            study_uid=study.study_instance_uid,
            object_type="study",
        )
    if signed or prior is not None:
        session.commit()
    return chain


# --- drafts ----------------------------------------------------------------------------------


def _check_draft(session: Session, data: DraftInput, runtime: ReportsRuntime) -> None:
    if data.template and not templates.template_exists(session, data.template):
        raise InvalidReport("There is no report template with this code.")
    if data.critical:
        if data.critical_category not in runtime.critical_categories:
            raise InvalidReport("A critical result needs one of the configured categories.")
    elif data.critical_category:
        raise InvalidReport("A critical category is only given with a critical result.")
    if len(data.findings) > FINDINGS_MAX or len(data.impression) > IMPRESSION_MAX:
        raise InvalidReport("The findings or the impression are too long.")


def _key_image_instance(session: Session, study: Study, ref: KeyImageRef) -> Instance:
    """The stored instance *ref* names, if it is an image of *study*; else
    :class:`InvalidKeyImageReference`."""
    for uid in (ref.series_instance_uid, ref.sop_instance_uid):
        if not is_valid_uid(uid):
            raise InvalidKeyImageReference("The key image's UIDs must be valid DICOM UIDs.")
    row = session.execute(
        select(Instance, Series.modality)
        .join(Series, Instance.series_id == Series.id)
        .where(
            Series.study_id == study.id,
            Series.series_instance_uid == ref.series_instance_uid,
            Instance.sop_instance_uid == ref.sop_instance_uid,
        )
    ).first()
    if row is None:
        raise InvalidKeyImageReference("The key image is not an instance of this study.")
    instance, modality = row
    if modality in objects.NON_IMAGE:
        raise InvalidKeyImageReference("The key image must be an image, not a document.")
    if not 1 <= ref.frame <= min(instance.number_of_frames or 1, KEY_IMAGE_MAX_FRAME):
        raise InvalidKeyImageReference("The key image's frame is not a frame of the instance.")
    return instance


def _check_key_image(session: Session, study: Study, ref: KeyImageRef | None) -> None:
    if ref is None:
        return
    center, width = ref.window_center, ref.window_width
    if (center is None) != (width is None):
        raise InvalidKeyImageReference("Give both the window centre and width, or neither.")
    if center is not None and width is not None:
        if not all(math.isfinite(v) and abs(v) <= KEY_IMAGE_MAX_WINDOW for v in (center, width)):
            raise InvalidKeyImageReference("The key image's window is out of range.")
        if width <= 0:
            raise InvalidKeyImageReference("The key image's window width must be positive.")
    _key_image_instance(session, study, ref)


def _render_key_image(
    session: Session, store: ObjectStore, study: Study, ref: KeyImageRef
) -> bytes:
    """The key image's frame as PNG (windowed as marked, else the image's own VOI), at most
    :data:`KEY_IMAGE_MAX_PX` a side."""
    instance = _key_image_instance(session, study, ref)
    try:
        return render_frame(
            store.get(instance.object_key),
            ref.frame - 1,
            window_center=ref.window_center,
            window_width=ref.window_width,
            size=(KEY_IMAGE_MAX_PX, KEY_IMAGE_MAX_PX),
            fmt="png",
        )
    except (InvalidDicomError, ValueError) as exc:
        raise InvalidKeyImageReference(f"The key image cannot be rendered: {exc}") from exc


def _write(report: Report, data: DraftInput, now: datetime) -> None:
    report.template = data.template
    report.findings = data.findings
    report.impression = data.impression
    report.critical = data.critical
    report.critical_category = data.critical_category if data.critical else ""
    report.key_image = asdict(data.key_image) if data.key_image is not None else None
    report.updated_at = now


def save_draft(
    session: Session,
    caller: Caller,
    study_instance_uid: str,
    data: DraftInput,
    *,
    runtime: ReportsRuntime,
    now: datetime | None = None,
) -> ReportItem:
    """Create or update the caller's draft of the study's report (the claim holder only)."""
    caller.require(Permission.report_write)
    user = caller.user
    now = _now(now)
    study = get_study_in_scope(session, principal=user, study_instance_uid=study_instance_uid)
    if any(r.kind == ReportKind.report for r in _signed_chain(session, study)):
        raise ReportAlreadySigned(
            "This study's report is signed; write an addendum to correct or complete it."
        )
    _require_holder(study, user, now)
    _check_draft(session, data, runtime)
    _check_key_image(session, study, data.key_image)
    return _keep_draft(session, caller, study, ReportKind.report, data, now, predecessor=None)


def save_addendum(
    session: Session,
    caller: Caller,
    study_instance_uid: str,
    data: DraftInput,
    *,
    runtime: ReportsRuntime,
    now: datetime | None = None,
) -> ReportItem:
    """Create or update the caller's draft addendum to the study's latest signed document."""
    caller.require(Permission.report_write)
    user = caller.user
    now = _now(now)
    study = get_study_in_scope(session, principal=user, study_instance_uid=study_instance_uid)
    if user.role != Role.radiologist:
        raise Forbidden("Only radiologists write addenda.")
    signed = _signed_chain(session, study)
    if not signed or study.status not in SIGNED_STATES:
        raise ReportNotSigned("There is no signed report to amend yet.")
    _check_draft(session, data, runtime)
    _check_key_image(session, study, data.key_image)
    return _keep_draft(
        session, caller, study, ReportKind.addendum, data, now, predecessor=signed[-1]
    )


def _keep_draft(
    session: Session,
    caller: Caller,
    study: Study,
    kind: ReportKind,
    data: DraftInput,
    now: datetime,
    *,
    predecessor: Report | None,
) -> ReportItem:
    """Create the caller's draft of *kind* (event + audit record) or update the one they hold."""
    user = caller.user
    report = _own_draft(session, study, user, kind)
    amends = {} if predecessor is None else {"amends": predecessor.id}
    if report is None:
        report = Report(study_id=study.id, kind=kind, author_id=user.id)
        report.created_at = now
        session.add(report)
        created = True
    else:
        created = False
    if predecessor is not None:
        report.predecessor_id = predecessor.id
    _write(report, data, now)
    if created:
        session.flush()
        add_event(
            session,
            study,
            f"{kind.value}_drafted",
            at=now,
            actor=user,
            report_id=report.id,
            **amends,
        )
        audit.record_for(
            session,
            caller,
            REPORT_DRAFTED,
            object_type="report",
            object_id=str(report.id),
            study_uid=study.study_instance_uid,
            detail={"op": "created", "kind": kind.value, **amends},
        )
    session.commit()
    session.refresh(report)
    return report_item(report)


def update_draft(
    session: Session,
    caller: Caller,
    report_id: int,
    data: DraftInput,
    *,
    runtime: ReportsRuntime,
    now: datetime | None = None,
) -> ReportItem:
    """Update one of the caller's drafts by id (the report, while holding the claim, or an
    addendum)."""
    caller.require(Permission.report_write)
    user = caller.user
    now = _now(now)
    report = _report_in_scope(session, user, report_id)
    if report.author_id != user.id:
        raise NotReportAuthor("This draft belongs to another radiologist.")
    if report.status == ReportStatus.signed:
        raise ReportAlreadySigned("A signed report never changes; write an addendum.")
    if report.kind == ReportKind.report:
        _require_holder(report.study, user, now)
    _check_draft(session, data, runtime)
    _check_key_image(session, report.study, data.key_image)
    _write(report, data, now)
    session.commit()
    session.refresh(report)
    return report_item(report)


# --- signing ---------------------------------------------------------------------------------


def _display_name(pn: str) -> str:
    """A DICOM person name for print: the ideographic group if there is one, components
    joined (without spaces for CJK names)."""
    groups = pn.split("=")
    chosen = next((g for g in groups[1:] if g.strip("^ ")), groups[0])
    parts = [p for p in chosen.split("^") if p]
    if any("\u4e00" <= ch <= "\u9fff" for ch in chosen):
        return "".join(parts)
    return " ".join(parts)


def _da(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 else value


def _document(
    session: Session,
    report: Report,
    *,
    radiologist: User,
    signed_at: datetime,
    runtime: ReportsRuntime,
    predecessor: Report | None,
    key_image_png: bytes | None = None,
) -> ReportDocument:
    study = report.study
    patient = study.patient
    zone = ZoneInfo(runtime.settings.timezone)
    base = runtime.settings.public_url
    hint = "imaging-hub report verify <file>.pdf --trust ca.pem"
    if base:
        hint += f"  (ca.pem: {base.rstrip('/')}/api/v1/pki/ca.pem)"
    return ReportDocument(
        report_id=str(report.id),
        hub_name=radiologist.institution.name,
        clinic_name=study.clinic.name,
        patient_name=_display_name(patient.patient_name),
        patient_id=patient.patient_id,
        patient_sex=patient.patient_sex,
        patient_birth_date=_da(patient.patient_birth_date),
        modality=study.modalities,
        body_part=study.body_part_examined,
        exam_date=_da(study.study_date),
        accession_number=study.accession_number,
        clinical_question=clinical_question(session, study),
        findings=report.findings,
        impression=report.impression,
        radiologist_name=radiologist.display_name or radiologist.username,
        reported_at=report.created_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        signed_at=signed_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        critical=report.critical,
        critical_category=report.critical_category,
        verify_hint=hint,
        addendum_of=str(predecessor.id) if predecessor is not None else None,
        key_image_png=key_image_png,
    )


def _notify_clinic(session: Session, study: Study, report: Report, now: datetime) -> int:
    staff = list(
        session.scalars(
            select(User.id).where(
                User.institution_id == study.clinic_id,
                User.role == Role.clinic_staff,
                User.is_active.is_(True),
            )
        )
    )
    if staff:
        session.execute(
            insert(Notification),
            [
                {
                    "user_id": uid,
                    "kind": "critical_result",
                    "study_id": study.id,
                    "at": now,
                    "read_at": None,
                    "detail": {
                        "report_id": report.id,
                        "category": report.critical_category,
                        "study_instance_uid": study.study_instance_uid,
                    },
                }
                for uid in staff
            ],
        )
    return len(staff)


def sign(
    session: Session,
    caller: Caller,
    report_id: int,
    *,
    password: str,
    runtime: ReportsRuntime,
    store: ObjectStore,
    now: datetime | None = None,
) -> ReportItem:
    """Sign the caller's draft: PDF (PAdES B-LT, timestamped), stored under the study's
    reports; the Encapsulated PDF and the TID 2000 SR stored into the study; the study signed
    (for the report) and the clinic notified of a critical result. Runs pyHanko (which uses
    ``asyncio.run``): call it from a worker thread, never from the event loop."""
    caller.require(Permission.report_sign)
    user = caller.user
    report = _report_in_scope(session, user, report_id)
    if report.author_id != user.id:
        raise NotReportAuthor("This draft belongs to another radiologist; it is theirs to sign.")
    if report.status == ReportStatus.signed:
        raise ReportAlreadySigned("This report is signed already; a signed report never changes.")
    study = report.study
    signed = _signed_chain(session, study)
    predecessor: Report | None = None
    check_at = _now(now)
    if report.kind == ReportKind.report:
        if any(r.kind == ReportKind.report for r in signed):
            raise ReportAlreadySigned("This study's report is signed; write an addendum.")
        _require_holder(study, user, check_at)
    else:
        if not signed or study.status not in SIGNED_STATES:
            raise ReportNotSigned("There is no signed report to amend.")
        predecessor = signed[-1]
    if not report.impression.strip():
        raise EmptyImpression("A report is signed only with an impression.")
    # Rendered before the key is unlocked: an image that cannot be printed signs nothing.
    key_image = _key_image_of(report)
    key_image_png = (
        _render_key_image(session, store, study, key_image) if key_image is not None else None
    )

    throttle_key = f"sign:{user.id}"
    runtime.sign_throttle.check(throttle_key)
    ca = runtime.ca(session)
    try:
        signer = credentials.signer_for(session, caller, ca, password=password)
    except InvalidSigningPassword:
        session.rollback()
        runtime.sign_throttle.failed(throttle_key)
        audit.record_for(
            session,
            caller,
            REPORT_SIGN_FAILED,
            object_type="report",
            object_id=str(report_id),
            study_uid=study.study_instance_uid,
            detail={"reason": "signing_password_wrong"},
        )
        session.commit()
        raise

    signed_at = _now(now)
    document = _document(
        session,
        report,
        radiologist=user,
        signed_at=signed_at,
        runtime=runtime,
        predecessor=predecessor,
        key_image_png=key_image_png,
    )
    result = sign_pdf(
        render_report_pdf(document),
        signer,
        timestamper=runtime.timestamper(ca),
        reason="Addendum signed" if predecessor else "Radiology report signed",
        location=ca.institution,
    )
    source = objects.source_dataset(session, store, study)
    attributes = patient_study_attributes(source)
    title = f"Addendum to report {predecessor.id}" if predecessor else "Radiology report"
    encapsulated = build_encapsulated_pdf(
        result.pdf,
        attributes,
        document_title=title,
        institution_name=study.clinic.name[:64],
        content_datetime=signed_at,
    )
    previous = []
    if predecessor is not None and predecessor.sr_sop_instance_uid:
        key = objects.object_key_of(session, predecessor.sr_sop_instance_uid)
        if key:
            previous.append(objects.read_dataset(store, key))
    sr = build_report_sr(
        source,
        findings=report.findings,
        impression=report.impression,
        radiologist_name=user.display_name or user.username,
        radiologist_login=user.username,
        organization=user.institution.name[:64],
        predecessors=previous,
        content_datetime=signed_at,
    )
    clinic_code = study.clinic.code
    pdf_key = report_key(
        clinic_code, study.study_instance_uid, f"report-{report.id}-{result.sha256[:16]}.pdf"
    )
    store.put(pdf_key, result.pdf)
    stored = objects.store_objects(
        session, store=store, study=study, clinic_code=clinic_code, objects=[encapsulated, sr]
    )
    changed = session.execute(
        update(Report)
        .where(Report.id == report.id, Report.status == ReportStatus.draft)
        .values(
            status=ReportStatus.signed,
            signed_at=signed_at,
            updated_at=signed_at,
            object_key=pdf_key,
            sha256=result.sha256,
            signer_name=result.signer_name,
            signer_certificate_serial=str(result.certificate_serial),
            pdf_sop_instance_uid=stored[0].sop_instance_uid,
            sr_sop_instance_uid=stored[1].sop_instance_uid,
            predecessor_id=predecessor.id if predecessor else None,
        )
        .execution_options(synchronize_session=False)
    )
    if getattr(changed, "rowcount", 0) != 1:
        session.rollback()
        raise ReportAlreadySigned("This report was signed meanwhile.")
    notified = _notify_clinic(session, study, report, signed_at) if report.critical else 0
    detail: dict[str, object] = {
        "report_id": report.id,
        "report_kind": report.kind.value,
        "sha256": result.sha256,
        "critical": report.critical,
    }
    if key_image is not None:
        detail["key_image"] = key_image.sop_instance_uid
    if predecessor is not None:
        add_event(session, study, "addendum_signed", at=signed_at, actor=user, **detail)
    if report.critical:
        add_event(
            session,
            study,
            "critical_notified",
            at=signed_at,
            report_id=report.id,
            category=report.critical_category,
            notified=notified,
        )
    audit.record_for(
        session,
        caller,
        REPORT_SIGNED,
        object_type="report",
        object_id=str(report.id),
        study_uid=study.study_instance_uid,
        detail={**detail, "certificate_serial": str(result.certificate_serial)},
    )
    if predecessor is None:
        # Marks the study signed (its holder, lease still valid) and commits everything.
        record_signed(
            session=session,
            radiologist=user,
            study_instance_uid=study.study_instance_uid,
            now=signed_at,
        )
    else:
        session.commit()
    session.expire_all()
    fresh = session.get(Report, report.id)
    assert fresh is not None
    log.info("report %s signed (%s)", report.id, result.sha256[:12])
    return report_item(fresh)


# --- the signed PDF --------------------------------------------------------------------------


def get_pdf(session: Session, caller: Caller, report_id: int, *, store: ObjectStore) -> ReportPdf:
    """The signed PDF, byte for byte; every download is audited."""
    caller.require(Permission.report_read)
    report = _report_in_scope(session, caller.user, report_id)
    if report.status != ReportStatus.signed or not report.object_key:
        raise NotFound("This report is not signed: there is no PDF yet.")
    data = store.get(report.object_key)
    audit.record_for(
        session,
        caller,
        REPORT_DOWNLOADED,
        object_type="report",
        object_id=str(report.id),
        study_uid=report.study.study_instance_uid,
        detail={"sha256": report.sha256},
    )
    session.commit()
    return ReportPdf(
        report_id=report.id, filename=f"report-{report.id}.pdf", sha256=report.sha256, data=data
    )


# --- critical results ------------------------------------------------------------------------


def acknowledge(
    session: Session,
    caller: Caller,
    report_id: int,
    *,
    method: AckMethod,
    read_back: str,
    now: datetime | None = None,
) -> ReportItem:
    """A clinic user records receipt of a critical result in the portal: who, when, how, and
    the read-back (what they repeated back). The study becomes ``acknowledged``; audited;
    commits."""
    caller.require(Permission.report_acknowledge)
    user = caller.user
    now = _now(now)
    report = _report_in_scope(session, user, report_id)
    study = report.study
    if user.institution_id != study.clinic_id:
        raise Forbidden("Only the clinic that sent the study acknowledges its critical result.")
    if not report.critical:
        raise ReportNotCritical("This report is not a critical result.")
    if report.acknowledged_at is not None:
        raise AlreadyAcknowledged("This critical result was acknowledged already.")
    if not record_acknowledgement(
        session, caller, report, user=user, method=method, read_back=read_back, at=now, via="portal"
    ):
        raise AlreadyAcknowledged("This critical result was acknowledged meanwhile.")
    session.expire_all()
    fresh = session.get(Report, report.id)
    assert fresh is not None
    return report_item(fresh)


def record_acknowledgement(
    session: Session,
    caller: Caller,
    report: Report,
    *,
    user: User,
    method: str,
    read_back: str,
    at: datetime,
    via: Literal["portal", "gateway"],
) -> bool:
    """Record that clinic user *user* acknowledged the critical result *report* at *at*
    (``via``: the portal, or the gateway's LAN page). The first acknowledgement wins (one
    conditional update): False, with nothing changed and the transaction rolled back, when the
    report was acknowledged already. The study moves ``signed``/``delivered`` →
    ``acknowledged`` (never backwards), the clinic's critical-result notifications are read,
    the timeline and the audit trail (as *caller*) get their record; commits.

    The callers check permission, scope and that the report is critical."""
    study = report.study
    changed = session.execute(
        update(Report)
        .where(Report.id == report.id, Report.acknowledged_at.is_(None))
        .values(
            acknowledged_at=at,
            acknowledged_by_id=user.id,
            acknowledgement_method=method,
            acknowledgement_read_back=read_back,
            acknowledged_via=via,
        )
        .execution_options(synchronize_session=False)
    )
    if getattr(changed, "rowcount", 0) != 1:
        session.rollback()
        return False
    now = datetime.now(UTC)
    session.execute(
        update(Study)
        .where(Study.id == study.id, Study.status.in_([StudyStatus.signed, StudyStatus.delivered]))
        .values(status=StudyStatus.acknowledged, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Notification)
        .where(
            Notification.study_id == study.id,
            Notification.kind == "critical_result",
            Notification.read_at.is_(None),
        )
        .values(read_at=now)
        .execution_options(synchronize_session=False)
    )
    add_event(
        session,
        study,
        "critical_acknowledged",
        at=at,
        actor=user,
        report_id=report.id,
        method=method,
        via=via,
    )
    detail: dict[str, object] = {"method": method, "via": via}
    if caller.actor is not user:
        detail["acknowledged_by"] = user.username
    audit.record_for(
        session,
        caller,
        REPORT_ACKNOWLEDGED,
        object_type="report",
        object_id=str(report.id),
        study_uid=study.study_instance_uid,
        detail=detail,
    )
    session.commit()
    return True


def notify_unacknowledged_critical(
    *, session: Session, timeout: timedelta, now: datetime | None = None
) -> list[int]:
    """Critical results still unacknowledged *timeout* after signing: notify the signer and
    every active admin, once per report; the report ids."""
    now = _now(now)
    rows = session.execute(
        select(Report.id, Report.study_id, Report.author_id, Report.critical_category).where(
            Report.critical.is_(True),
            Report.status == ReportStatus.signed,
            Report.acknowledged_at.is_(None),
            Report.critical_overdue_at.is_(None),
            Report.signed_at < now - timeout,
        )
    ).all()
    if not rows:
        session.rollback()
        return []
    admins = list(
        session.scalars(select(User.id).where(User.role == Role.admin, User.is_active.is_(True)))
    )
    done: list[int] = []
    for report_id, study_id, author_id, category in rows:
        changed = session.execute(
            update(Report)
            .where(Report.id == report_id, Report.critical_overdue_at.is_(None))
            .values(critical_overdue_at=now)
            .execution_options(synchronize_session=False)
        )
        if getattr(changed, "rowcount", 0) != 1:
            continue  # another worker got there first
        users = sorted({author_id, *admins})
        session.execute(
            insert(Notification),
            [
                {
                    "user_id": uid,
                    "kind": "critical_unacknowledged",
                    "study_id": study_id,
                    "at": now,
                    "read_at": None,
                    "detail": {"report_id": report_id, "category": category},
                }
                for uid in users
            ],
        )
        add_event(
            session,
            study_id,
            "critical_unacknowledged",
            at=now,
            report_id=report_id,
            notified=len(users),
        )
        done.append(report_id)
    session.commit()
    if done:
        log.warning("%d critical results unacknowledged; signers and admins notified", len(done))
    return done


def sweep(*, sessions: sessionmaker[Session], timeout: timedelta) -> None:
    """The reports' part of the periodic background work."""
    with sessions() as session:
        notify_unacknowledged_critical(session=session, timeout=timeout)
