"""Exam orders (``/api/v1/orders``) and the exam catalogue (``/api/v1/exam-types``): clinic staff
register, cancel and mark done their clinic's orders; hub staff read them. Thin edge over
:mod:`imaging_hub.worklist.orders.orders`.

A new order's problems are answered all at once: 422 ``order_invalid`` with
``"errors": [{"field", "code", "message"}]`` (see :func:`install_order_error_handlers`).
"""

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from imaging_hub.worklist.db.models import OrderStatus, User
from imaging_hub.worklist.http.deps import CallerDep, SessionDep, StateDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.http.problems import PROBLEM_JSON, problem_body
from imaging_hub.worklist.orders import catalogue, orders
from imaging_hub.worklist.reports.templates import pick_language

router = APIRouter(tags=["orders"])

OrderWriter = Annotated[User, require("order.write")]
OrderReader = Annotated[User, require("order.read")]
OrderId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _text(description: str = "") -> Any:
    """An optional text field with a generous bound (the body limit applies too): the domain
    checks each value and lists every problem at once, which a schema refusal would not."""
    return Field(default=None, max_length=4000, description=description or None)


class OrderIn(BaseModel):
    """A new order. With ``exam_type`` (the portal's form) the modality, body part, expected
    image count and procedure description come from the catalogue, and ``patient_name``,
    ``patient_sex``, ``patient_birth_date`` and ``reason_for_procedure`` are required;
    without it ``modality`` is. ``accession_number``: assigned by the hub when absent."""

    model_config = ConfigDict(extra="ignore")

    patient_id: str | None = _text()
    patient_name: str | None = _text("As typed, e.g. 王^小东 ('^' between family and given name).")
    patient_name_pinyin: str | None = _text("e.g. Wang^XiaoDong: the PN is Wang^XiaoDong=王^小东.")
    patient_birth_date: str | None = _text("YYYYMMDD (or YYYY-MM-DD), not in the future.")
    patient_sex: str | None = _text("M, F or O.")
    exam_type: str | None = _text("A code of the exam catalogue (GET /api/v1/exam-types).")
    reason_for_procedure: str | None = _text("The clinical question (at most 64 characters).")
    accession_number: str | None = _text("At most 16 characters; assigned by the hub if absent.")
    modality: str | None = _text("Without exam_type: CR, DX, CT, US, MR...")
    scheduled_at: str | None = _text("ISO 8601 with a zone; default now.")
    requested_procedure_id: str | None = _text()
    requested_procedure_description: str | None = _text()
    body_part_examined: str | None = _text()
    scheduled_station_ae_title: str | None = _text()
    referring_physician_name: str | None = _text()
    priority: str | None = _text("stat, urgent or routine (default).")


class CancelIn(BaseModel):
    reason: str = Field(default="", max_length=4000)


@router.post("/api/v1/orders", response_model=orders.OrderView, status_code=201)
def post_order(
    payload: OrderIn, _: OrderWriter, caller: CallerDep, session: SessionDep, state: StateDep
) -> orders.OrderView:
    """Register an order at the caller's clinic; the answer carries its accession number and
    StudyInstanceUID."""
    values = {k: v for k, v in payload.model_dump().items() if v is not None}
    return orders.place_order(
        session, caller, orders.NewOrder(**values), timezone=state.settings.timezone
    )


@router.get("/api/v1/orders", response_model=list[orders.OrderView])
def get_orders(
    _: OrderReader,
    caller: CallerDep,
    session: SessionDep,
    state: StateDep,
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
        batcher=state.access_batcher,
    )


@router.post("/api/v1/orders/{order_id}/cancel", response_model=orders.OrderView)
def post_cancel(
    order_id: OrderId,
    _: OrderWriter,
    caller: CallerDep,
    session: SessionDep,
    payload: Annotated[CancelIn | None, Body()] = None,
) -> orders.OrderView:
    """Cancel one of the caller's clinic's scheduled orders (optional ``{"reason"}``)."""
    reason = payload.reason if payload is not None else ""
    return orders.cancel(session, caller, order_id, reason=reason)


@router.post("/api/v1/orders/{order_id}/done", response_model=orders.OrderView)
def post_done(
    order_id: OrderId, _: OrderWriter, caller: CallerDep, session: SessionDep
) -> orders.OrderView:
    """ "Exam done" for a machine without MPPS: the scheduled or in-progress order is completed."""
    return orders.mark_done(session, caller, order_id)


@router.get("/api/v1/exam-types", response_model=catalogue.ExamTypeList)
def get_exam_types(
    _: OrderReader,
    caller: CallerDep,
    lang: Annotated[str | None, Query(max_length=16)] = None,
    accept_language: Annotated[str | None, Header(max_length=256)] = None,
) -> catalogue.ExamTypeList:
    """The exam catalogue in the caller's language (``?lang=`` or Accept-Language; zh-CN by
    default); ``names`` carries both languages."""
    return catalogue.list_exam_types(caller, language=pick_language(lang, accept_language))


def install_order_error_handlers(app: FastAPI) -> None:
    """422 problem+json with the per-field ``errors`` list for :class:`orders.OrderInvalid`."""

    def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, orders.OrderInvalid)
        body = problem_body(422, "Unprocessable Content", str(exc), exc.code)
        body["errors"] = [asdict(e) for e in exc.errors]
        return JSONResponse(body, status_code=422, media_type=PROBLEM_JSON)

    app.add_exception_handler(orders.OrderInvalid, handler)
