"""Gateway heartbeat (``POST /api/v1/gateways/heartbeat``, gateway token) and the admin view
of all gateways (``GET /api/v1/admin/gateways``, admin users only)."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from imaging_hub.worklist.db.models import Gateway
from imaging_hub.worklist.gateways.heartbeats import list_gateways, record_heartbeat
from imaging_hub.worklist.http.deps import SessionDep, StateDep
from imaging_hub.worklist.http.permissions import require

router = APIRouter(tags=["gateways"])

Count = Annotated[int, Field(ge=0, le=10**15)]
Seconds = Annotated[float, Field(ge=0, le=10**11)]


class ParkedStudyIn(BaseModel):
    """A study the gateway parked: the hub refused it (or its instances) for good."""

    model_config = ConfigDict(extra="ignore")

    study_instance_uid: str = Field(max_length=64)
    code: str = Field(default="", max_length=64, description="The hub's problem+json code.")
    reason: str = Field(default="", max_length=2000, description="The hub's detail.")
    instances: Count = Field(default=0, description="Parked instances of the study.")
    parked_at: Seconds | None = None
    next_try_at: Seconds | None = Field(
        default=None, description="Unix time of the next try on the parking schedule."
    )


class HeartbeatIn(BaseModel):
    """What a gateway reports about itself. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    version: str = Field(max_length=64)
    ae_title: str = Field(default="", max_length=16)
    queue_depth: Count = Field(description="Instances waiting to be forwarded.")
    bytes_pending: Count = Field(description="Bytes waiting to be forwarded.")
    failed: Count = Field(default=0, description="Instances parked after a permanent refusal.")
    open_studies: Count = 0
    parked_studies: Count = Field(default=0, description="Studies parked by the gateway.")
    parked: list[ParkedStudyIn] = Field(
        default_factory=list,
        max_length=200,
        description="Parked studies with their reason (the most recent first).",
    )
    sent: Count = 0
    received: Count = 0
    refused: Count = 0
    last_success_at: Seconds | None = Field(
        default=None, description="Unix time of the last instance the hub confirmed."
    )
    last_error: str = Field(default="", max_length=2000)
    last_error_at: Seconds | None = None
    uplink_bytes_per_second: Annotated[float, Field(ge=0, le=1e12)] = Field(
        default=0.0, description="Upload throughput measured over the last minute."
    )
    spool_full: bool = Field(
        default=False,
        description="Free space on the spool's file system is below its floor: new instances "
        "are refused with Out of Resources (0xA700).",
    )
    spool_free_bytes: Count | None = None
    spool_min_free_bytes: Count | None = None
    refused_no_space: Count = Field(default=0, description="C-STOREs refused for space, total.")
    orders_cached: Count | None = Field(default=None, description="Orders in the MWL cache.")
    orders_synced_at: Seconds | None = Field(
        default=None, description="Unix time the order cache was last confirmed by the hub."
    )
    orders_sync_error: str = Field(default="", max_length=2000)
    mpps_outbox: Count | None = Field(default=None, description="MPPS states not yet sent.")
    reports_held: Count | None = Field(default=None, description="Signed reports held.")
    reports_unconfirmed: Count | None = None
    reports_waiting_for_node: Count | None = Field(
        default=None, description="Reports not yet stored to the clinic's DICOM node."
    )
    reports_critical_open: Count | None = None
    acknowledgements_waiting: Count | None = Field(
        default=None, description="Critical-result acknowledgements not yet at the hub."
    )
    staff_verifiers: Count | None = None


class GatewayOut(BaseModel):
    name: str
    clinic: str
    clinic_name: str
    ae_title: str
    revoked: bool
    last_seen_at: datetime | None
    seconds_since_seen: float | None
    silent: bool = Field(description="No heartbeat for longer than the silence alarm.")
    status: dict[str, Any] = Field(description="The gateway's last heartbeat.")


class ClinicBacklogOut(BaseModel):
    clinic: str
    clinic_name: str
    gateways: int
    silent_gateways: int
    queue_depth: int
    bytes_pending: int
    failed: int
    parked_studies: int


class GatewaysOut(BaseModel):
    silence_alarm_seconds: int
    gateways: list[GatewayOut]
    clinics: list[ClinicBacklogOut]
    alarm: bool = Field(description="Whether any active gateway is silent.")


@router.post("/api/v1/gateways/heartbeat", status_code=204)
def post_heartbeat(
    payload: HeartbeatIn,
    gateway: Annotated[Gateway, require("gateway.heartbeat")],
    session: SessionDep,
) -> Response:
    record_heartbeat(session, gateway=gateway, status=payload.model_dump())
    return Response(status_code=204)


@router.get(
    "/api/v1/admin/gateways",
    response_model=GatewaysOut,
    dependencies=[require("admin.gateways")],
)
def get_gateways(session: SessionDep, state: StateDep) -> GatewaysOut:
    seconds = state.settings.gateway_silence_alarm_seconds
    views, clinics = list_gateways(session, silence_alarm_seconds=seconds)
    return GatewaysOut(
        silence_alarm_seconds=seconds,
        gateways=[GatewayOut(**vars(v)) for v in views],
        clinics=[
            ClinicBacklogOut(
                clinic=c.clinic,
                clinic_name=c.clinic_name,
                gateways=c.gateways,
                silent_gateways=c.silent_gateways,
                queue_depth=c.queue_depth,
                bytes_pending=c.bytes_pending,
                failed=c.failed,
                parked_studies=c.parked_studies,
            )
            for c in clinics
        ],
        alarm=any(v.silent for v in views),
    )
