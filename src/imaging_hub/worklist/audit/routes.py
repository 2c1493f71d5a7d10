"""The audit trail over HTTP (``/api/v1/admin/audit``, ``audit.csv``).

Thin edge over :mod:`imaging_hub.worklist.audit.review`.
"""

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from imaging_hub.dicom.uids import UID_PATTERN
from imaging_hub.worklist.audit import review
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.http.deps import CallerDep, SessionDep
from imaging_hub.worklist.http.permissions import require

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])

AuditReader = Annotated[User, require("audit.read")]


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _audit_filter(
    user: str | None,
    action: str | None,
    study: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int = 100,
    offset: int = 0,
) -> audit.AuditFilter:
    return audit.AuditFilter(
        username=user,
        action=action,
        study_uid=study,
        since=_aware(since),
        until=_aware(until),
        limit=limit,
        offset=offset,
    )


UserQ = Annotated[str | None, Query(max_length=64, description="Username of the actor.")]
ActionQ = Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_.]+$")]
StudyQ = Annotated[str | None, Query(max_length=64, pattern=UID_PATTERN.pattern)]
SinceQ = Annotated[datetime | None, Query(description="From this time (inclusive, ISO 8601).")]
UntilQ = Annotated[datetime | None, Query(description="Until this time (exclusive, ISO 8601).")]


@router.get("/audit", response_model=review.AuditPage)
def get_audit(
    _: AuditReader,
    caller: CallerDep,
    session: SessionDep,
    user: UserQ = None,
    action: ActionQ = None,
    study: StudyQ = None,
    since: SinceQ = None,
    until: UntilQ = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> review.AuditPage:
    """Audit events, newest first, filtered by actor, action, study and time range."""
    f = _audit_filter(user, action, study, since, until, limit, offset)
    return review.list_events(session, caller, f)


@router.get(
    "/audit.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def get_audit_csv(
    _: AuditReader,
    caller: CallerDep,
    session: SessionDep,
    user: UserQ = None,
    action: ActionQ = None,
    study: StudyQ = None,
    since: SinceQ = None,
    until: UntilQ = None,
) -> StreamingResponse:
    """The filtered audit events as CSV (UTF-8 with BOM, oldest first; formula-safe cells)."""
    rows = review.export_events(session, caller, _audit_filter(user, action, study, since, until))

    def lines() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        yield "\ufeff"
        for row in rows:
            writer.writerow(row)
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.csv"'},
    )
