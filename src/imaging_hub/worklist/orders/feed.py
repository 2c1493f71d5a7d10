"""What the clinic gateways ask about orders: the order feed and the MPPS intake.

The feed (:func:`order_feed`) is a full snapshot of the gateway's clinic's orders a modality may
still need: scheduled or in progress, and those completed in the last 24 hours (so the gateway
learns "exam done"), scheduled from 7 days ago to 7 days ahead, at most 2,000. Its ETag is a hash
of the snapshot, so an unchanged snapshot answers 304 to ``If-None-Match``.

The MPPS intake (:func:`record_mpps`) moves the matching order (by StudyInstanceUID, else
accession number, in the gateway's clinic) along the modality's performed procedure step:
IN PROGRESS → ``in_progress``, COMPLETED → ``completed``, DISCONTINUED → ``discontinued`` with the
modality's reason. It is idempotent: a repeated or late message of a step changes nothing, a
step's final state (COMPLETED, DISCONTINUED) is never undone by that step, a completed or
cancelled order never moves. An MPPS of an exam without an order is accepted (``order_id``
None). It does not complete the study: the gateway does that when the referenced images are at
the hub. See docs/clinic-return.md ("Hub API for gateways").
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from imaging_hub.dicom.uids import is_valid_uid
from imaging_hub.errors import Forbidden
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import Permission
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import Gateway, Order, OrderStatus, Priority
from imaging_hub.worklist.orders.orders import FieldError, OrderInvalid

FEED_PAST = timedelta(days=7)
FEED_AHEAD = timedelta(days=7)
COMPLETED_KEPT = timedelta(hours=24)
FEED_LIMIT = 2000

#: MPPS Performed Procedure Step Status (0040,0252) → the order's status.
MPPS_STATUSES: dict[str, OrderStatus] = {
    "IN PROGRESS": OrderStatus.in_progress,
    "COMPLETED": OrderStatus.completed,
    "DISCONTINUED": OrderStatus.discontinued,
}
_FINAL_STEP = ("COMPLETED", "DISCONTINUED")
MAX_IMAGES = 100_000


def _gateway(caller: Caller) -> Gateway:
    caller.require(Permission.gateway_orders)
    gateway = caller.principal
    if not isinstance(gateway, Gateway):
        raise Forbidden("Only a clinic gateway asks for its clinic's orders this way.")
    return gateway


# --- the feed -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedOrder:
    """One order as a gateway's Modality Worklist needs it."""

    id: int
    accession_number: str
    study_instance_uid: str
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    modality: str
    body_part_examined: str
    exam_type: str
    requested_procedure_id: str
    requested_procedure_description: str
    reason_for_procedure: str
    scheduled_station_ae_title: str
    scheduled_at: str
    referring_physician_name: str
    priority: Priority
    status: OrderStatus
    expected_images: int
    done: bool

    @classmethod
    def of(cls, o: Order) -> "FeedOrder":
        return cls(
            id=o.id,
            accession_number=o.accession_number,
            study_instance_uid=o.study_instance_uid,
            patient_id=o.patient_id,
            patient_name=o.patient_name,
            patient_birth_date=o.patient_birth_date,
            patient_sex=o.patient_sex,
            modality=o.modality,
            body_part_examined=o.body_part_examined,
            exam_type=o.exam_type,
            requested_procedure_id=o.requested_procedure_id,
            requested_procedure_description=o.requested_procedure_description,
            reason_for_procedure=o.reason_for_procedure,
            scheduled_station_ae_title=o.scheduled_station_ae_title,
            scheduled_at=o.scheduled_at.astimezone(UTC).isoformat(),
            referring_physician_name=o.referring_physician_name,
            priority=o.priority,
            status=o.status,
            expected_images=o.expected_images,
            done=o.done_at is not None,
        )


@dataclass(frozen=True)
class OrderFeed:
    orders: list[FeedOrder]
    as_of: datetime
    #: A strong ETag of the orders (not of ``as_of``): equal while the snapshot is unchanged.
    etag: str


