"""Gateway heartbeats and the admin view of every clinic's gateways.

A gateway reports its state every ``heartbeat_seconds`` (version, queue depth, bytes pending,
last error, measured uplink throughput, ...). The hub keeps the last report on the Gateway row
(``status``, ``last_seen_at``). The admin view lists every gateway with a ``silent`` alarm when
its last report is older than ``gateway_silence_alarm_seconds`` (or it never reported), and
sums the backlog per clinic. A heartbeat also lists the gateway's parked studies (what the hub
refused for good) with the hub's code and detail, so the admin sees why a study did not arrive.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging_hub.worklist.db.models import Gateway, Institution

#: Fields of a heartbeat the hub keeps, with their types; anything else is dropped.
HEARTBEAT_FIELDS: dict[str, type] = {
    "version": str,
    "ae_title": str,
    "queue_depth": int,
    "bytes_pending": int,
    "failed": int,
    "open_studies": int,
    "parked_studies": int,
    "parked": list,
    "sent": int,
    "received": int,
    "refused": int,
    "last_success_at": float,
    "last_error": str,
    "last_error_at": float,
    "uplink_bytes_per_second": float,
    # The full-disk alarm: new instances refused (0xA700) below the spool's free-space floor.
    "spool_full": bool,
    "spool_free_bytes": int,
    "spool_min_free_bytes": int,
    "refused_no_space": int,
    # The Modality Worklist's order cache, the MPPS states not yet at the hub, and the
    # reports held at the clinic (docs/clinic-return.md).
    "orders_cached": int,
    "orders_synced_at": float,
    "orders_sync_error": str,
    "mpps_outbox": int,
    "reports_held": int,
    "reports_unconfirmed": int,
    "reports_waiting_for_node": int,
    "reports_critical_open": int,
    "acknowledgements_waiting": int,
    "staff_verifiers": int,
}

#: Parked studies kept per heartbeat at most, and the fields kept of each.
PARKED_KEPT = 50
PARKED_FIELDS: dict[str, type] = {
    "study_instance_uid": str,
    "code": str,
    "reason": str,
    "instances": int,
    "parked_at": float,
    "next_try_at": float,
}


@dataclass(frozen=True)
class GatewayView:
    name: str
    clinic: str
    clinic_name: str
    ae_title: str
    revoked: bool
    last_seen_at: datetime | None
    seconds_since_seen: float | None
    silent: bool
    status: dict[str, Any]


@dataclass
class ClinicBacklog:
    clinic: str
    clinic_name: str
    gateways: int = 0
    silent_gateways: int = 0
    queue_depth: int = 0
    bytes_pending: int = 0
    failed: int = 0
    parked_studies: int = 0
    gateway_names: list[str] = field(default_factory=list)


def record_heartbeat(
    session: Session,
    *,
    gateway: Gateway,
    status: dict[str, Any],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Keep the gateway's last report (only known fields, values bounded) and commit."""
    kept: dict[str, Any] = {}
    for key, kind in HEARTBEAT_FIELDS.items():
        value = _typed(status.get(key), kind)
        if value is None:
            continue
        if kind is list:
            kept[key] = [_parked(item) for item in value[:PARKED_KEPT] if isinstance(item, dict)]
        else:
            kept[key] = value[:500] if kind is str else value
    gateway.status = kept
    gateway.last_seen_at = now()
    if kept.get("ae_title") and not gateway.ae_title:
        gateway.ae_title = str(kept["ae_title"])[:16]
    session.commit()


def _typed(value: Any, kind: type) -> Any:
    """*value* if it has the field's type (an int is a float too; a bool is no number), else
    None: a gateway cannot store a nested document where a count belongs."""
    if value is None or isinstance(value, bool) is not (kind is bool):
        return None
    if kind is float and isinstance(value, int | float):
        return float(value)
    return value if isinstance(value, kind) else None


def _parked(item: dict[str, Any]) -> dict[str, Any]:
    """One parked study of a heartbeat: known fields only, strings bounded."""
    kept: dict[str, Any] = {}
    for key, kind in PARKED_FIELDS.items():
        value = _typed(item.get(key), kind)
        if value is not None:
            kept[key] = value[:500] if kind is str else value
    return kept


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def list_gateways(
    session: Session,
    *,
    silence_alarm_seconds: float,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> tuple[list[GatewayView], list[ClinicBacklog]]:
    """Every gateway of every clinic, and the backlog per clinic (revoked gateways excluded)."""
    at = now()
    rows = session.execute(
        select(Gateway, Institution)
        .join(Institution, Gateway.institution_id == Institution.id)
        .order_by(Institution.code, Gateway.name)
    ).all()
    views: list[GatewayView] = []
    clinics: dict[str, ClinicBacklog] = {}
    for gateway, clinic in rows:
        seen = _as_utc(gateway.last_seen_at) if gateway.last_seen_at else None
        since = (at - seen).total_seconds() if seen else None
        revoked = gateway.revoked_at is not None
        silent = not revoked and (since is None or since > silence_alarm_seconds)
        status = dict(gateway.status or {})
        views.append(
            GatewayView(
                name=gateway.name,
                clinic=clinic.code,
                clinic_name=clinic.name,
                ae_title=gateway.ae_title,
                revoked=revoked,
                last_seen_at=seen,
                seconds_since_seen=since,
                silent=silent,
                status=status,
            )
        )
        if revoked:
            continue
        backlog = clinics.setdefault(clinic.code, ClinicBacklog(clinic.code, clinic.name))
        backlog.gateways += 1
        backlog.gateway_names.append(gateway.name)
        backlog.silent_gateways += int(silent)
        backlog.queue_depth += int(status.get("queue_depth") or 0)
        backlog.bytes_pending += int(status.get("bytes_pending") or 0)
        backlog.failed += int(status.get("failed") or 0)
        backlog.parked_studies += int(status.get("parked_studies") or 0)
    return views, list(clinics.values())
