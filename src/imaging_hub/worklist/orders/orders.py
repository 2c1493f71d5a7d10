"""Exam orders of a clinic (the Modality Worklist's source): register, list, cancel, "exam done".

An order carries what the modality needs before the exam (patient, requested procedure, modality,
scheduled station and time, the clinical question) and a pre-assigned StudyInstanceUID; when the
study arrives, its priority comes from the matching order (registration.complete_study). Values
are checked against the DICOM value representations they end up in, so an order never breaks the
worklist answer; every problem of a new order is reported at once, per field
(:class:`OrderInvalid`). Orders of an exam type of the catalogue (:mod:`.catalogue`) take their
modality, body part, expected image count and procedure description from it. Without an
accession number the hub assigns one: the clinic's local date and a daily counter
(``YYYYMMDD0001``), unique per clinic, retried when a concurrent order took the same one.

The edges (``/api/v1/orders``, ``imaging-hub admin order``) call :func:`place_order`,
:func:`cancel`, :func:`mark_done` and :func:`orders_for`, which decide permission, clinic scope,
the audit record and the commit; the functions above them are their flush-only building blocks.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ScalarSelect, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imaging_hub.dicom.uids import new_uid
from imaging_hub.errors import Conflict, Forbidden, InvalidRequest, NotFound
from imaging_hub.worklist.access.accounts import get_institution
from imaging_hub.worklist.access.caller import Caller, Operator
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import (
    Institution,
    Order,
    OrderStatus,
    Priority,
    Role,
    Study,
    User,
)
from imaging_hub.worklist.orders import catalogue

READ = "order.read"
WRITE = "order.write"

# Short strings (SH, LO, CS, AE): no backslash, no control characters; CS upper case.
_SH = re.compile(r"^[^\\\x00-\x1f\x7f]*$")
_CS = re.compile(r"^[A-Z0-9_ ]*$")
_CONTROL = re.compile(r"[\\\x00-\x1f\x7f]")
_PINYIN = re.compile(r"^[A-Za-z][A-Za-z '\-.^]*$")
_SEX = {"", "M", "F", "O"}
_PN_COMPONENT = 64
#: How often an order is tried again when a concurrent one took its accession number.
ACCESSION_ATTEMPTS = 20
#: How far from now an order may be scheduled.
SCHEDULE_WINDOW = timedelta(days=366)
OLDEST_BIRTH_YEAR = 1880
REASON_LIMIT = 200


@dataclass(frozen=True)
class FieldError:
    """One problem of a request body: the field, a stable short code and an English sentence.

    Codes: ``required``, ``too_long``, ``invalid_characters``, ``invalid``, ``future``,
    ``unknown``, ``mismatch``, ``duplicate``."""

    field: str
    code: str
    message: str


class OrderInvalid(InvalidRequest):
    """An order (or an MPPS report) with invalid fields, every problem listed (HTTP 422)."""

    code = "order_invalid"

    def __init__(self, errors: list[FieldError], *, code: str | None = None) -> None:
        self.errors = list(errors)
        super().__init__(" ".join(f"{e.field}: {e.message}" for e in errors), code=code)


class DuplicateAccession(OrderInvalid, Conflict):
    """The clinic already has an order with this accession number (a field error, 422)."""


class OrderNotOpen(Conflict):
    """The order's state does not allow this (e.g. cancelling a completed order)."""

    code = "order_not_open"


@dataclass(frozen=True)
class NewOrder:
    """An order as typed. Strings are checked (and trimmed) by :func:`create_order`;
    ``scheduled_at`` may be ISO 8601 text with a zone (None: now), ``priority`` a string."""

    patient_id: str = ""
    patient_name: str = ""
    patient_name_pinyin: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    exam_type: str = ""
    reason_for_procedure: str = ""
    accession_number: str = ""
    modality: str = ""
    scheduled_at: datetime | str | None = None
    requested_procedure_id: str = ""
    requested_procedure_description: str = ""
    body_part_examined: str = ""
    scheduled_station_ae_title: str = ""
    referring_physician_name: str = ""
    priority: Priority | str = Priority.routine


