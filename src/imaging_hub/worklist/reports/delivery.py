"""Signed reports back to the clinic: what a clinic's gateway pulls, confirms and syncs.

The hub side of docs/clinic-return.md ("Hub API for gateways"). Every function takes the
:class:`Caller` (a clinic gateway holding ``gateway.reports``; users, even administrators, are
refused) and is limited to the gateway's own clinic: another clinic's report answers 404, like
an unknown id. Routers (``delivery_routes.py``) only translate.

- :func:`pending_reports` / :func:`wait_for_reports`: the clinic's signed reports and addenda
  no gateway has confirmed yet, oldest first, at most :data:`BATCH`. The long-poll checks the
  database every :data:`POLL_INTERVAL` seconds with a short session of its own (several hub
  workers may run: the database is the only place a signature is seen by all of them) and
  holds neither a connection nor a worker thread between checks; while nothing is signed a
  check is one read of the audit trail's head.
- :func:`get_pdf`, :func:`get_dicom`: the signed PDF byte for byte, and the Encapsulated PDF
  instance stored into the study at signing (DICOM Part 10); every download is audited.
- :func:`confirm_received`: exactly once per report — one conditional
  ``UPDATE ... WHERE delivered_at IS NULL`` (two concurrent confirmations cannot both win, on
  PostgreSQL and on SQLite); the winner audits ``report.delivered`` and moves a ``signed`` study
  to ``delivered`` (a report; an addendum leaves the study as it is). Later calls answer the
  same time and change nothing. A wrong SHA-256 is a 409 ``checksum_mismatch``.
- :func:`acknowledge`: a critical result acknowledged on the gateway's LAN page by an active
  clinic user of that clinic, recorded by the portal's own
  :func:`~imaging_hub.worklist.reports.service.record_acknowledgement`; the first wins.
- :func:`acknowledgements`: of the reports a gateway names (the critical results it holds
  open), those acknowledged at the hub — when, by whom (display name), where — so its LAN page
  stops showing them open; only its clinic's, at most :data:`MAX_ACK_IDS` per call.
- :func:`staff_credentials`: the clinic's active staff with their argon2 hashes, for the LAN
  page's offline sign-in; audited whenever hashes are sent.
"""

import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from imaging_hub.errors import Conflict, Forbidden, ImagingHubError, InvalidRequest, NotFound
from imaging_hub.storage import ObjectStore
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import Permission, study_scope
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import (
    AuditEvent,
    AuditHead,
    Gateway,
    Instance,
    Institution,
    Patient,
    Report,
    ReportKind,
    ReportStatus,
    Role,
    Series,
    Study,
    StudyEvent,
    StudyStatus,
    User,
)
from imaging_hub.worklist.reports import service
from imaging_hub.worklist.reports.service import AckMethod, ReportNotCritical, ReportPdf

# Audit actions.
REPORT_DELIVERED = audit.REPORT_DELIVERED
STAFF_FETCHED = "gateway.staff_fetched"

#: At most this many reports per answer (the gateway asks again at once for the rest).
BATCH = 50
#: The longest long-poll a gateway may ask for, in seconds.
MAX_WAIT = 30.0
#: How often a waiting long-poll looks at the database, in seconds.
POLL_INTERVAL = 0.5
#: A waiting long-poll runs the feed's query again at least this often, in seconds (between
#: those, only when a report was signed: see :func:`wait_for_reports`).
FULL_CHECK_SECONDS = 10.0
#: More new audit events than this in one poll interval: look at the feed without reading them.
MAX_EVENTS_PER_PROBE = 500
#: At most this many report ids per acknowledgement sync (the gateway asks in batches).
MAX_ACK_IDS = 100
#: Report ids are 32-bit at the hub; a larger one names nothing.
MAX_REPORT_ID = 2**31 - 1
#: How far a gateway's clock may be off: an acknowledgement time beyond this in the future, or
#: this long before the signature, is refused; within it, it is brought into [signed, now].
CLOCK_SKEW = timedelta(minutes=5)


