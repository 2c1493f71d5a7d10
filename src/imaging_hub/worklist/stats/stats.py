"""Statistics for the hub's managers: volume, turnaround, SLA compliance, workload.

All figures cover a window of local calendar days ``[start, end]`` (inclusive) in the hub's time
zone (``HubSettings.timezone``, default Asia/Shanghai): a study received at 23:30 local time
counts for that local day, not for the UTC one. Aggregation over the window's rows is done here
in Python, so the answers are identical on SQLite and PostgreSQL.
"""

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imaging_hub.errors import Conflict
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import Permission
from imaging_hub.worklist.db.models import (
    Institution,
    Priority,
    Role,
    Study,
    StudyEvent,
    StudyStatus,
    User,
)
from imaging_hub.worklist.reading.assignment import OPEN_STATUSES

MAX_WINDOW_DAYS = 366
PERCENTILES = (50, 90, 95)


class InvalidWindow(Conflict):
    """The statistics window is empty, reversed or too long."""

    code = "invalid_window"


@dataclass(frozen=True)
class Window:
    start: date
    end: date
    tz: ZoneInfo

    @classmethod
    def of(cls, *, start: date, end: date, tz: ZoneInfo) -> "Window":
        if end < start:
            raise InvalidWindow("The window ends before it starts.")
        if (end - start).days + 1 > MAX_WINDOW_DAYS:
            raise InvalidWindow(f"The window is longer than {MAX_WINDOW_DAYS} days.")
        return cls(start, end, tz)

    @property
    def lo(self) -> datetime:
        return datetime.combine(self.start, time(), self.tz).astimezone(UTC)

    @property
    def hi(self) -> datetime:
        return datetime.combine(self.end + timedelta(days=1), time(), self.tz).astimezone(UTC)

    def day(self, at: datetime) -> date:
        return at.astimezone(self.tz).date()

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]


