"""The audit trail: append-only, hash-chained, verifiable.

Every access to patient data and every security-relevant action is one :class:`AuditEvent` row.
Each row's ``hash`` is the SHA-256 of the canonical JSON of its fields plus the previous row's
hash (``prev_hash``); ids are assigned without gaps. The single row of ``audit_head`` holds the
last id and hash. Appends are serialized by writing that head row first, inside the caller's
transaction: on PostgreSQL the UPDATE takes a row lock held until commit, on SQLite the first
write of a transaction takes the database's write lock (BEGIN IMMEDIATE semantics). Two writers
can therefore never fork the chain.

:func:`verify_chain` recomputes every hash: an edited row breaks its own hash, a deleted row
leaves a gap in the ids and breaks the next row's link, and deleting the newest rows makes the
head disagree with the last row.

Reading events that a viewer repeats many times (frames) go through :func:`record_access`, which
writes one event per (session, action, study) per :data:`ACCESS_WINDOW`.

Only this module creates :class:`AuditEvent` rows (a test greps for it).
"""

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from imaging_hub.errors import ImagingHubError
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.db.models import AuditEvent, AuditHead, Gateway, User

# Action names. Any ``area.verb`` string is accepted; these are the ones the hub writes.
LOGIN = "auth.login"
LOGIN_FAILED = "auth.login_failed"
LOGOUT = "auth.logout"
PASSWORD_CHANGED = "auth.password_changed"
STUDY_OPENED = "study.opened"
STUDY_LISTED = "study.listed"  # a list of studies with PHI was shown (worklist, QIDO-RS)
FRAMES_FETCHED = "study.frames_fetched"
STUDY_RETRIEVED = "study.retrieved"  # WADO-RS retrieve of instances
STUDY_STORED = "study.stored"  # STOW-RS
STUDY_CLAIMED = "study.claimed"
STUDY_ESCALATED = "study.escalated"
STUDY_EXPORTED = "study.exported"
REPORT_DOWNLOADED = "report.downloaded"
REPORT_SIGNED = "report.signed"
REPORT_DELIVERED = "report.delivered"  # the clinic's gateway confirmed it holds the signed PDF
AUDIT_EXPORTED = "audit.exported"
ADMIN_USER = "admin.user"  # detail.op: created, disabled, enabled, password_reset, updated
ADMIN_GATEWAY = "admin.gateway"  # detail.op: created, rotated, revoked
ORDER_WRITTEN = "order.written"  # detail.op: created, cancelled, done, mpps
ORDER_LISTED = "order.listed"  # orders (patient data) listed: GET /api/v1/orders, gateway feed

ACTION_PATTERN = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")

# One access event per (token session, action, study) per this many seconds.
ACCESS_WINDOW = 300.0

HASH_FIELDS = (
    "id",
    "at",
    "user_id",
    "gateway_id",
    "action",
    "object_type",
    "object_id",
    "study_instance_uid",
    "source_ip",
    "detail",
    "prev_hash",
)
GENESIS = "0" * 64


class AuditChainBroken(ImagingHubError):
    """The audit trail does not verify: a row was changed, deleted or inserted out of band."""

    code = "audit_chain_broken"

    def __init__(self, message: str, *, event_id: int | None) -> None:
        super().__init__(message)
        self.event_id = event_id


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(fields: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys, no spaces, UTF-8) of an event's hashed fields."""
    data = {k: fields[k] for k in HASH_FIELDS}
    data["at"] = _iso(fields["at"])
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(event: AuditEvent) -> str:
    return hashlib.sha256(canonical({k: getattr(event, k) for k in HASH_FIELDS})).hexdigest()


def _normalise_detail(detail: dict[str, Any] | None) -> dict[str, Any]:
    # Round-trip through JSON so what we hash is exactly what the database gives back.
    result: dict[str, Any] = json.loads(json.dumps(detail or {}, default=str))
    return result


