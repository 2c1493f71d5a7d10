"""``GET /api/v1/notifications``: the caller's notifications (e.g. overdue STAT studies)."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel

from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.http.deps import SessionDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.notifications.inbox import list_notifications, mark_read

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"])


class NotificationOut(BaseModel):
    id: int
    kind: str
    study_instance_uid: str | None
    at: datetime
    read: bool
    detail: dict[str, Any]


@router.get("", response_model=list[NotificationOut])
def get_notifications(
    session: SessionDep,
    user: Annotated[User, require("account.self")],
    unread: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[NotificationOut]:
    items = list_notifications(session, user=user, unread_only=unread, limit=limit)
    return [NotificationOut.model_validate(i, from_attributes=True) for i in items]


@router.post("/{notification_id}/read", status_code=204)
def post_read(
    notification_id: Annotated[int, Path(ge=1, le=2**62)],
    session: SessionDep,
    user: Annotated[User, require("account.self")],
) -> Response:
    mark_read(session, user=user, notification_id=notification_id)
    return Response(status_code=204)
