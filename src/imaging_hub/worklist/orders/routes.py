"""Exam orders (``/api/v1/orders``): clinic staff register and cancel their clinic's orders;
hub staff read them. Thin edge over :mod:`imaging_hub.worklist.orders.orders`."""

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, Field

from imaging_hub.worklist.db.models import OrderStatus, Priority, User
from imaging_hub.worklist.http.deps import CallerDep, SessionDep
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


@router.post("", response_model=orders.OrderView, status_code=201)
def post_order(
    payload: OrderIn, _: OrderWriter, caller: CallerDep, session: SessionDep
) -> orders.OrderView:
    """Register an order at the caller's clinic; the answer carries its StudyInstanceUID."""
    return orders.place_order(session, caller, orders.NewOrder(**payload.model_dump()))


@router.get("", response_model=list[orders.OrderView])
def get_orders(
    _: OrderReader,
    caller: CallerDep,
    session: SessionDep,
    clinic: Annotated[str | None, Query(max_length=63, pattern=r"^[a-z0-9-]+$")] = None,
    status: OrderStatus | None = None,
    scheduled_from: AwareDatetime | None = None,
    scheduled_until: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[orders.OrderView]:
    """Orders in scheduled order; clinic staff see only their own clinic's."""
    return orders.orders_for(
        session,
        caller,
        clinic=clinic,
        status=status,
        scheduled_from=scheduled_from,
        scheduled_until=scheduled_until,
        limit=limit,
    )


@router.post("/{order_id}/cancel", response_model=orders.OrderView)
def post_cancel(
    order_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    _: OrderWriter,
    caller: CallerDep,
    session: SessionDep,
) -> orders.OrderView:
    """Cancel one of the caller's clinic's scheduled orders."""
    return orders.cancel(session, caller, order_id)