def record(
    session: Session,
    *,
    actor: User | Gateway | None,
    action: str,
    object_type: str = "",
    object_id: str = "",
    study_uid: str = "",
    source_ip: str = "",
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in *session*'s transaction (the caller commits).

    Call it last before committing: from here to the commit, other audited transactions wait.
    """
    if not ACTION_PATTERN.match(action) or len(action) > 64:
        raise ValueError(f"Audit action {action!r} is not of the form 'area.verb'.")
    # Lock first (a write), then read the head: see the module docstring.
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(id=1))
    head = session.get(AuditHead, 1, populate_existing=True)
    if head is None:
        head = AuditHead(id=1, last_id=0, last_hash=GENESIS)
        session.add(head)
        session.flush()
    event = AuditEvent(
        id=head.last_id + 1,
        at=datetime.now(UTC),
        user_id=actor.id if isinstance(actor, User) else None,
        gateway_id=actor.id if isinstance(actor, Gateway) else None,
        action=action,
        object_type=object_type[:32],
        object_id=object_id[:128],
        study_instance_uid=study_uid[:64],
        source_ip=source_ip[:64],
        detail=_normalise_detail(detail),
        prev_hash=head.last_hash,
    )
    event.hash = event_hash(event)
    session.add(event)
    head.last_id = event.id
    head.last_hash = event.hash
    session.flush()
    return event


def record_for(
    session: Session,
    caller: Caller,
    action: str,
    *,
    object_type: str = "",
    object_id: str = "",
    study_uid: str = "",
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """:func:`record` for a domain action by *caller*: one shape whatever the edge (HTTP, CLI)."""
    return record(
        session,
        actor=caller.actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        study_uid=study_uid,
        source_ip=caller.source_ip,
        detail={**(detail or {}), **caller.audit_detail()},
    )


class AccessBatcher:
    """Remembers recent access events so repeated reads make one event per window.

    One instance per process (kept on the app state); thread-safe. A multi-worker hub writes at
    most one event per worker per window, which is still "one per study per session" in spirit.
    """

    def __init__(self, window: float = ACCESS_WINDOW, max_entries: int = 100_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._seen: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    def should_record(self, key: tuple[str, str, str], now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last < self.window:
                return False
            if len(self._seen) >= self.max_entries:
                cutoff = now - self.window
                self._seen = {k: v for k, v in self._seen.items() if v >= cutoff}
            self._seen[key] = now
            return True

    def recorded_recently(self, key: tuple[str, str, str], now: float | None = None) -> bool:
        """Whether :meth:`should_record` would answer False now (it marks nothing)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self._seen.get(key)
        return last is not None and now - last < self.window

    def forget(self, key: tuple[str, str, str]) -> None:
        """Undo :meth:`should_record` when the transaction that recorded the event failed."""
        with self._lock:
            self._seen.pop(key, None)


def record_access(
    session: Session,
    *,
    batcher: AccessBatcher,
    session_key: str,
    actor: User | Gateway | None,
    action: str,
    study_uid: str,
    source_ip: str = "",
    object_type: str = "study",
    object_id: str = "",
    detail: dict[str, Any] | None = None,
) -> AuditEvent | None:
    """Record a read of patient data at most once per (session, action, study) per window."""
    key = (session_key, action, study_uid)
    if not batcher.should_record(key):
        return None
    try:
        return record(
            session,
            actor=actor,
            action=action,
            object_type=object_type,
            object_id=object_id or study_uid,
            study_uid=study_uid,
            source_ip=source_ip,
            detail=detail,
        )
    except BaseException:
        batcher.forget(key)
        raise


# --- Verification --------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainReport:
    events: int
    last_id: int
    last_hash: str


def record_access_for(
    session: Session,
    caller: Caller,
    *,
    action: str,
    batcher: AccessBatcher,
    study_uid: str = "",
    object_type: str = "study",
    object_id: str = "",
    detail: dict[str, Any] | None = None,
) -> AuditEvent | None:
    """:func:`record_access` for a read by *caller* (its session, actor and address)."""
    return record_access(
        session,
        batcher=batcher,
        session_key=caller.session_key,
        actor=caller.actor,
        action=action,
        study_uid=study_uid,
        source_ip=caller.source_ip,
        object_type=object_type,
        object_id=object_id,
        detail=detail,
    )


def verify_chain(session: Session, *, batch: int = 5000) -> ChainReport:
    """Recompute the whole chain; raise :class:`AuditChainBroken` naming the first bad id."""
    expected_id = 1
    prev = GENESIS
    count = 0
    last_id = 0
    after = 0
    while True:
        rows = list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id).limit(batch)
            )
        )
        if not rows:
            break
        for row in rows:
            if row.id != expected_id:
                raise AuditChainBroken(
                    f"Audit event {expected_id} is missing (the next row is {row.id}).",
                    event_id=expected_id,
                )
            if row.prev_hash != prev:
                raise AuditChainBroken(
                    f"Audit event {row.id} does not link to the event before it.",
                    event_id=row.id,
                )
            if event_hash(row) != row.hash:
                raise AuditChainBroken(
                    f"Audit event {row.id} was changed after it was written.", event_id=row.id
                )
            prev = row.hash
            last_id = row.id
            expected_id += 1
            count += 1
        after = rows[-1].id
        session.expunge_all()
    head = session.get(AuditHead, 1)
    head_id = head.last_id if head is not None else 0
    head_hash = head.last_hash if head is not None else GENESIS
    if head_id != last_id or head_hash != prev:
        raise AuditChainBroken(
            f"The audit trail ends at event {last_id} but its head records event {head_id}: "
            "the newest events were deleted or the head was changed.",
            event_id=last_id + 1 if head_id > last_id else head_id,
        )
    return ChainReport(events=count, last_id=last_id, last_hash=prev)