def percentile(sorted_values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (the NumPy default)."""
    if not sorted_values:
        raise ValueError("No values.")
    k = (len(sorted_values) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


@dataclass(frozen=True)
class VolumeRow:
    day: date
    clinic: str
    studies: int


def volume(session: Session, *, window: Window) -> list[VolumeRow]:
    """Studies received per clinic per local day (days without studies are left out)."""
    rows = session.execute(
        select(Institution.code, Study.received_at)
        .join(Institution, Study.clinic_id == Institution.id)
        .where(Study.received_at >= window.lo, Study.received_at < window.hi)
    ).all()
    counts: Counter[tuple[date, str]] = Counter((window.day(at), code) for code, at in rows)
    return [VolumeRow(day=d, clinic=c, studies=n) for (d, c), n in sorted(counts.items())]


@dataclass(frozen=True)
class TurnaroundRow:
    priority: Priority
    count: int
    p50_minutes: float | None
    p90_minutes: float | None
    p95_minutes: float | None


def turnaround(session: Session, *, window: Window) -> list[TurnaroundRow]:
    """Minutes from complete to signed, by priority, for studies signed in the window."""
    rows = session.execute(
        select(Study.priority, Study.completed_at, Study.signed_at).where(
            Study.signed_at >= window.lo,
            Study.signed_at < window.hi,
            Study.completed_at.is_not(None),
        )
    ).all()
    by_priority: dict[Priority, list[float]] = defaultdict(list)
    for priority, completed, signed in rows:
        if completed is None or signed is None:
            continue
        by_priority[priority].append((signed - completed).total_seconds() / 60)
    out: list[TurnaroundRow] = []
    for priority in Priority:
        values = sorted(by_priority.get(priority, []))
        p50, p90, p95 = (
            (round(percentile(values, p), 1) for p in PERCENTILES) if values else (None, None, None)
        )
        out.append(TurnaroundRow(priority, len(values), p50, p90, p95))
    return out


@dataclass(frozen=True)
class SlaRow:
    priority: Priority
    due: int  # studies completed (and so given a due time) in the window
    met: int  # signed by their due time
    missed: int  # signed late, or still open after their due time
    pending: int  # open and not yet due
    compliance: float | None  # met / (met + missed)


def sla_compliance(session: Session, *, window: Window, now: datetime) -> list[SlaRow]:
    """For studies completed in the window: signed on time, late, or still pending, by priority."""
    rows = session.execute(
        select(Study.priority, Study.status, Study.due_at, Study.signed_at).where(
            Study.completed_at >= window.lo, Study.completed_at < window.hi
        )
    ).all()
    tally: dict[Priority, Counter[str]] = defaultdict(Counter)
    for priority, status, due_at, signed_at in rows:
        if status == StudyStatus.cancelled or due_at is None:
            continue
        t = tally[priority]
        t["due"] += 1
        if signed_at is not None:
            t["met" if signed_at <= due_at else "missed"] += 1
        elif status in OPEN_STATUSES and due_at < now:
            t["missed"] += 1
        else:
            t["pending"] += 1
    out: list[SlaRow] = []
    for priority in Priority:
        t = tally.get(priority, Counter())
        decided = t["met"] + t["missed"]
        out.append(
            SlaRow(
                priority=priority,
                due=t["due"],
                met=t["met"],
                missed=t["missed"],
                pending=t["pending"],
                compliance=round(t["met"] / decided, 4) if decided else None,
            )
        )
    return out


@dataclass(frozen=True)
class WorkloadRow:
    username: str
    display_name: str
    claimed: int  # claims (next, claim, assignment) in the window
    signed: int  # studies signed in the window
    in_progress: int  # held right now
    escalated: int  # awaiting a consultant's opinion right now


def workload(session: Session, *, window: Window, now: datetime) -> list[WorkloadRow]:
    """Per radiologist: claims and signatures in the window, and what each holds now."""
    users = list(
        session.scalars(select(User).where(User.role == Role.radiologist).order_by(User.username))
    )
    ids = [u.id for u in users]
    claimed = dict(
        session.execute(
            select(StudyEvent.actor_id, func.count(StudyEvent.id))
            .where(
                StudyEvent.kind == "claimed",
                StudyEvent.actor_id.in_(ids),
                StudyEvent.at >= window.lo,
                StudyEvent.at < window.hi,
            )
            .group_by(StudyEvent.actor_id)
        ).all()
    )
    signed = dict(
        session.execute(
            select(Study.assigned_to_id, func.count(Study.id))
            .where(
                Study.assigned_to_id.in_(ids),
                Study.signed_at >= window.lo,
                Study.signed_at < window.hi,
            )
            .group_by(Study.assigned_to_id)
        ).all()
    )
    held: dict[tuple[int, StudyStatus], int] = {}
    for uid, status, lease_expires_at in session.execute(
        select(Study.assigned_to_id, Study.status, Study.lease_expires_at).where(
            Study.assigned_to_id.in_(ids),
            Study.status.in_([StudyStatus.in_progress, StudyStatus.escalated]),
        )
    ):
        if uid is None or (
            status == StudyStatus.in_progress and lease_expires_at and lease_expires_at < now
        ):
            continue  # an expired claim is unread (lazy expiry)
        held[(uid, status)] = held.get((uid, status), 0) + 1
    return [
        WorkloadRow(
            username=u.username,
            display_name=u.display_name,
            claimed=int(claimed.get(u.id, 0)),
            signed=int(signed.get(u.id, 0)),
            in_progress=held.get((u.id, StudyStatus.in_progress), 0),
            escalated=held.get((u.id, StudyStatus.escalated), 0),
        )
        for u in users
    ]


# --- the managers' reports (what the API answers) --------------------------------------------


@dataclass(frozen=True)
class WindowInfo:
    start: date
    end: date
    timezone: str

    @classmethod
    def of(cls, window: Window) -> "WindowInfo":
        return cls(start=window.start, end=window.end, timezone=str(window.tz))


@dataclass(frozen=True)
class VolumeReport:
    window: WindowInfo
    rows: list[VolumeRow]


@dataclass(frozen=True)
class TurnaroundReport:
    window: WindowInfo
    rows: list[TurnaroundRow]


@dataclass(frozen=True)
class SlaReport:
    window: WindowInfo
    rows: list[SlaRow]


@dataclass(frozen=True)
class WorkloadReport:
    window: WindowInfo
    rows: list[WorkloadRow]
    generated_at: datetime


def volume_report(session: Session, caller: Caller, *, window: Window) -> VolumeReport:
    """Studies received per clinic per local day (no patient data)."""
    caller.require(Permission.stats_read)
    return VolumeReport(WindowInfo.of(window), volume(session, window=window))


def turnaround_report(session: Session, caller: Caller, *, window: Window) -> TurnaroundReport:
    """Complete-to-signed minutes by priority, for studies signed in the window."""
    caller.require(Permission.stats_read)
    return TurnaroundReport(WindowInfo.of(window), turnaround(session, window=window))


def sla_report(
    session: Session, caller: Caller, *, window: Window, now: datetime | None = None
) -> SlaReport:
    """SLA compliance by priority, for studies completed in the window."""
    caller.require(Permission.stats_read)
    now = now or datetime.now(UTC)
    return SlaReport(WindowInfo.of(window), sla_compliance(session, window=window, now=now))


def workload_report(
    session: Session, caller: Caller, *, window: Window, now: datetime | None = None
) -> WorkloadReport:
    """Per radiologist: claims and signatures in the window, studies held now."""
    caller.require(Permission.stats_read)
    now = now or datetime.now(UTC)
    return WorkloadReport(WindowInfo.of(window), workload(session, window=window, now=now), now)