def order_feed(
    session: Session,
    caller: Caller,
    *,
    batcher: audit.AccessBatcher,
    now: datetime | None = None,
) -> OrderFeed:
    """The snapshot of the calling gateway's clinic's open orders (see the module docstring).

    The read of patient data is recorded (``order.listed``) once per gateway and window."""
    gateway = _gateway(caller)
    now = now or datetime.now(UTC)
    rows = session.scalars(
        select(Order)
        .where(
            Order.clinic_id == gateway.institution_id,
            Order.scheduled_at >= now - FEED_PAST,
            Order.scheduled_at <= now + FEED_AHEAD,
            or_(
                Order.status.in_([OrderStatus.scheduled, OrderStatus.in_progress]),
                (Order.status == OrderStatus.completed)
                & (Order.updated_at >= now - COMPLETED_KEPT),
            ),
        )
        .order_by(Order.scheduled_at, Order.id)
        .limit(FEED_LIMIT)
    ).all()
    items = [FeedOrder.of(o) for o in rows]
    digest = hashlib.sha256(
        json.dumps([asdict(i) for i in items], sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()
    if items:
        event = audit.record_access_for(
            session,
            caller,
            batcher=batcher,
            action=audit.ORDER_LISTED,
            study_uid="",
            object_type="order_feed",
            object_id=str(gateway.institution_id),
        )
        if event is not None:
            session.commit()
    return OrderFeed(orders=items, as_of=now, etag=f'"{digest[:32]}"')


# --- the MPPS intake ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MppsReport:
    """What the gateway saw of one Modality Performed Procedure Step (N-CREATE / N-SET)."""

    status: str
    accession_number: str = ""
    study_instance_uid: str = ""
    reason: str = ""
    performed_at: str = ""
    #: The images the step made: their SOP Instance UIDs, or only their number.
    images: int | list[str] | None = None


@dataclass(frozen=True)
class MppsResult:
    order_id: int | None
    #: The order's status after the report (None without an order).
    status: OrderStatus | None
    mpps_status: str


def _checked(uid: str, report: MppsReport) -> tuple[str, int | None]:
    errors: list[FieldError] = []
    if not is_valid_uid(uid):
        errors.append(
            FieldError("mpps_sop_instance_uid", "invalid", "The MPPS SOP Instance UID is invalid.")
        )
    status = report.status.strip().upper().replace("_", " ")
    if status not in MPPS_STATUSES:
        errors.append(
            FieldError(
                "status", "invalid", "The status must be IN PROGRESS, COMPLETED or DISCONTINUED."
            )
        )
    if report.study_instance_uid and not is_valid_uid(report.study_instance_uid):
        errors.append(
            FieldError("study_instance_uid", "invalid", "The StudyInstanceUID is invalid.")
        )
    if len(report.accession_number) > 16 or any(
        ch == "\\" or ord(ch) < 32 or ord(ch) == 127 for ch in report.accession_number
    ):
        errors.append(
            FieldError("accession_number", "invalid", "The accession number is invalid (SH).")
        )
    if len(report.reason) > 200 or any(ord(ch) < 32 or ord(ch) == 127 for ch in report.reason):
        errors.append(
            FieldError(
                "reason",
                "invalid",
                "The reason may have at most 200 characters and no control characters.",
            )
        )
    if report.performed_at:
        try:
            datetime.fromisoformat(report.performed_at)
        except ValueError:
            errors.append(FieldError("performed_at", "invalid", "The time must be ISO 8601."))
    images: int | None = None
    if isinstance(report.images, list):
        if len(report.images) > MAX_IMAGES or not all(is_valid_uid(u) for u in report.images):
            errors.append(
                FieldError("images", "invalid", "The images must be valid SOP Instance UIDs.")
            )
        images = len(report.images)
    elif isinstance(report.images, int):
        if not 0 <= report.images <= MAX_IMAGES:
            errors.append(FieldError("images", "invalid", "The image count is out of range."))
        images = report.images
    if errors:
        raise OrderInvalid(errors, code="mpps_invalid")
    return status, images


def _moves(order: Order, uid: str, step: str) -> bool:
    """Whether this step's message changes *order* (idempotence; see the module docstring)."""
    if order.status in (OrderStatus.cancelled, OrderStatus.completed):
        return False
    if order.mpps_uid == uid:
        if order.mpps_status in _FINAL_STEP:
            return False  # the step ended: repeats and late messages change nothing
        return step != order.mpps_status
    return True  # a step of its own (the first, or a retake after a discontinued one)


def record_mpps(session: Session, caller: Caller, mpps_uid: str, report: MppsReport) -> MppsResult:
    """Move the matching order of the gateway's clinic along the MPPS step (audited when it
    changes anything: ``order.written``, op ``mpps``); commits."""
    gateway = _gateway(caller)
    step, images = _checked(mpps_uid, report)
    order: Order | None = None
    if report.study_instance_uid:
        order = session.scalar(
            select(Order)
            .where(
                Order.clinic_id == gateway.institution_id,
                Order.study_instance_uid == report.study_instance_uid,
            )
            .with_for_update()
        )
    if order is None and report.accession_number.strip():
        order = session.scalar(
            select(Order)
            .where(
                Order.clinic_id == gateway.institution_id,
                Order.accession_number == report.accession_number.strip(),
            )
            .with_for_update()
        )
    if order is None:
        session.rollback()
        return MppsResult(order_id=None, status=None, mpps_status=step)
    if _moves(order, mpps_uid, step):
        before = order.status
        order.status = MPPS_STATUSES[step]
        order.mpps_uid = mpps_uid
        order.mpps_status = step
        if step == "DISCONTINUED":
            order.status_reason = report.reason.strip()
        order.updated_at = datetime.now(UTC)
        session.flush()
        audit.record_for(
            session,
            caller,
            audit.ORDER_WRITTEN,
            object_type="order",
            object_id=str(order.id),
            study_uid=order.study_instance_uid,
            detail={
                "op": "mpps",
                "mpps_uid": mpps_uid,
                "mpps_status": step,
                "from": before.value,
                "to": order.status.value,
                "images": images,
                "performed_at": report.performed_at or None,
            },
        )
    result = MppsResult(
        order_id=order.id, status=order.status, mpps_status=order.mpps_status or step
    )
    session.commit()  # nothing to write without a change, but the row lock ends here too
    return result