class InvalidGatewayAcknowledgement(ImagingHubError):
    """An acknowledgement from a gateway the hub cannot record (HTTP 422): the user is not an
    active clinic user of the gateway's clinic (``report_ack_user_invalid``), or its time is
    impossible (``report_ack_time_invalid``)."""

    code = "report_ack_user_invalid"


# --- what the API answers --------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryItem:
    """One signed report or addendum waiting for the clinic's gateway (docs/clinic-return.md)."""

    id: int
    kind: ReportKind
    predecessor_id: int | None
    study_instance_uid: str
    accession_number: str
    patient_id: str
    patient_name: str
    patient_sex: str
    patient_birth_date: str
    study_date: str
    study_description: str
    modalities: str
    signed_at: datetime | None
    signer_name: str
    #: SHA-256 of the signed PDF (what ``/pdf`` returns and ``/received`` confirms).
    sha256: str
    critical: bool
    critical_category: str
    acknowledged_at: datetime | None
    pdf_sop_instance_uid: str


@dataclass(frozen=True)
class Delivery:
    report_id: int
    delivered_at: datetime
    #: Whether this call confirmed it (False: an earlier confirmation, nothing changed).
    first: bool


@dataclass(frozen=True)
class ReportDicom:
    report_id: int
    sop_instance_uid: str
    filename: str
    data: bytes


@dataclass(frozen=True)
class GatewayAcknowledgement:
    report_id: int
    acknowledged_at: datetime
    acknowledged_by: str
    acknowledged_via: str
    acknowledgement_method: str
    #: Whether this call recorded it (False: acknowledged before, nothing changed).
    recorded: bool


@dataclass(frozen=True)
class HubAcknowledgement:
    """A critical result acknowledged at the hub (portal, or a gateway's LAN page), for the
    clinic's gateway to show it acknowledged."""

    report_id: int
    #: SHA-256 of the signed PDF: the gateway applies it only to the very report it holds
    #: (after a hub restore an id may name another report).
    sha256: str
    acknowledged_at: datetime
    #: The clinic user's display name (never a patient's).
    acknowledged_by: str
    #: ``portal`` or ``gateway``.
    acknowledged_via: str
    acknowledgement_method: str


@dataclass(frozen=True)
class StaffAccount:
    username: str
    display_name: str
    password_hash: str


@dataclass(frozen=True)
class StaffList:
    staff: tuple[StaffAccount, ...]
    #: A strong validator of the list (``ETag``): unchanged accounts, unchanged tag.
    etag: str
    #: The gateway holds this list already (its If-None-Match): nothing sent, nothing audited.
    unchanged: bool = False
    #: The clinic's name as the hub's pages show it (the gateway's LAN page shows it too).
    clinic_name: str = ""


# --- who is asking ---------------------------------------------------------------------------


def _gateway_of(caller: Caller) -> Gateway:
    """The calling gateway; Forbidden (403) for users (even administrators) and the console."""
    caller.require(Permission.gateway_reports)
    principal = caller.principal
    if not isinstance(principal, Gateway):  # only gateways hold gateway.* permissions
        raise Forbidden("Only a clinic gateway may do this (gateway.reports).")
    return principal


def _report_of_clinic(session: Session, gateway: Gateway, report_id: int) -> Report:
    """A signed report or addendum of the gateway's clinic; NotFound otherwise (another clinic's
    report, a draft and an unknown id answer alike)."""
    report = session.scalar(
        select(Report)
        .join(Study, Report.study_id == Study.id)
        .where(
            Report.id == report_id,
            Report.status == ReportStatus.signed,
            study_scope(session, gateway),
        )
    )
    if report is None:
        raise NotFound("No signed report with this id belongs to this gateway's clinic.")
    return report


# --- the feed ----------------------------------------------------------------------------------