class _Checker:
    """Collects every field problem of one request."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, field: str, code: str, message: str) -> str:
        if not any(e.field == field for e in self.errors):
            self.errors.append(FieldError(field, code, message))
        return ""

    def text(
        self, field: str, value: object, *, limit: int, label: str, required: bool = False
    ) -> str:
        if value is None:
            value = ""
        if not isinstance(value, str):
            return self.fail(field, "invalid", f"The {label} must be text.")
        value = value.strip()
        if not value:
            return self.fail(field, "required", f"The {label} is required.") if required else ""
        if _SH.fullmatch(value) is None:
            return self.fail(
                field,
                "invalid_characters",
                f"The {label} may not contain a backslash or control characters.",
            )
        if len(value) > limit:
            return self.fail(field, "too_long", f"The {label} may have at most {limit} characters.")
        return value

    def code(self, field: str, value: object, *, label: str, required: bool = False) -> str:
        text = self.text(
            field,
            value.upper() if isinstance(value, str) else value,
            limit=16,
            label=label,
            required=required,
        )
        if text and _CS.fullmatch(text) is None:
            return self.fail(field, "invalid", f"The {label} must be a code of A-Z, 0-9 and _.")
        return text

    def person_name(self, field: str, value: object, *, label: str, groups: int = 3) -> str:
        text = self.text(field, value, limit=324, label=label)
        if not text:
            return text
        if text.count("=") >= groups:
            return self.fail(field, "invalid", f"The {label} has too many '=' groups.")
        for group in text.split("="):
            parts = group.split("^")
            if len(parts) > 5:
                return self.fail(field, "invalid", f"The {label} has more than five parts.")
            if len(group) > _PN_COMPONENT:  # PN: 64 characters per component group
                return self.fail(field, "too_long", f"The {label} may have at most 64 characters.")
        return text

    def birth_date(self, field: str, value: object, *, today: date, required: bool) -> str:
        text = self.text(field, value, limit=10, label="birth date", required=required)
        if not text:
            return text
        digits = text.replace("-", "") if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else text
        try:
            parsed = date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
        except ValueError:
            parsed = None
        if len(digits) != 8 or not digits.isdigit() or parsed is None:
            return self.fail(field, "invalid", "The birth date must be a valid date (YYYYMMDD).")
        if parsed > today:
            return self.fail(field, "future", "The birth date is in the future.")
        if parsed.year < OLDEST_BIRTH_YEAR:
            return self.fail(field, "invalid", "The birth date is too far in the past.")
        return digits


@dataclass(frozen=True)
class _Checked:
    values: dict[str, Any]
    accession_number: str  # "" : the hub assigns one


def check_new_order(new: NewOrder, *, now: datetime, zone: ZoneInfo) -> _Checked:
    """Every value of *new* checked; OrderInvalid lists all problems at once."""
    c = _Checker()
    today = now.astimezone(zone).date()
    exam: catalogue.ExamType | None = None
    exam_code = c.text("exam_type", new.exam_type, limit=32, label="exam type").upper()
    if exam_code:
        exam = catalogue.exam_type(exam_code)
        if exam is None:
            c.fail("exam_type", "unknown", "This exam type is not in the catalogue.")
    # The portal's orders (of a catalogue exam type) need the whole patient and the question.
    full = bool(exam_code)
    patient_id = c.text("patient_id", new.patient_id, limit=64, label="patient ID", required=True)
    pinyin = c.text("patient_name_pinyin", new.patient_name_pinyin, limit=194, label="pinyin")
    if pinyin and _PINYIN.fullmatch(pinyin) is None:
        pinyin = c.fail(
            "patient_name_pinyin",
            "invalid_characters",
            "The pinyin may hold Latin letters, spaces, apostrophes, hyphens and '^' only.",
        )
    elif pinyin:
        pinyin = c.person_name("patient_name_pinyin", pinyin, label="pinyin", groups=1)
    name = c.person_name("patient_name", new.patient_name, label="patient name")
    if not name and (full or pinyin) and not any(e.field == "patient_name" for e in c.errors):
        c.fail("patient_name", "required", "The patient name is required.")
    if name and (pinyin or new.patient_name_pinyin) and "=" in name:
        name = c.fail("patient_name", "invalid", "With a pinyin, the name may not hold '=' groups.")
    person_name = f"{pinyin}={name}" if name and pinyin else name
    sex = c.text("patient_sex", new.patient_sex, limit=1, label="sex", required=full).upper()
    if sex not in _SEX:
        sex = c.fail("patient_sex", "invalid", "The sex must be M, F or O.")
    birth = c.birth_date("patient_birth_date", new.patient_birth_date, today=today, required=full)
    reason = c.text(
        "reason_for_procedure",
        new.reason_for_procedure,
        limit=64,
        label="clinical question",
        required=full,
    )
    modality = c.code("modality", new.modality, label="modality", required=not exam_code)
    body_part = c.code("body_part_examined", new.body_part_examined, label="body part")
    if exam is not None:
        if modality and modality != exam.modality:
            c.fail("modality", "mismatch", "The modality does not fit the exam type.")
        if body_part and body_part != exam.body_part:
            c.fail("body_part_examined", "mismatch", "The body part does not fit the exam type.")
        modality, body_part = exam.modality, exam.body_part
    description = c.text(
        "requested_procedure_description",
        new.requested_procedure_description,
        limit=64,
        label="procedure description",
    )
    if exam is not None and not description:
        description = exam.name_zh
    accession = c.text("accession_number", new.accession_number, limit=16, label="accession number")
    procedure_id = c.text(
        "requested_procedure_id", new.requested_procedure_id, limit=16, label="procedure ID"
    )
    station = c.text(
        "scheduled_station_ae_title",
        new.scheduled_station_ae_title,
        limit=16,
        label="station AE title",
    )
    referring = c.person_name(
        "referring_physician_name", new.referring_physician_name, label="referring physician"
    )
    priority = Priority.routine
    try:
        priority = Priority(
            new.priority.strip().lower() if isinstance(new.priority, str) else new.priority
        )
    except ValueError:
        c.fail("priority", "invalid", "The priority must be stat, urgent or routine.")
    scheduled_at = now
    when = new.scheduled_at
    if isinstance(when, str) and when.strip():
        try:
            when = datetime.fromisoformat(when.strip())
        except ValueError:
            when = None
            c.fail("scheduled_at", "invalid", "The scheduled time must be ISO 8601 with a zone.")
    if isinstance(when, datetime):
        if when.tzinfo is None:
            c.fail("scheduled_at", "invalid", "The scheduled time needs a time zone.")
        elif abs(when - now) > SCHEDULE_WINDOW:
            c.fail("scheduled_at", "invalid", "The scheduled time is more than a year away.")
        else:
            scheduled_at = when.astimezone(UTC)
    if c.errors:
        raise OrderInvalid(c.errors)
    return _Checked(
        values={
            "patient_id": patient_id,
            "patient_name": person_name,
            "patient_birth_date": birth,
            "patient_sex": sex,
            "exam_type": exam.code if exam is not None else "",
            "expected_images": exam.expected_images if exam is not None else 0,
            "reason_for_procedure": reason,
            "modality": modality,
            "body_part_examined": body_part,
            "requested_procedure_id": procedure_id,
            "requested_procedure_description": description,
            "scheduled_station_ae_title": station,
            "referring_physician_name": referring,
            "priority": priority,
            "scheduled_at": scheduled_at,
        },
        accession_number=accession,
    )


def next_accession(session: Session, clinic: Institution, day: date) -> str:
    """The clinic's next free accession number of *day*: ``YYYYMMDD`` and a counter (0001...).

    Writes the clinic's row first (a no-op update): on PostgreSQL that row lock, on SQLite the
    database's write lock, is held until the commit, so concurrent orders of one clinic take
    their numbers one after the other. Should a number still be taken (an order typed with that
    accession number by hand), :func:`create_order`'s insert fails on the unique constraint and
    :func:`place_order` tries again.
    """
    session.execute(
        update(Institution).where(Institution.id == clinic.id).values(id=Institution.id)
    )
    prefix = day.strftime("%Y%m%d")
    taken = session.scalars(
        select(Order.accession_number).where(
            Order.clinic_id == clinic.id, Order.accession_number.like(f"{prefix}%")
        )
    )
    counters = [int(a[8:]) for a in taken if 12 <= len(a) <= 16 and a.isdigit()]
    return f"{prefix}{max(counters, default=0) + 1:04d}"


def create_order(
    session: Session,
    *,
    clinic: Institution,
    new: NewOrder,
    by: User | None,
    now: datetime | None = None,
    zone: ZoneInfo | str = "Asia/Shanghai",
) -> Order:
    """Register an order at *clinic* with a fresh StudyInstanceUID. Flushes, does not commit.

    Raises Conflict for a non-clinic, :class:`OrderInvalid` listing every invalid value,
    :class:`DuplicateAccession` for an accession number the clinic already used; the flush
    raises IntegrityError when a concurrent order took the same accession number.
    """
    if not clinic.is_clinic:
        raise Conflict("Orders belong to township or village clinics.")
    now = now or datetime.now(UTC)
    zone = ZoneInfo(zone) if isinstance(zone, str) else zone
    checked = check_new_order(new, now=now, zone=zone)
    accession = checked.accession_number
    if accession:
        taken = session.scalar(
            select(Order.id).where(
                Order.clinic_id == clinic.id, Order.accession_number == accession
            )
        )
        if taken is not None:
            raise DuplicateAccession(
                [
                    FieldError(
                        "accession_number",
                        "duplicate",
                        f"The clinic already has an order with accession number {accession!r}.",
                    )
                ]
            )
    else:
        accession = next_accession(session, clinic, now.astimezone(zone).date())
    values = dict(checked.values)
    values["requested_procedure_id"] = values["requested_procedure_id"] or accession
    order = Order(
        clinic_id=clinic.id,
        accession_number=accession,
        study_instance_uid=new_uid(),
        status=OrderStatus.scheduled,
        created_by_id=by.id if by is not None else None,
        created_at=now,
        updated_at=now,
        **values,
    )
    session.add(order)
    session.flush()
    return order


def list_orders(
    session: Session,
    *,
    clinic: Institution | None = None,
    status: OrderStatus | None = None,
    scheduled_from: datetime | None = None,
    scheduled_until: datetime | None = None,
    limit: int = 200,
) -> list[tuple[Order, str]]:
    """Orders (with their clinic's code) in scheduled order, optionally of one clinic."""
    stmt = select(Order, Institution.code).join(Institution, Order.clinic_id == Institution.id)
    if clinic is not None:
        stmt = stmt.where(Order.clinic_id == clinic.id)
    if status is not None:
        stmt = stmt.where(Order.status == status)
    if scheduled_from is not None:
        stmt = stmt.where(Order.scheduled_at >= scheduled_from)
    if scheduled_until is not None:
        stmt = stmt.where(Order.scheduled_at < scheduled_until)
    stmt = stmt.order_by(Order.scheduled_at, Order.id).limit(limit)
    return [(order, code) for order, code in session.execute(stmt).all()]


def _order_in(session: Session, order_id: int, clinic: Institution | None) -> Order:
    order = session.get(Order, order_id)
    if order is None or (clinic is not None and order.clinic_id != clinic.id):
        raise NotFound(f"No order with id {order_id}.")
    return order


def check_reason(reason: object) -> str:
    """A cancel reason: at most 200 characters, no control characters (OrderInvalid)."""
    c = _Checker()
    if isinstance(reason, str) and _CONTROL.search(reason.replace("\\", "")):
        c.fail("reason", "invalid_characters", "The reason may not contain control characters.")
    text = reason.strip() if isinstance(reason, str) else ""
    if reason is not None and not isinstance(reason, str):
        c.fail("reason", "invalid", "The reason must be text.")
    if len(text) > REASON_LIMIT:
        c.fail("reason", "too_long", f"The reason may have at most {REASON_LIMIT} characters.")
    if c.errors:
        raise OrderInvalid(c.errors)
    return text


def cancel_order(
    session: Session, *, order_id: int, clinic: Institution | None, reason: str = ""
) -> Order:
    """Cancel a scheduled order; *clinic* limits it to that clinic's orders (clinic staff).

    NotFound for an unknown order or one of another clinic, OrderNotOpen unless it is scheduled.
    """
    order = _order_in(session, order_id, clinic)
    text = check_reason(reason)
    if order.status != OrderStatus.scheduled:
        raise OrderNotOpen(
            f"This order is {order.status.value}; only scheduled orders are cancelled."
        )
    order.status = OrderStatus.cancelled
    order.status_reason = text
    order.updated_at = datetime.now(UTC)
    session.flush()
    return order


def done_order(
    session: Session, *, order_id: int, clinic: Institution | None, by: User | None
) -> Order:
    """ "Exam done" (machines without MPPS): a scheduled or in-progress order is completed."""
    order = _order_in(session, order_id, clinic)
    if order.status not in (OrderStatus.scheduled, OrderStatus.in_progress):
        raise OrderNotOpen(
            f"This order is {order.status.value}; only scheduled or in-progress orders are done."
        )
    now = datetime.now(UTC)
    order.status = OrderStatus.completed
    order.done_at = now
    order.done_by_id = by.id if by is not None else None
    order.updated_at = now
    session.flush()
    return order


def clinic_of(user: User) -> Institution:
    """The clinic whose orders *user* (clinic staff) manages."""
    if not user.institution.is_clinic:
        raise Forbidden("Only clinic staff register orders.")
    return user.institution


# --- Which order a study belongs to -------------------------------------------------------------


def _of_study(column: Any) -> ScalarSelect[Any]:
    """*column* of the study's order (a scalar subquery correlated to :class:`Study`): the order
    of the study's clinic with its StudyInstanceUID (the Modality Worklist's pre-assigned one),
    else with its accession number. Two index look-ups (the UID is unique; accession numbers are
    unique per clinic), so it may be evaluated for every row of a page."""
    by_uid = (
        select(column)
        .where(
            Order.study_instance_uid == Study.study_instance_uid,
            Order.clinic_id == Study.clinic_id,
        )
        .correlate(Study)
        .scalar_subquery()
    )
    by_accession = (
        select(column)
        .where(
            Order.clinic_id == Study.clinic_id,
            Order.accession_number == Study.accession_number,
            Study.accession_number != "",
        )
        .correlate(Study)
        .scalar_subquery()
    )
    return select(func.coalesce(by_uid, by_accession)).correlate(Study).scalar_subquery()


def study_order_id() -> ScalarSelect[Any]:
    """The id of the study's order (None without one), correlated to :class:`Study`."""
    return _of_study(Order.id)


def order_question() -> ScalarSelect[Any]:
    """The study's order's clinical question (None without an order), correlated to
    :class:`Study`: for listings such as the reading worklist."""
    return _of_study(Order.reason_for_procedure)


def matching_order(
    session: Session, *, clinic_id: int, study_instance_uid: str, accession_number: str
) -> Order | None:
    """The clinic's order of a study: by StudyInstanceUID, else by accession number."""
    order = session.scalar(
        select(Order).where(
            Order.clinic_id == clinic_id, Order.study_instance_uid == study_instance_uid
        )
    )
    if order is None and accession_number:
        order = session.scalar(
            select(Order).where(
                Order.clinic_id == clinic_id, Order.accession_number == accession_number
            )
        )
    return order


# --- Domain functions: what the edges (HTTP, CLI) call ----------------------------------------


@dataclass(frozen=True)
class OrderView:
    id: int
    clinic: str
    accession_number: str
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    exam_type: str
    expected_images: int
    reason_for_procedure: str
    requested_procedure_id: str
    requested_procedure_description: str
    modality: str
    body_part_examined: str
    scheduled_station_ae_title: str
    scheduled_at: datetime
    referring_physician_name: str
    study_instance_uid: str
    priority: Priority
    status: OrderStatus
    status_reason: str
    mpps_status: str
    done_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, order: Order, clinic: str) -> "OrderView":
        values = {f.name: getattr(order, f.name) for f in fields(cls) if f.name != "clinic"}
        return cls(clinic=clinic, **values)


