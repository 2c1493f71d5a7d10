"""Exam orders (``/api/v1/orders``): clinic staff register and cancel their clinic's orders;
hub staff read them. Thin edge over :mod:`imaging_hub.worklist.orders.orders`."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, Field

from imaging_hub.worklist.access.accounts import get_institution
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import Institution, Order, OrderStatus, Priority, Role, User
from imaging_hub.worklist.http.deps import AuditDep, SessionDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.orders import orders

router = APIRouter(prefix="/api/v1/orders", tags=["orders"])

OrderWriter = Annotated[User, require("order.write")]
OrderReader = Annotated[User, require("order.read")]


class OrderIn(BaseModel):
    accession_number: str = Field(min_length=1, max_length=16)
    patient_id: str = Field(min_length=1, max_length=64)
    patient_name: str = Field(default="", max_length=324)
    patient_birth_date: str = Field(default="", max_length=8)
    patient_sex: str = Field(default="", max_length=1)
    requested_procedure_id: str = Field(default="", max_length=16)
    requested_procedure_description: str = Field(default="", max_length=64)
    modality: str = Field(min_length=1, max_length=16)
    body_part_examined: str = Field(default="", max_length=16)
    scheduled_station_ae_title: str = Field(default="", max_length=16)
    scheduled_at: AwareDatetime
    referring_physician_name: str = Field(default="", max_length=324)
    priority: Priority = Priority.routine


class OrderOut(BaseModel):
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


def _out(order: Order, clinic: str) -> OrderOut:
    values = {name: getattr(order, name) for name in OrderOut.model_fields if name != "clinic"}
    return OrderOut.model_validate({**values, "clinic": clinic})


@router.post("", response_model=OrderOut, status_code=201)
def post_order(
    payload: OrderIn, user: OrderWriter, session: SessionDep, auditor: AuditDep
) -> OrderOut:
    """Register an order at the caller's clinic; the answer carries its StudyInstanceUID."""
    clinic = orders.clinic_of(user)
    order = orders.create_order(
        session, clinic=clinic, new=orders.NewOrder(**payload.model_dump()), by=user
    )
    auditor.record(
        audit.ORDER_WRITTEN,
        object_type="order",
        object_id=str(order.id),
        study_uid=order.study_instance_uid,
        detail={"op": "created", "accession_number": order.accession_number},
    )
    session.commit()
    return _out(order, clinic.code)


@router.get("", response_model=list[OrderOut])
def get_orders(
    user: OrderReader,
    session: SessionDep,
    clinic: Annotated[str | None, Query(max_length=63, pattern=r"^[a-z0-9-]+$")] = None,
    status: OrderStatus | None = None,
    scheduled_from: AwareDatetime | None = None,
    scheduled_until: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[OrderOut]:
    """Orders in scheduled order; clinic staff see only their own clinic's."""
    where: Institution | None
    if user.role == Role.clinic_staff:
        own = orders.clinic_of(user)
        if clinic is not None and clinic != own.code:
            return []
        where = own
    else:
        where = get_institution(session, clinic) if clinic else None
    found = orders.list_orders(
        session,
        clinic=where,
        status=status,
        scheduled_from=scheduled_from,
        scheduled_until=scheduled_until,
        limit=limit,
    )
    return [_out(order, code) for order, code in found]


@router.post("/{order_id}/cancel", response_model=OrderOut)
def post_cancel(
    order_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    user: OrderWriter,
    session: SessionDep,
    auditor: AuditDep,
) -> OrderOut:
    """Cancel one of the caller's clinic's scheduled orders."""
    clinic = orders.clinic_of(user)
    order = orders.cancel_order(session, order_id=order_id, clinic=clinic)
    auditor.record(
        audit.ORDER_WRITTEN,
        object_type="order",
        object_id=str(order.id),
        study_uid=order.study_instance_uid,
        detail={"op": "cancelled"},
    )
    session.commit()
    return _out(order, clinic.code)
