"""The hub's Prometheus metrics: what an operator alerts on.

``GET /metrics`` (public, like ``/healthz``: counts, ages, gateway names and clinic codes, no
patient data) answers these, read from the database, so every hub worker gives the same
figures. The alert rules in ``deploy/prometheus/alerts.yml`` use them (docs/operations.md):

- ``imaging_hub_studies{status}`` — studies by lifecycle status;
- ``imaging_hub_studies_overdue{priority}`` — open studies (unread, being read, with a
  consultant) past their due time;
- ``imaging_hub_reports_undelivered`` / ``..._oldest_seconds`` — signed reports and addenda no
  gateway has confirmed yet, and the age of the oldest;
- ``imaging_hub_critical_results_open`` / ``..._oldest_seconds`` — signed critical results no
  clinic user has acknowledged;
- per gateway (not revoked), as its last heartbeat told: ``imaging_hub_heartbeat_timestamp_seconds``
  (0: never), ``imaging_hub_heartbeat_queue_depth``, ``..._parked_studies``, ``..._spool_full``.
  The gateways sit behind the clinics' NAT where no Prometheus reaches them: the hub's view of
  their heartbeats is what alerts (a gateway's own ``imaging_hub_gateway_*`` metrics serve a
  scraper on the clinic LAN);
- ``imaging_hub_info{version}``.

The queries run at most once per :data:`CACHE_SECONDS` per worker: a scraper hammering the
public endpoint costs the database nothing more.
"""

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from imaging_hub import __version__
from imaging_hub.worklist.db.models import (
    Gateway,
    Institution,
    Priority,
    Report,
    ReportStatus,
    Study,
    StudyStatus,
)

CACHE_SECONDS = 5.0
OPEN_STATES = (StudyStatus.unread, StudyStatus.in_progress, StudyStatus.escalated)


@dataclass(frozen=True)
class GatewayFigures:
    name: str
    clinic: str
    last_seen: float
    queue_depth: float
    parked_studies: float
    spool_full: float


@dataclass(frozen=True)
class HubFigures:
    studies: dict[str, int]
    overdue: dict[str, int]
    undelivered: int
    undelivered_oldest: float
    critical_open: int
    critical_oldest: float
    gateways: list[GatewayFigures]


def _age(oldest: datetime | None, now: datetime) -> float:
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return max(0.0, (now - oldest).total_seconds())


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def read_figures(session: Session, now: datetime) -> HubFigures:
    """The figures of :mod:`this module <imaging_hub.worklist.stats.metrics>`, five queries."""
    studies = {status.value: 0 for status in StudyStatus}
    for status, count in session.execute(select(Study.status, func.count()).group_by(Study.status)):
        studies[StudyStatus(status).value] = int(count)
    overdue = {priority.value: 0 for priority in Priority}
    for priority, count in session.execute(
        select(Study.priority, func.count())
        .where(Study.status.in_(OPEN_STATES), Study.due_at < now)
        .group_by(Study.priority)
    ):
        overdue[Priority(priority).value] = int(count)
    signed = Report.status == ReportStatus.signed
    undelivered, undelivered_oldest = session.execute(
        select(func.count(), func.min(Report.signed_at)).where(
            signed, Report.delivered_at.is_(None)
        )
    ).one()
    critical, critical_oldest = session.execute(
        select(func.count(), func.min(Report.signed_at)).where(
            signed, Report.critical.is_(True), Report.acknowledged_at.is_(None)
        )
    ).one()
    gateways = []
    for gateway, clinic in session.execute(
        select(Gateway, Institution.code)
        .join(Institution, Gateway.institution_id == Institution.id)
        .where(Gateway.revoked_at.is_(None))
        .order_by(Gateway.name)
    ):
        heartbeat = gateway.status or {}
        seen = gateway.last_seen_at
        if seen is not None and seen.tzinfo is None:
            seen = seen.replace(tzinfo=UTC)
        gateways.append(
            GatewayFigures(
                name=gateway.name,
                clinic=clinic,
                last_seen=seen.timestamp() if seen is not None else 0.0,
                queue_depth=_number(heartbeat.get("queue_depth")),
                parked_studies=_number(heartbeat.get("parked_studies")),
                spool_full=1.0 if heartbeat.get("spool_full") is True else 0.0,
            )
        )
    return HubFigures(
        studies=studies,
        overdue=overdue,
        undelivered=int(undelivered),
        undelivered_oldest=_age(undelivered_oldest, now),
        critical_open=int(critical),
        critical_oldest=_age(critical_oldest, now),
        gateways=gateways,
    )


class HubCollector(Collector):
    """Prometheus collector of the hub's figures (cached for :data:`CACHE_SECONDS`)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._cached: tuple[float, HubFigures] | None = None

    def figures(self) -> HubFigures:
        with self._lock:
            if self._cached is not None and self._clock() - self._cached[0] < CACHE_SECONDS:
                return self._cached[1]
            with self._sessions() as session:
                figures = read_figures(session, self._now())
            self._cached = (self._clock(), figures)
            return figures

    def collect(self) -> Iterator[Metric]:
        figures = self.figures()
        studies = GaugeMetricFamily(
            "imaging_hub_studies", "Studies by lifecycle status.", labels=["status"]
        )
        for status, count in figures.studies.items():
            studies.add_metric([status], count)
        yield studies
        overdue = GaugeMetricFamily(
            "imaging_hub_studies_overdue",
            "Open studies (unread, being read, with a consultant) past their due time.",
            labels=["priority"],
        )
        for priority, count in figures.overdue.items():
            overdue.add_metric([priority], count)
        yield overdue
        for name, doc, value in (
            (
                "reports_undelivered",
                "Signed reports and addenda no clinic gateway has confirmed yet.",
                figures.undelivered,
            ),
            (
                "reports_undelivered_oldest_seconds",
                "Age of the oldest signed report not yet at its clinic's gateway (0: none).",
                figures.undelivered_oldest,
            ),
            (
                "critical_results_open",
                "Signed critical results no clinic user has acknowledged.",
                figures.critical_open,
            ),
            (
                "critical_results_oldest_seconds",
                "Age of the oldest unacknowledged critical result (0: none).",
                figures.critical_oldest,
            ),
        ):
            gauge = GaugeMetricFamily(f"imaging_hub_{name}", doc)
            gauge.add_metric([], float(value))
            yield gauge
        labels = ["gateway", "clinic"]
        families = {
            "last_seen_timestamp_seconds": GaugeMetricFamily(
                "imaging_hub_heartbeat_timestamp_seconds",
                "Unix time of the gateway's last heartbeat (0: never).",
                labels=labels,
            ),
            "queue_depth": GaugeMetricFamily(
                "imaging_hub_heartbeat_queue_depth",
                "Instances waiting at the gateway (its last heartbeat).",
                labels=labels,
            ),
            "parked_studies": GaugeMetricFamily(
                "imaging_hub_heartbeat_parked_studies",
                "Studies the gateway parked after a refusal (its last heartbeat).",
                labels=labels,
            ),
            "spool_full": GaugeMetricFamily(
                "imaging_hub_heartbeat_spool_full",
                "1 while the gateway refuses instances for lack of space (its last heartbeat).",
                labels=labels,
            ),
        }
        for gw in figures.gateways:
            values = (gw.last_seen, gw.queue_depth, gw.parked_studies, gw.spool_full)
            for family, value in zip(families.values(), values, strict=True):
                family.add_metric([gw.name, gw.clinic], value)
        yield from families.values()
        info = GaugeMetricFamily("imaging_hub_info", "Version of the hub.", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info