def _writing_clinic(session: Session, caller: Caller, clinic: str | None) -> Institution:
    """The clinic whose orders *caller* writes: clinic staff their own; the console operator
    (who holds the hub's database) the one named."""
    if isinstance(caller.principal, Operator):
        if clinic is None:
            raise InvalidRequest("Name the clinic of the order.")
        return get_institution(session, clinic)
    caller.require(WRITE)
    return clinic_of(caller.user)


def _audit(session: Session, caller: Caller, order: Order, **detail: object) -> None:
    audit.record_for(
        session,
        caller,
        audit.ORDER_WRITTEN,
        object_type="order",
        object_id=str(order.id),
        study_uid=order.study_instance_uid,
        detail=detail,
    )


def place_order(
    session: Session,
    caller: Caller,
    new: NewOrder,
    *,
    clinic: str | None = None,
    timezone: str = "Asia/Shanghai",
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> OrderView:
    """Register an order (audited, committed); the view carries its accession number and
    StudyInstanceUID. An assigned accession number that a concurrent order took meanwhile is
    replaced by the next one (the unique constraint decides, on PostgreSQL and SQLite alike)."""
    zone = ZoneInfo(timezone)
    for attempt in range(ACCESSION_ATTEMPTS):
        where = _writing_clinic(session, caller, clinic)
        by = caller.principal if isinstance(caller.principal, User) else None
        try:
            order = create_order(session, clinic=where, new=new, by=by, now=now(), zone=zone)
            _audit(session, caller, order, op="created", accession_number=order.accession_number)
            session.commit()
        except IntegrityError:
            session.rollback()
            if attempt + 1 == ACCESSION_ATTEMPTS:
                raise
            continue
        return OrderView.of(order, where.code)
    raise AssertionError("unreachable")  # pragma: no cover


def _acting_on(session: Session, caller: Caller) -> tuple[Institution | None, User | None]:
    """The clinic limiting *caller*'s order changes (None: the console operator, any clinic)."""
    if isinstance(caller.principal, Operator):
        return None, None
    return _writing_clinic(session, caller, None), caller.user


def _code_of(session: Session, order: Order) -> str:
    return session.get_one(Institution, order.clinic_id).code


def cancel(session: Session, caller: Caller, order_id: int, *, reason: str = "") -> OrderView:
    """Cancel a scheduled order, with an optional reason: clinic staff only their clinic's; the
    console operator any."""
    where, _ = _acting_on(session, caller)
    order = cancel_order(session, order_id=order_id, clinic=where, reason=reason)
    _audit(session, caller, order, op="cancelled", reason=order.status_reason)
    session.commit()
    return OrderView.of(order, _code_of(session, order))


def mark_done(session: Session, caller: Caller, order_id: int) -> OrderView:
    """ "Exam done" for a machine without MPPS: the order is completed (the gateways' feed then
    says ``done``, which completes the study once its images are at the hub)."""
    where, by = _acting_on(session, caller)
    order = done_order(session, order_id=order_id, clinic=where, by=by)
    _audit(session, caller, order, op="done")
    session.commit()
    return OrderView.of(order, _code_of(session, order))


def orders_for(
    session: Session,
    caller: Caller,
    *,
    clinic: str | None = None,
    status: OrderStatus | None = None,
    scheduled_from: datetime | None = None,
    scheduled_until: datetime | None = None,
    limit: int = 200,
    batcher: audit.AccessBatcher | None = None,
) -> list[OrderView]:
    """Orders in scheduled order; clinic staff see only their own clinic's. With *batcher* (the
    HTTP edge), a non-empty list is recorded as a read of patient data (``order.listed``, once
    per session and window)."""
    caller.require(READ)
    where: Institution | None
    if isinstance(caller.principal, User) and caller.principal.role == Role.clinic_staff:
        own = clinic_of(caller.principal)
        if clinic is not None and clinic != own.code:
            return []
        where = own
    else:
        where = get_institution(session, clinic) if clinic else None
    found = list_orders(
        session,
        clinic=where,
        status=status,
        scheduled_from=scheduled_from,
        scheduled_until=scheduled_until,
        limit=limit,
    )
    if found and batcher is not None:
        event = audit.record_access_for(
            session,
            caller,
            batcher=batcher,
            action=audit.ORDER_LISTED,
            study_uid="",
            object_type="orders",
            object_id=where.code if where is not None else "",
        )
        if event is not None:
            session.commit()
    return [OrderView.of(order, code) for order, code in found]
