"""Notifications pushed to one user: overdue STAT studies, assignments, consultations, opinions."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload

from imaging_hub.errors import NotFound
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import Permission
from imaging_hub.worklist.db.models import Notification, Role
from imaging_hub.worklist.reading.assignment import notify_overdue_stat, utcnow


@dataclass(frozen=True)
class NotificationItem:
    id: int
    kind: str
    study_instance_uid: str | None
    at: datetime
    read: bool
    detail: dict[str, Any]


def list_notifications(
    session: Session, caller: Caller, *, unread_only: bool = False, limit: int = 100
) -> list[NotificationItem]:
    """The caller's notifications, newest first. Overdue STAT detection runs here too (lazily),
    so a radiologist polling this sees an overdue STAT even between two background sweeps."""
    caller.require(Permission.account_self)
    user = caller.user
    if user.role == Role.radiologist:
        notify_overdue_stat(session=session)
    stmt = (
        select(Notification)
        .options(joinedload(Notification.study))
        .where(Notification.user_id == user.id)
    )
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    stmt = stmt.order_by(Notification.at.desc(), Notification.id.desc()).limit(limit)
    return [
        NotificationItem(
            id=n.id,
            kind=n.kind,
            study_instance_uid=n.study.study_instance_uid if n.study else None,
            at=n.at,
            read=n.read_at is not None,
            detail=dict(n.detail or {}),
        )
        for n in session.scalars(stmt)
    ]


def mark_read(session: Session, caller: Caller, notification_id: int) -> None:
    """Mark one of the caller's notifications read (idempotent); commits."""
    caller.require(Permission.account_self)
    user = caller.user
    result = session.execute(
        update(Notification)
        .where(
            Notification.id == notification_id,
            Notification.user_id == user.id,
            Notification.read_at.is_(None),
        )
        .values(read_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        session.rollback()
        if session.get(Notification, notification_id) is None or (
            session.scalar(select(Notification.user_id).where(Notification.id == notification_id))
            != user.id
        ):
            raise NotFound("No notification with this id.")
        return  # already read: idempotent
    session.commit()
