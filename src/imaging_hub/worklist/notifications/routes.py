"""``GET /api/v1/notifications``: the caller's notifications (e.g. overdue STAT studies)."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.http.deps import CallerDep, SessionDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.notifications.inbox import (
    NotificationItem,
    list_notifications,
    mark_read,
)

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"])


@router.get("", response_model=list[NotificationItem])
def get_notifications(
    session: SessionDep,
    _: Annotated[User, require("account.self")],
    caller: CallerDep,
    unread: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[NotificationItem]:
    return list_notifications(session, caller, unread_only=unread, limit=limit)


@router.post("/{notification_id}/read", status_code=204)
def post_read(
    notification_id: Annotated[int, Path(ge=1, le=2**62)],
    session: SessionDep,
    _: Annotated[User, require("account.self")],
    caller: CallerDep,
) -> Response:
    mark_read(session, caller, notification_id)
    return Response(status_code=204)
