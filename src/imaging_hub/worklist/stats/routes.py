"""``GET /api/v1/stats/...``: volume, turnaround, SLA compliance and workload for managers.

Query parameters ``start`` and ``end`` are local calendar dates (inclusive) in the hub's time
zone; the default window is the last 30 days.
"""

from datetime import date, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends

from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.http.deps import CallerDep, SessionDep, StateDep
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
Reader = Annotated[User, require("stats.read")]


@router.get("/volume", response_model=stats.VolumeReport)
def get_volume(
    session: SessionDep, _: Reader, caller: CallerDep, w: WindowDep
) -> stats.VolumeReport:
    """Studies received per clinic per local day."""
    return stats.volume_report(session, caller, window=w)


@router.get("/turnaround", response_model=stats.TurnaroundReport)
def get_turnaround(
    session: SessionDep, _: Reader, caller: CallerDep, w: WindowDep
) -> stats.TurnaroundReport:
    """Complete-to-signed minutes (p50/p90/p95) by priority, for studies signed in the window."""
    return stats.turnaround_report(session, caller, window=w)


@router.get("/sla", response_model=stats.SlaReport)
def get_sla(session: SessionDep, _: Reader, caller: CallerDep, w: WindowDep) -> stats.SlaReport:
    """SLA compliance by priority, for studies completed in the window."""
    return stats.sla_report(session, caller, window=w)


@router.get("/workload", response_model=stats.WorkloadReport)
def get_workload(
    session: SessionDep, _: Reader, caller: CallerDep, w: WindowDep
) -> stats.WorkloadReport:
    """Per radiologist: claims and signatures in the window, studies held now."""
    return stats.workload_report(session, caller, window=w)
