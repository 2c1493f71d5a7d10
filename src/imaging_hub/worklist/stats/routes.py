"""``GET /api/v1/stats/...``: volume, turnaround, SLA compliance and workload for managers.

Query parameters ``start`` and ``end`` are local calendar dates (inclusive) in the hub's time
zone; the default window is the last 30 days.
"""

from datetime import date, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from imaging_hub.worklist.db.models import Priority, User
from imaging_hub.worklist.http.deps import SessionDep, StateDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.reading.assignment import utcnow
from imaging_hub.worklist.stats import stats

router = APIRouter(prefix="/api/v1/stats", tags=["stats"])


def window(state: StateDep, start: date | None = None, end: date | None = None) -> stats.Window:
    tz = ZoneInfo(state.settings.timezone)
    end = end or utcnow().astimezone(tz).date()
    start = start or end - timedelta(days=29)
    return stats.Window.of(start=start, end=end, tz=tz)


WindowDep = Annotated[stats.Window, Depends(window)]


class WindowOut(BaseModel):
    start: date
    end: date
    timezone: str


class VolumeRowOut(BaseModel):
    day: date
    clinic: str
    studies: int


class VolumeOut(BaseModel):
    window: WindowOut
    rows: list[VolumeRowOut]


class TurnaroundRowOut(BaseModel):
    priority: Priority
    count: int
    p50_minutes: float | None
    p90_minutes: float | None
    p95_minutes: float | None


class TurnaroundOut(BaseModel):
    window: WindowOut
    rows: list[TurnaroundRowOut]


class SlaRowOut(BaseModel):
    priority: Priority
    due: int
    met: int
    missed: int
    pending: int
    compliance: float | None


class SlaOut(BaseModel):
    window: WindowOut
    rows: list[SlaRowOut]


class WorkloadRowOut(BaseModel):
    username: str
    display_name: str
    claimed: int
    signed: int
    in_progress: int
    escalated: int


class WorkloadOut(BaseModel):
    window: WindowOut
    rows: list[WorkloadRowOut]
    generated_at: datetime


def _window_out(w: stats.Window) -> WindowOut:
    return WindowOut(start=w.start, end=w.end, timezone=str(w.tz))


@router.get("/volume", response_model=VolumeOut)
def get_volume(
    session: SessionDep, user: Annotated[User, require("stats.read")], w: WindowDep
) -> VolumeOut:
    """Studies received per clinic per local day."""
    rows = [
        VolumeRowOut.model_validate(r, from_attributes=True)
        for r in stats.volume(session, window=w)
    ]
    return VolumeOut(window=_window_out(w), rows=rows)


@router.get("/turnaround", response_model=TurnaroundOut)
def get_turnaround(
    session: SessionDep, user: Annotated[User, require("stats.read")], w: WindowDep
) -> TurnaroundOut:
    """Complete-to-signed minutes (p50/p90/p95) by priority, for studies signed in the window."""
    rows = [
        TurnaroundRowOut.model_validate(r, from_attributes=True)
        for r in stats.turnaround(session, window=w)
    ]
    return TurnaroundOut(window=_window_out(w), rows=rows)


@router.get("/sla", response_model=SlaOut)
def get_sla(
    session: SessionDep, user: Annotated[User, require("stats.read")], w: WindowDep
) -> SlaOut:
    """SLA compliance by priority, for studies completed in the window."""
    rows = [
        SlaRowOut.model_validate(r, from_attributes=True)
        for r in stats.sla_compliance(session, window=w, now=utcnow())
    ]
    return SlaOut(window=_window_out(w), rows=rows)


@router.get("/workload", response_model=WorkloadOut)
def get_workload(
    session: SessionDep, user: Annotated[User, require("stats.read")], w: WindowDep
) -> WorkloadOut:
    """Per radiologist: claims and signatures in the window, studies held now."""
    now = utcnow()
    rows = [
        WorkloadRowOut.model_validate(r, from_attributes=True)
        for r in stats.workload(session, window=w, now=now)
    ]
    return WorkloadOut(window=_window_out(w), rows=rows, generated_at=now)