# --- Queries -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    username: str | None = None
    action: str | None = None
    study_uid: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    actor: str
    actor_kind: str
    action: str
    object_type: str
    object_id: str
    study_instance_uid: str
    source_ip: str
    detail: dict[str, Any]
    hash: str


def _filtered(session: Session, f: AuditFilter) -> Select[Any]:
    stmt: Select[Any] = select(AuditEvent, User.username, Gateway.name).outerjoin(  # type: ignore[assignment]
        User, AuditEvent.user_id == User.id
    )
    stmt = stmt.outerjoin(Gateway, AuditEvent.gateway_id == Gateway.id)
    if f.username:
        stmt = stmt.where(User.username == f.username)
    if f.action:
        stmt = stmt.where(AuditEvent.action == f.action)
    if f.study_uid:
        stmt = stmt.where(AuditEvent.study_instance_uid == f.study_uid)
    if f.since:
        stmt = stmt.where(AuditEvent.at >= f.since)
    if f.until:
        stmt = stmt.where(AuditEvent.at < f.until)
    return stmt


def _row(event: AuditEvent, username: str | None, gateway: str | None) -> AuditRow:
    if username is not None:
        actor, kind = username, "user"
    elif gateway is not None:
        actor, kind = gateway, "gateway"
    else:
        actor, kind = "", "anonymous"
    return AuditRow(
        id=event.id,
        at=event.at,
        actor=actor,
        actor_kind=kind,
        action=event.action,
        object_type=event.object_type,
        object_id=event.object_id,
        study_instance_uid=event.study_instance_uid,
        source_ip=event.source_ip,
        detail=event.detail,
        hash=event.hash,
    )


def list_events(session: Session, f: AuditFilter) -> list[AuditRow]:
    """Newest first, filtered and paged."""
    stmt = _filtered(session, f).order_by(AuditEvent.id.desc()).limit(f.limit).offset(f.offset)
    return [_row(e, u, g) for e, u, g in session.execute(stmt).all()]


def iter_events(session: Session, f: AuditFilter, *, batch: int = 1000) -> Iterator[AuditRow]:
    """Every matching event, oldest first, fetched in batches (for CSV export)."""
    after = 0
    while True:
        stmt = (
            _filtered(session, f).where(AuditEvent.id > after).order_by(AuditEvent.id).limit(batch)
        )
        rows = session.execute(stmt).all()
        if not rows:
            return
        for e, u, g in rows:
            yield _row(e, u, g)
        after = rows[-1][0].id


CSV_COLUMNS = (
    "id",
    "at",
    "actor",
    "actor_kind",
    "action",
    "object_type",
    "object_id",
    "study_instance_uid",
    "source_ip",
    "detail",
    "hash",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A cell safe to open in a spreadsheet: formula-looking text gets a leading quote."""
    text = value if isinstance(value, str) else str(value)
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


def csv_rows(rows: Iterable[AuditRow]) -> Iterator[list[str]]:
    yield list(CSV_COLUMNS)
    for r in rows:
        yield [
            csv_cell(v)
            for v in (
                r.id,
                _iso(r.at),
                r.actor,
                r.actor_kind,
                r.action,
                r.object_type,
                r.object_id,
                r.study_instance_uid,
                r.source_ip,
                json.dumps(r.detail, ensure_ascii=False, sort_keys=True),
                r.hash,
            )
        ]
