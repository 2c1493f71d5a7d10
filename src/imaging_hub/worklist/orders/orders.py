"""Exam orders of a clinic (the Modality Worklist's source): register, list, cancel.

An order carries what the modality needs before the exam (patient, requested procedure, modality,
scheduled station and time) and a pre-assigned StudyInstanceUID; when the study arrives, its
priority comes from the matching order (ingest.complete_study). Values are checked against the
DICOM value representations they end up in, so an order never breaks the worklist answer.

The edges (``/api/v1/orders``, ``imaging-hub admin order``) call :func:`place_order`,
:func:`cancel` and :func:`orders_for`, which decide permission, clinic scope, the audit record
and the commit; the functions above them are their flush-only building blocks.
"""

import re
from dataclasses import dataclass, fields
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging_hub.dicom.uids import new_uid
from imaging_hub.errors import Conflict, Forbidden, InvalidRequest, NotFound
from imaging_hub.worklist.access.accounts import get_institution
from imaging_hub.worklist.access.caller import Caller, Operator
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import Institution, Order, OrderStatus, Priority, Role, User

READ = "order.read"
WRITE = "order.write"

# Short strings (SH, CS, AE): no backslash, no control characters; CS upper case.
_SH = re.compile(r"^[^\\\x00-\x1f\x7f]*$")
_CS = re.compile(r"^[A-Z0-9_ ]*$")
_SEX = {"", "M", "F", "O"}
_PN_COMPONENT = 64


@dataclass(frozen=True)
class NewOrder:
    accession_number: str
    patient_id: str
    modality: str
    scheduled_at: datetime
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    requested_procedure_id: str = ""
    requested_procedure_description: str = ""
    body_part_examined: str = ""
    scheduled_station_ae_title: str = ""
    referring_physician_name: str = ""
    priority: Priority = Priority.routine


def _short(value: str, *, name: str, limit: int, required: bool = False) -> str:
    value = value.strip()
    if required and not value:
        raise InvalidRequest(f"The order needs a {name}.")
    if len(value) > limit or _SH.fullmatch(value) is None:
        raise InvalidRequest(
            f"The {name} may have at most {limit} characters and no backslash or control "
            "characters."
        )
    return value


def _code(value: str, *, name: str, limit: int, required: bool = False) -> str:
    value = _short(value.upper(), name=name, limit=limit, required=required)
    if _CS.fullmatch(value) is None:
        raise InvalidRequest(f"The {name} {value!r} is not a valid code (A-Z, 0-9, _).")
    return value


def _person_name(value: str, *, name: str) -> str:
    value = value.strip()
    if value.count("=") > 2 or any(
        len(part) > _PN_COMPONENT for group in value.split("=") for part in group.split("^")
    ):
        raise InvalidRequest(f"The {name} has a component longer than 64 characters.")
    if re.search(r"[\\\x00-\x1f\x7f]", value):
        raise InvalidRequest(f"The {name} contains a backslash or a control character.")
    return value


def _birth_date(value: str) -> str:
    value = value.strip()
    if not value:
        return ""
    try:
        parsed = date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        parsed = None
    if len(value) != 8 or not value.isdigit() or parsed is None:
        raise InvalidRequest("The birth date must be a valid date written YYYYMMDD.")
    return value


def create_order(session: Session, *, clinic: Institution, new: NewOrder, by: User | None) -> Order:
    """Register an order at *clinic* with a fresh StudyInstanceUID. Flushes, does not commit.

    Raises InvalidRequest for values that do not fit their DICOM representation, Conflict for a
    non-clinic or an accession number the clinic already used.
    """
    if not clinic.is_clinic:
        raise Conflict("Orders belong to township or village clinics.")
    if new.scheduled_at.tzinfo is None:
        raise InvalidRequest("The scheduled time needs a time zone.")
    if new.patient_sex.strip().upper() not in _SEX:
        raise InvalidRequest("The patient's sex must be M, F, O or empty.")
    accession = _short(new.accession_number, name="accession number", limit=16, required=True)
    taken = session.scalar(
        select(Order.id).where(Order.clinic_id == clinic.id, Order.accession_number == accession)
    )
    if taken is not None:
        raise Conflict(f"The clinic already has an order with accession number {accession!r}.")
    order = Order(
        clinic_id=clinic.id,
        accession_number=accession,
        patient_id=_short(new.patient_id, name="patient ID", limit=64, required=True),
        patient_name=_person_name(new.patient_name, name="patient name"),
        patient_birth_date=_birth_date(new.patient_birth_date),
        patient_sex=new.patient_sex.strip().upper(),
        requested_procedure_id=_short(
            new.requested_procedure_id, name="requested procedure ID", limit=16
        ),
        requested_procedure_description=_short(
            new.requested_procedure_description, name="procedure description", limit=64
        ),
        modality=_code(new.modality, name="modality", limit=16, required=True),
        body_part_examined=_code(new.body_part_examined, name="body part", limit=16),
        scheduled_station_ae_title=_short(
            new.scheduled_station_ae_title, name="station AE title", limit=16
        ),
        scheduled_at=new.scheduled_at,
        referring_physician_name=_person_name(
            new.referring_physician_name, name="referring physician's name"
        ),
        study_instance_uid=new_uid(),
        priority=new.priority,
        status=OrderStatus.scheduled,
        created_by_id=by.id if by is not None else None,
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


def cancel_order(session: Session, *, order_id: int, clinic: Institution | None) -> Order:
    """Cancel a scheduled order; *clinic* limits it to that clinic's orders (clinic staff).

    NotFound for an unknown order or one of another clinic, Conflict unless it is scheduled.
    """
    order = session.get(Order, order_id)
    if order is None or (clinic is not None and order.clinic_id != clinic.id):
        raise NotFound(f"No order with id {order_id}.")
    if order.status != OrderStatus.scheduled:
        raise Conflict(f"This order is {order.status.value}; only scheduled orders are cancelled.")
    order.status = OrderStatus.cancelled
    session.flush()
    return order


def clinic_of(user: User) -> Institution:
    """The clinic whose orders *user* (clinic staff) manages."""
    if not user.institution.is_clinic:
        raise Forbidden("Only clinic staff register orders.")
    return user.institution


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
    session: Session, caller: Caller, new: NewOrder, *, clinic: str | None = None
) -> OrderView:
    """Register an order (audited, committed); the view carries its StudyInstanceUID."""
    where = _writing_clinic(session, caller, clinic)
    by = caller.principal if isinstance(caller.principal, User) else None
    order = create_order(session, clinic=where, new=new, by=by)
    _audit(session, caller, order, op="created", accession_number=order.accession_number)
    session.commit()
    return OrderView.of(order, where.code)


def cancel(session: Session, caller: Caller, order_id: int) -> OrderView:
    """Cancel a scheduled order: clinic staff only their clinic's; the console operator any."""
    if isinstance(caller.principal, Operator):
        order = cancel_order(session, order_id=order_id, clinic=None)
        code = session.get_one(Institution, order.clinic_id).code
    else:
        where = _writing_clinic(session, caller, None)
        order = cancel_order(session, order_id=order_id, clinic=where)
        code = where.code
    _audit(session, caller, order, op="cancelled")
    session.commit()
    return OrderView.of(order, code)


def orders_for(
    session: Session,
    caller: Caller,
    *,
    clinic: str | None = None,
    status: OrderStatus | None = None,
    scheduled_from: datetime | None = None,
    scheduled_until: datetime | None = None,
    limit: int = 200,
) -> list[OrderView]:
    """Orders in scheduled order; clinic staff see only their own clinic's."""
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
    return [OrderView.of(order, code) for order, code in found]