def _item(report: Report, study: Study, patient: Patient) -> DeliveryItem:
    return DeliveryItem(
        id=report.id,
        kind=report.kind,
        predecessor_id=report.predecessor_id,
        study_instance_uid=study.study_instance_uid,
        accession_number=study.accession_number,
        patient_id=patient.patient_id,
        patient_name=patient.patient_name,
        patient_sex=patient.patient_sex,
        patient_birth_date=patient.patient_birth_date,
        study_date=study.study_date,
        study_description=study.study_description,
        modalities=study.modalities,
        signed_at=report.signed_at,
        signer_name=report.signer_name,
        sha256=report.sha256,
        critical=report.critical,
        critical_category=report.critical_category,
        acknowledged_at=report.acknowledged_at,
        pdf_sop_instance_uid=report.pdf_sop_instance_uid,
    )


def pending_reports(
    session: Session, caller: Caller, *, batcher: audit.AccessBatcher, limit: int = BATCH
) -> list[DeliveryItem]:
    """The clinic's signed reports and addenda no gateway confirmed yet, oldest signature
    first, at most *limit*. A non-empty list is a read of patient data: audited once per
    gateway and window (like the worklist)."""
    gateway = _gateway_of(caller)
    rows = session.execute(
        select(Report, Study, Patient)
        .join(Study, Report.study_id == Study.id)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(
            study_scope(session, gateway),
            Report.status == ReportStatus.signed,
            Report.delivered_at.is_(None),
        )
        .order_by(Report.signed_at, Report.id)
        .limit(max(1, min(limit, BATCH)))
    ).all()
    items = [_item(report, study, patient) for report, study, patient in rows]
    if items:
        event = audit.record_access_for(
            session,
            caller,
            batcher=batcher,
            action=audit.STUDY_LISTED,
            study_uid="",
            object_type="gateway_reports",
        )
        if event is not None:
            session.commit()
    return items


def _trail_mark(session: Session) -> int:
    """The id of the newest audit event (0 before the first)."""
    return int(session.scalar(select(AuditHead.last_id).where(AuditHead.id == 1)) or 0)


def _signed_between(session: Session, after: int, upto: int) -> bool:
    """Whether a report or addendum was signed (anywhere) by audit events ``after < id ≤
    upto``: a range of the primary key, the events of one poll interval."""
    if upto <= after:
        return False
    if upto - after > MAX_EVENTS_PER_PROBE:
        return True  # a busy moment: just look
    actions = session.scalars(
        select(AuditEvent.action).where(AuditEvent.id > after, AuditEvent.id <= upto)
    )
    return any(action == audit.REPORT_SIGNED for action in actions)


def _check(
    sessions: sessionmaker[Session],
    caller: Caller,
    batcher: audit.AccessBatcher,
    mark: int | None,
) -> tuple[list[DeliveryItem], int]:
    """One check of the long-poll, with a session of its own: the pending reports (or none
    when, since the audit trail's *mark*, nothing was signed) and the new mark."""
    with sessions() as session:
        # Read before the feed: a signature committed after this is above the new mark.
        now_mark = _trail_mark(session)
        if mark is not None and not _signed_between(session, mark, now_mark):
            return [], now_mark
        return pending_reports(session, caller, batcher=batcher), now_mark


async def wait_for_reports(
    sessions: sessionmaker[Session],
    caller: Caller,
    *,
    wait: float,
    batcher: audit.AccessBatcher,
    gone: Callable[[], Awaitable[bool]] | None = None,
    interval: float = POLL_INTERVAL,
) -> list[DeliveryItem]:
    """The long-poll: :func:`pending_reports` as soon as there is one, else an empty list after
    *wait* seconds (0 ≤ wait ≤ :data:`MAX_WAIT`).

    Each check runs in a worker thread with a session of its own, closed at once; between
    checks nothing is held (an ``anyio.sleep`` on the event loop). *gone* (the client went
    away) is asked between checks, so a dropped connection stops the waiting within one
    interval.

    Only a signature adds to the feed, and every signature writes its ``report.signed`` audit
    event in the transaction that signs (the trail's ids are gap-free and committed in order).
    So after the first look, a check reads the trail's head (one row) and runs the feed's
    query again only when a ``report.signed`` event lies between the last mark and the head —
    or :data:`FULL_CHECK_SECONDS` after the last full look, as a safety net. A waiting gateway
    costs the database one primary-key read per interval, whatever the clinic's history.
    """
    _gateway_of(caller)
    wait = min(max(0.0, wait), MAX_WAIT)
    deadline = time.monotonic() + wait
    mark: int | None = None
    full_at = time.monotonic()
    while True:
        if time.monotonic() - full_at >= FULL_CHECK_SECONDS:
            mark = None
        if mark is None:
            full_at = time.monotonic()
        items, mark = await anyio.to_thread.run_sync(_check, sessions, caller, batcher, mark)
        left = deadline - time.monotonic()
        if items or left <= 0:
            return items
        if gone is not None and await gone():
            return []
        await anyio.sleep(min(interval, left))


