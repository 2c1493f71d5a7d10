"""The gateways' report routes (docs/clinic-return.md, "Hub API for gateways"): the long-poll
of signed reports, the PDF and its Encapsulated PDF instance, the receipt, acknowledgements
made on the LAN page, and the clinic's staff for offline sign-in. Thin: parse, call one
function of :mod:`imaging_hub.worklist.reports.delivery`, answer.

The long-poll is a coroutine: it gives back the request's database session before it waits
(each check takes a short session of its own in a worker thread), so a waiting gateway holds
neither a connection nor a thread.
"""

from datetime import datetime
from typing import Annotated

import anyio
from fastapi import APIRouter, FastAPI, Header, Path, Query, Request
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, Field

from imaging_hub.worklist.access.accounts import USERNAME_PATTERN
from imaging_hub.worklist.db.models import Gateway
from imaging_hub.worklist.http.deps import CallerDep, SessionDep, StateDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.http.problems import problem
from imaging_hub.worklist.reports import delivery
from imaging_hub.worklist.reports.delivery import InvalidGatewayAcknowledgement
from imaging_hub.worklist.reports.service import AckMethod

router = APIRouter(tags=["gateways"])

ReportId = Annotated[int, Path(ge=1, le=2**31 - 1)]
GatewayDep = Annotated[Gateway, require("gateway.reports")]


class ReportFeedOut(BaseModel):
    reports: list[delivery.DeliveryItem]


class ReceivedIn(BaseModel):
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256 of the PDF held.")


class ReceivedOut(BaseModel):
    id: int
    delivered_at: datetime


class GatewayAcknowledgeIn(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=USERNAME_PATTERN)
    method: AckMethod
    read_back: str = Field(min_length=1, max_length=4000)
    acknowledged_at: AwareDatetime = Field(description="When, on the gateway's clock (with zone).")
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="SHA-256 of the PDF acknowledged: another report's → 409 checksum_mismatch.",
    )


class GatewayAcknowledgementOut(BaseModel):
    id: int
    acknowledged_at: datetime
    acknowledged_by: str
    acknowledged_via: str
    acknowledgement_method: str
    recorded: bool = Field(description="False: acknowledged before; nothing changed.")


class HubAcknowledgementOut(BaseModel):
    id: int
    sha256: str
    acknowledged_at: datetime
    acknowledged_by: str = Field(description="The clinic user's display name.")
    via: str = Field(description="`portal` or `gateway` (the LAN page).")
    method: str


class AcknowledgementsOut(BaseModel):
    acknowledgements: list[HubAcknowledgementOut]


class StaffAccountOut(BaseModel):
    username: str
    display_name: str
    password_hash: str


class StaffOut(BaseModel):
    clinic_name: str = Field(description="The clinic's name, as the hub's pages show it.")
    staff: list[StaffAccountOut]


@router.get("/api/v1/gateway/reports", response_model=ReportFeedOut)
async def get_gateway_reports(
    request: Request,
    _: GatewayDep,
    session: SessionDep,
    caller: CallerDep,
    state: StateDep,
    wait: Annotated[float, Query(ge=0, le=delivery.MAX_WAIT, allow_inf_nan=False)] = 0,
) -> ReportFeedOut:
    """The clinic's signed reports and addenda not yet confirmed by a gateway, oldest first,
    at most 50; with ``wait`` (seconds, ≤ 30) it answers as soon as there is one, else an
    empty list when the time is up (long-poll)."""
    await anyio.to_thread.run_sync(session.close)  # nothing held while waiting
    items = await delivery.wait_for_reports(
        state.sessions,
        caller,
        wait=wait,
        batcher=state.access_batcher,
        gone=request.is_disconnected,
    )
    return ReportFeedOut(reports=items)


@router.get("/api/v1/gateway/reports/acknowledgements", response_model=AcknowledgementsOut)
def get_gateway_report_acknowledgements(
    _: GatewayDep,
    session: SessionDep,
    caller: CallerDep,
    ids: Annotated[
        str,
        Query(
            max_length=1200,
            pattern=r"^[0-9]{1,10}(,[0-9]{1,10})*$",
            description="Comma-separated report ids (at most 100): the critical results the "
            "gateway holds open.",
        ),
    ] = "",
) -> AcknowledgementsOut:
    """Of the named reports of the gateway's clinic, those acknowledged at the hub (portal or
    LAN page): when, by whom, where. Others are left out."""
    report_ids = [int(part) for part in ids.split(",")] if ids else []
    found = delivery.acknowledgements(session, caller, report_ids)
    return AcknowledgementsOut(
        acknowledgements=[
            HubAcknowledgementOut(
                id=a.report_id,
                sha256=a.sha256,
                acknowledged_at=a.acknowledged_at,
                acknowledged_by=a.acknowledged_by,
                via=a.acknowledged_via,
                method=a.acknowledgement_method,
            )
            for a in found
        ]
    )


