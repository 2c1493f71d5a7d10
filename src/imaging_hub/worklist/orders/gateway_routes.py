"""The clinic gateways' order API (gateway token, permission ``gateway.orders``):
``GET /api/v1/gateway/orders`` (the order feed, ETag / If-None-Match) and
``POST /api/v1/gateway/mpps/{mpps_sop_instance_uid}`` (the MPPS intake). Thin edge over
:mod:`imaging_hub.worklist.orders.feed`; the contract is in docs/clinic-return.md."""

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from imaging_hub.worklist.db.models import Gateway
from imaging_hub.worklist.http.deps import CallerDep, SessionDep, StateDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.orders import feed

router = APIRouter(prefix="/api/v1/gateway", tags=["gateway"])

GatewayOrders = Annotated[Gateway, require("gateway.orders")]


class FeedOut(BaseModel):
    orders: list[feed.FeedOrder]
    as_of: datetime


class MppsIn(BaseModel):
    """One MPPS message as the gateway received it (N-CREATE or N-SET)."""

    model_config = ConfigDict(extra="ignore")

    status: str = Field(max_length=32, description="IN PROGRESS, COMPLETED or DISCONTINUED")
    accession_number: str = Field(default="", max_length=64)
    study_instance_uid: str = Field(default="", max_length=128)
    reason: str = Field(default="", max_length=1000, description="Why it was discontinued.")
    performed_at: str = Field(default="", max_length=64, description="ISO 8601.")
    images: int | list[str] | None = Field(
        default=None, description="The SOP Instance UIDs the step made, or their number."
    )


class MppsOut(BaseModel):
    order_id: int | None
    status: Literal["scheduled", "in_progress", "completed", "discontinued", "cancelled"] | None
    mpps_status: str


@router.get(
    "/orders",
    response_model=FeedOut,
    responses={304: {"description": "The snapshot is unchanged (If-None-Match)."}},
)
def get_order_feed(
    _: GatewayOrders,
    caller: CallerDep,
    session: SessionDep,
    state: StateDep,
    response: Response,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> FeedOut | Response:
    """The gateway's clinic's orders a modality may still need, as one snapshot."""
    snapshot = feed.order_feed(session, caller, batcher=state.access_batcher)
    headers = {"ETag": snapshot.etag, "Cache-Control": "no-cache"}
    if if_none_match is not None and snapshot.etag in [
        tag.strip().removeprefix("W/") for tag in if_none_match.split(",")
    ]:
        return Response(status_code=304, headers=headers)
    response.headers.update(headers)
    return FeedOut(orders=snapshot.orders, as_of=snapshot.as_of)


@router.post("/mpps/{mpps_sop_instance_uid}", response_model=MppsOut)
def post_mpps(
    mpps_sop_instance_uid: Annotated[str, Path(max_length=128)],
    payload: MppsIn,
    _: GatewayOrders,
    caller: CallerDep,
    session: SessionDep,
) -> MppsOut:
    """A Modality Performed Procedure Step the gateway received: moves the matching order."""
    result = feed.record_mpps(
        session, caller, mpps_sop_instance_uid, feed.MppsReport(**payload.model_dump())
    )
    return MppsOut(
        order_id=result.order_id,
        status=result.status.value if result.status is not None else None,
        mpps_status=result.mpps_status,
    )