# --- the documents -------------------------------------------------------------------------------


def get_pdf(session: Session, caller: Caller, report_id: int, *, store: ObjectStore) -> ReportPdf:
    """The signed PDF of a report of the gateway's clinic, byte for byte; audited."""
    gateway = _gateway_of(caller)
    report = _report_of_clinic(session, gateway, report_id)
    if not report.object_key:
        raise NotFound("This report has no stored PDF.")
    data = store.get(report.object_key)
    audit.record_for(
        session,
        caller,
        audit.REPORT_DOWNLOADED,
        object_type="report",
        object_id=str(report.id),
        study_uid=report.study.study_instance_uid,
        detail={"sha256": report.sha256, "format": "pdf"},
    )
    session.commit()
    return ReportPdf(
        report_id=report.id, filename=f"report-{report.id}.pdf", sha256=report.sha256, data=data
    )


def get_dicom(
    session: Session, caller: Caller, report_id: int, *, store: ObjectStore
) -> ReportDicom:
    """The Encapsulated PDF instance stored into the study when the report was signed (DICOM
    Part 10, as stored), for the gateway to C-STORE to a clinic node; audited."""
    gateway = _gateway_of(caller)
    report = _report_of_clinic(session, gateway, report_id)
    uid = report.pdf_sop_instance_uid
    key = (
        session.scalar(
            select(Instance.object_key)
            .join(Series, Instance.series_id == Series.id)
            .where(Instance.sop_instance_uid == uid, Series.study_id == report.study_id)
        )
        if uid
        else None
    )
    if key is None:
        raise NotFound("This report has no Encapsulated PDF instance in its study.")
    data = store.get(key)
    audit.record_for(
        session,
        caller,
        audit.REPORT_DOWNLOADED,
        object_type="report",
        object_id=str(report.id),
        study_uid=report.study.study_instance_uid,
        detail={"sha256": report.sha256, "format": "dicom", "sop_instance_uid": uid},
    )
    session.commit()
    return ReportDicom(
        report_id=report.id, sop_instance_uid=uid, filename=f"report-{report.id}.dcm", data=data
    )


# --- receipt -------------------------------------------------------------------------------------