@router.get(
    "/api/v1/gateway/reports/{report_id}/pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}, "description": "The signed PDF."}},
)
def get_gateway_report_pdf(
    report_id: ReportId, _: GatewayDep, session: SessionDep, caller: CallerDep, state: StateDep
) -> Response:
    """The signed PDF, byte for byte (its SHA-256 in the ETag)."""
    pdf = delivery.get_pdf(session, caller, report_id, store=state.store)
    return Response(
        pdf.data,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{pdf.filename}"',
            "ETag": f'"{pdf.sha256}"',
            "Cache-Control": "private, no-store",
        },
    )


@router.get(
    "/api/v1/gateway/reports/{report_id}/dicom",
    response_class=Response,
    responses={
        200: {
            "content": {"application/dicom": {}},
            "description": "The Encapsulated PDF instance (DICOM Part 10).",
        }
    },
)
def get_gateway_report_dicom(
    report_id: ReportId, _: GatewayDep, session: SessionDep, caller: CallerDep, state: StateDep
) -> Response:
    """The Encapsulated PDF instance the hub stored into the study at signing."""
    found = delivery.get_dicom(session, caller, report_id, store=state.store)
    return Response(
        found.data,
        media_type="application/dicom",
        headers={
            "Content-Disposition": f'attachment; filename="{found.filename}"',
            "Cache-Control": "private, no-store",
        },
    )


@router.post("/api/v1/gateway/reports/{report_id}/received", response_model=ReceivedOut)
def post_gateway_report_received(
    report_id: ReportId, payload: ReceivedIn, _: GatewayDep, session: SessionDep, caller: CallerDep
) -> ReceivedOut:
    """The gateway holds the signed PDF: ``delivered`` (once; repeats answer the same time)."""
    done = delivery.confirm_received(session, caller, report_id, sha256=payload.sha256)
    return ReceivedOut(id=done.report_id, delivered_at=done.delivered_at)


@router.post(
    "/api/v1/gateway/reports/{report_id}/acknowledge", response_model=GatewayAcknowledgementOut
)
def post_gateway_report_acknowledge(
    report_id: ReportId,
    payload: GatewayAcknowledgeIn,
    _: GatewayDep,
    session: SessionDep,
    caller: CallerDep,
) -> GatewayAcknowledgementOut:
    """A critical result acknowledged by a clinic user on the gateway's LAN page (the first
    acknowledgement wins; a repeat answers it and changes nothing)."""
    ack = delivery.acknowledge(
        session,
        caller,
        report_id,
        username=payload.username,
        method=payload.method,
        read_back=payload.read_back,
        acknowledged_at=payload.acknowledged_at,
        sha256=payload.sha256,
    )
    return GatewayAcknowledgementOut(
        id=ack.report_id,
        acknowledged_at=ack.acknowledged_at,
        acknowledged_by=ack.acknowledged_by,
        acknowledged_via=ack.acknowledged_via,
        acknowledgement_method=ack.acknowledgement_method,
        recorded=ack.recorded,
    )


@router.get(
    "/api/v1/gateway/staff",
    response_model=StaffOut,
    responses={304: {"description": "The gateway's list (If-None-Match) is current."}},
)
def get_gateway_staff(
    _: GatewayDep,
    session: SessionDep,
    caller: CallerDep,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Response:
    """The clinic's active staff accounts with their argon2 hashes (the LAN page's offline
    sign-in); ``ETag`` / ``If-None-Match`` → 304 while unchanged."""
    found = delivery.staff_credentials(session, caller, if_none_match=if_none_match)
    headers = {"ETag": f'"{found.etag}"', "Cache-Control": "private, no-store"}
    if found.unchanged:
        return Response(status_code=304, headers=headers)
    body = StaffOut(
        clinic_name=found.clinic_name, staff=[StaffAccountOut(**vars(s)) for s in found.staff]
    )
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)


def install_delivery_error_handlers(app: FastAPI) -> None:
    """422 for an acknowledgement the hub cannot record (its code says why)."""

    def handler(request: Request, exc: Exception) -> Response:
        return problem(
            422, "Unprocessable Content", str(exc), code=str(getattr(exc, "code", "error"))
        )

    app.add_exception_handler(InvalidGatewayAcknowledgement, handler)