def confirm_received(
    session: Session, caller: Caller, report_id: int, *, sha256: str, now: datetime | None = None
) -> Delivery:
    """The gateway holds the signed PDF (its SHA-256 as it computed it): ``delivered``.

    Exactly once: the first confirmation sets ``delivered_at`` and ``delivered_gateway_id``,
    audits ``report.delivered``, adds ``delivered`` to the study's timeline and, for a report
    (not an addendum), moves a ``signed`` study to ``delivered`` — never backwards: a critical
    result acknowledged before delivery stays ``acknowledged``. Later confirmations answer the
    first time and change nothing. A SHA-256 other than the signed PDF's → 409
    ``checksum_mismatch``, nothing changed. Commits.
    """
    gateway = _gateway_of(caller)
    report = _report_of_clinic(session, gateway, report_id)
    if sha256.strip().lower() != report.sha256:
        raise Conflict(
            "The SHA-256 sent is not the signed PDF's: fetch the PDF again.",
            code="checksum_mismatch",
        )
    if report.delivered_at is not None:
        return Delivery(report.id, report.delivered_at, first=False)
    now = now or datetime.now(UTC)
    study = report.study
    changed = session.execute(
        update(Report)
        .where(Report.id == report.id, Report.delivered_at.is_(None))
        .values(delivered_at=now, delivered_gateway_id=gateway.id)
        .execution_options(synchronize_session=False)
    )
    if getattr(changed, "rowcount", 0) != 1:
        # Another confirmation won meanwhile (its transaction committed before ours wrote).
        session.rollback()
        won = session.scalar(select(Report.delivered_at).where(Report.id == report.id))
        assert won is not None
        return Delivery(report.id, won, first=False)
    if report.kind == ReportKind.report:
        session.execute(
            update(Study)
            .where(Study.id == study.id, Study.status == StudyStatus.signed)
            .values(status=StudyStatus.delivered, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(Study)
            .where(Study.id == study.id, Study.delivered_at.is_(None))
            .values(delivered_at=now)
            .execution_options(synchronize_session=False)
        )
    session.add(
        StudyEvent(
            study_id=study.id,
            kind="delivered",
            gateway_id=gateway.id,
            at=now,
            detail={"report_id": report.id, "report_kind": report.kind.value},
        )
    )
    audit.record_for(
        session,
        caller,
        REPORT_DELIVERED,
        object_type="report",
        object_id=str(report.id),
        study_uid=study.study_instance_uid,
        detail={"sha256": report.sha256, "report_kind": report.kind.value},
    )
    session.commit()
    return Delivery(report.id, now, first=True)


# --- critical results acknowledged on the LAN page ---------------------------------------------


def _acknowledgement(report: Report, *, recorded: bool) -> GatewayAcknowledgement:
    assert report.acknowledged_at is not None
    by = report.acknowledged_by
    return GatewayAcknowledgement(
        report_id=report.id,
        acknowledged_at=report.acknowledged_at,
        acknowledged_by=by.username if by is not None else "",
        acknowledged_via=report.acknowledged_via,
        acknowledgement_method=report.acknowledgement_method,
        recorded=recorded,
    )


def _clinic_user(session: Session, gateway: Gateway, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if (
        user is None
        or not user.is_active
        or user.role != Role.clinic_staff
        or user.institution_id != gateway.institution_id
    ):
        # One answer for unknown, disabled, other roles and other clinics: no probing.
        raise InvalidGatewayAcknowledgement(
            "This user is not an active clinic user of this gateway's clinic."
        )
    return user


def acknowledge(
    session: Session,
    caller: Caller,
    report_id: int,
    *,
    username: str,
    method: AckMethod,
    read_back: str,
    acknowledged_at: datetime,
    sha256: str | None = None,
    now: datetime | None = None,
) -> GatewayAcknowledgement:
    """A critical result acknowledged on the gateway's LAN page by clinic user *username* at
    *acknowledged_at* (the gateway's clock), synced to the hub.

    The report must be a critical result (409 ``report_not_critical``, as in the portal). The
    first acknowledgement wins (portal or gateway): a repeat answers the recorded one and
    changes nothing. Otherwise the user must be an active clinic user of the gateway's clinic
    (422 ``report_ack_user_invalid``) and the time not more than :data:`CLOCK_SKEW` in the
    future or before the signature (422 ``report_ack_time_invalid``); it is recorded like a
    portal acknowledgement (``acknowledged_via`` = ``gateway``; the study becomes
    ``acknowledged``); commits.

    *sha256* (the PDF the clinic user saw): when given and not the signed PDF's, 409
    ``checksum_mismatch`` and nothing changed — after a hub restore the id may name another
    report, which must not be acknowledged in its place.
    """
    gateway = _gateway_of(caller)
    report = _report_of_clinic(session, gateway, report_id)
    if sha256 is not None and sha256.strip().lower() != report.sha256:
        raise Conflict(
            "This id names another report at the hub (another SHA-256): not acknowledged.",
            code="checksum_mismatch",
        )
    if not report.critical:
        raise ReportNotCritical("This report is not a critical result.")
    if report.acknowledged_at is not None:
        return _acknowledgement(report, recorded=False)
    user = _clinic_user(session, gateway, username)
    now = now or datetime.now(UTC)
    at = acknowledged_at.astimezone(UTC)
    signed_at = report.signed_at or now
    if at > now + CLOCK_SKEW or at < signed_at - CLOCK_SKEW:
        raise InvalidGatewayAcknowledgement(
            "The acknowledgement time is in the future or before the report was signed.",
            code="report_ack_time_invalid",
        )
    at = min(max(at, signed_at), now)
    recorded = service.record_acknowledgement(
        session,
        caller,
        report,
        user=user,
        method=method,
        read_back=read_back,
        at=at,
        via="gateway",
    )
    session.expire_all()
    fresh = session.get(Report, report.id)
    assert fresh is not None
    return _acknowledgement(fresh, recorded=recorded)


def acknowledgements(
    session: Session, caller: Caller, report_ids: Sequence[int]
) -> list[HubAcknowledgement]:
    """Of *report_ids* (the critical results a gateway holds and shows open), those of the
    gateway's clinic acknowledged at the hub, by id. Unknown ids, other clinics' reports,
    drafts and unacknowledged reports are simply not in the answer (no probing). At most
    :data:`MAX_ACK_IDS` ids (more: 400 ``invalid_request``). One indexed query by primary key,
    nothing written: acknowledgement facts hold no patient data, so nothing is audited."""
    gateway = _gateway_of(caller)
    if len(report_ids) > MAX_ACK_IDS:
        raise InvalidRequest(f"At most {MAX_ACK_IDS} report ids per request.")
    wanted = sorted({i for i in report_ids if 0 < i <= MAX_REPORT_ID})
    if not wanted:
        return []
    rows = session.execute(
        select(Report, User.display_name)
        .join(Study, Report.study_id == Study.id)
        .outerjoin(User, Report.acknowledged_by_id == User.id)
        .where(
            Report.id.in_(wanted),
            Report.status == ReportStatus.signed,
            Report.acknowledged_at.is_not(None),
            study_scope(session, gateway),
        )
        .order_by(Report.id)
    ).all()
    found = [
        HubAcknowledgement(
            report_id=report.id,
            sha256=report.sha256,
            acknowledged_at=report.acknowledged_at,
            acknowledged_by=display_name or "",
            acknowledged_via=report.acknowledged_via or "portal",
            acknowledgement_method=report.acknowledgement_method,
        )
        for report, display_name in rows
        if report.acknowledged_at is not None
    ]
    session.rollback()
    return found


# --- staff credentials for the LAN page ------------------------------------------------------


def _staff_etag(clinic_name: str, staff: tuple[StaffAccount, ...]) -> str:
    canonical = json.dumps(
        [clinic_name, [[s.username, s.display_name, s.password_hash] for s in staff]],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def staff_credentials(
    session: Session, caller: Caller, *, if_none_match: str | None = None
) -> StaffList:
    """The active clinic users of the gateway's clinic (never other clinics', never hub staff)
    with their argon2 hashes as stored, for the LAN page's offline sign-in, and the clinic's
    name (the page's header). ``unchanged`` (no accounts) when the gateway holds this list
    already (*if_none_match* is its ETag): nothing sent, nothing audited. Sending hashes is
    audited (``gateway.staff_fetched``); commits."""
    gateway = _gateway_of(caller)
    clinic = session.get(Institution, gateway.institution_id)
    clinic_name = clinic.name if clinic is not None else ""
    users = session.scalars(
        select(User)
        .where(
            User.institution_id == gateway.institution_id,
            User.role == Role.clinic_staff,
            User.is_active.is_(True),
        )
        .order_by(User.username)
    )
    staff = tuple(
        StaffAccount(
            username=u.username, display_name=u.display_name, password_hash=u.password_hash
        )
        for u in users
    )
    etag = _staff_etag(clinic_name, staff)
    if if_none_match is not None and etag in _etags(if_none_match):
        session.rollback()
        return StaffList(staff=(), etag=etag, unchanged=True, clinic_name=clinic_name)
    audit.record_for(
        session,
        caller,
        STAFF_FETCHED,
        object_type="gateway",
        object_id=str(gateway.id),
        detail={"accounts": len(staff), "usernames": [s.username for s in staff][:200]},
    )
    session.commit()
    return StaffList(staff=staff, etag=etag, clinic_name=clinic_name)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/").strip('"') for tag in header.split(",")}
