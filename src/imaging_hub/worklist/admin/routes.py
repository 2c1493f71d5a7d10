"""Administration: the audit trail, user accounts and gateway credentials (``/api/v1/admin``).

Every change made here is itself audited.
"""

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from imaging_hub.dicom.uids import UID_PATTERN
from imaging_hub.worklist.access.accounts import (
    USERNAME_PATTERN,
    create_gateway,
    create_user,
    get_gateway,
    get_institution,
    get_user,
    revoke_gateway,
    rotate_gateway_token,
    set_active,
    set_password,
    update_user,
)
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import Gateway, Role, User
from imaging_hub.worklist.http.deps import AuditDep, SessionDep
from imaging_hub.worklist.http.permissions import require

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])

AuditReader = Annotated[User, require("audit.read")]
UserAdmin = Annotated[User, require("admin.users")]
GatewayAdmin = Annotated[User, require("admin.gateways")]
UsernamePath = Annotated[str, Path(max_length=64, pattern=USERNAME_PATTERN)]
GatewayNamePath = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
InstitutionCode = Annotated[str, Field(max_length=63, pattern=r"^[a-z0-9-]+$")]


# --- Audit -----------------------------------------------------------------------------------


class AuditEventOut(BaseModel):
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


class AuditListOut(BaseModel):
    items: list[AuditEventOut]
    limit: int
    offset: int


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


@router.get("/audit", response_model=AuditListOut)
def get_audit(
    _: AuditReader,
    session: SessionDep,
    user: UserQ = None,
    action: ActionQ = None,
    study: StudyQ = None,
    since: SinceQ = None,
    until: UntilQ = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> AuditListOut:
    """Audit events, newest first, filtered by actor, action, study and time range."""
    f = _audit_filter(user, action, study, since, until, limit, offset)
    rows = audit.list_events(session, f)
    return AuditListOut(
        items=[AuditEventOut.model_validate(r, from_attributes=True) for r in rows],
        limit=limit,
        offset=offset,
    )


@router.get(
    "/audit.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def get_audit_csv(
    _: AuditReader,
    session: SessionDep,
    auditor: AuditDep,
    user: UserQ = None,
    action: ActionQ = None,
    study: StudyQ = None,
    since: SinceQ = None,
    until: UntilQ = None,
) -> StreamingResponse:
    """The filtered audit events as CSV (UTF-8 with BOM, oldest first; formula-safe cells)."""
    f = _audit_filter(user, action, study, since, until)
    auditor.record(
        audit.AUDIT_EXPORTED,
        object_type="audit",
        detail={
            k: v
            for k, v in {
                "user": user,
                "action": action,
                "study": study,
                "since": since.isoformat() if since else None,
                "until": until.isoformat() if until else None,
            }.items()
            if v is not None
        },
    )
    session.commit()

    def lines() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        yield "\ufeff"
        for row in audit.csv_rows(audit.iter_events(session, f)):
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


# --- Users -----------------------------------------------------------------------------------


class UserOut(BaseModel):
    username: str
    display_name: str
    role: Role
    institution: str
    is_active: bool
    on_duty: bool
    locked_until: datetime | None
    created_at: datetime


class UserCreate(BaseModel):
    username: str = Field(max_length=64, pattern=USERNAME_PATTERN)
    password: str = Field(min_length=10, max_length=256)
    role: Role
    institution: InstitutionCode
    display_name: str = Field(default="", max_length=200)


class UserUpdate(BaseModel):
    role: Role | None = None
    institution: InstitutionCode | None = None
    display_name: str | None = Field(default=None, max_length=200)
    is_active: bool | None = None


class PasswordReset(BaseModel):
    password: str = Field(min_length=10, max_length=256)


def _user_out(user: User) -> UserOut:
    return UserOut(
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        institution=user.institution.code,
        is_active=user.is_active,
        on_duty=user.on_duty,
        locked_until=user.locked_until,
        created_at=user.created_at,
    )


@router.get("/users", response_model=list[UserOut])
def list_users(_: UserAdmin, session: SessionDep) -> list[UserOut]:
    from sqlalchemy import select

    return [_user_out(u) for u in session.scalars(select(User).order_by(User.username))]


@router.post("/users", response_model=UserOut, status_code=201)
def post_user(payload: UserCreate, _: UserAdmin, session: SessionDep, auditor: AuditDep) -> UserOut:
    user = create_user(
        session,
        username=payload.username,
        password=payload.password,
        role=payload.role,
        institution=get_institution(session, payload.institution),
        display_name=payload.display_name,
    )
    auditor.record(
        audit.ADMIN_USER,
        object_type="user",
        object_id=user.username,
        detail={"op": "created", "role": user.role.value, "institution": payload.institution},
    )
    session.commit()
    return _user_out(user)


@router.patch("/users/{username}", response_model=UserOut)
def patch_user(
    username: UsernamePath,
    payload: UserUpdate,
    _: UserAdmin,
    session: SessionDep,
    auditor: AuditDep,
) -> UserOut:
    """Change role, institution or display name; ``is_active: false`` disables at once."""
    user = get_user(session, username)
    changes = payload.model_dump(exclude_none=True)
    update_user(
        session,
        user=user,
        role=payload.role,
        institution=get_institution(session, payload.institution) if payload.institution else None,
        display_name=payload.display_name,
    )
    if payload.is_active is not None:
        set_active(session, user=user, active=payload.is_active)
    auditor.record(
        audit.ADMIN_USER,
        object_type="user",
        object_id=user.username,
        detail={"op": "updated", "changes": changes},
    )
    session.commit()
    return _user_out(user)


@router.post("/users/{username}/disable", response_model=UserOut)
def disable_user(
    username: UsernamePath, _: UserAdmin, session: SessionDep, auditor: AuditDep
) -> UserOut:
    """Disable an account: its tokens and sessions are refused from the next request on."""
    user = get_user(session, username)
    set_active(session, user=user, active=False)
    auditor.record(
        audit.ADMIN_USER, object_type="user", object_id=user.username, detail={"op": "disabled"}
    )
    session.commit()
    return _user_out(user)


@router.post("/users/{username}/enable", response_model=UserOut)
def enable_user(
    username: UsernamePath, _: UserAdmin, session: SessionDep, auditor: AuditDep
) -> UserOut:
    user = get_user(session, username)
    set_active(session, user=user, active=True)
    auditor.record(
        audit.ADMIN_USER, object_type="user", object_id=user.username, detail={"op": "enabled"}
    )
    session.commit()
    return _user_out(user)


@router.post("/users/{username}/password", status_code=204)
def reset_password(
    username: UsernamePath,
    payload: PasswordReset,
    _: UserAdmin,
    session: SessionDep,
    auditor: AuditDep,
) -> None:
    """Set a new password (tell the user out of band); every session of the account ends."""
    user = get_user(session, username)
    set_password(session, user=user, new_password=payload.password)
    auditor.record(
        audit.ADMIN_USER,
        object_type="user",
        object_id=user.username,
        detail={"op": "password_reset"},
    )
    session.commit()


# --- Gateway credentials ---------------------------------------------------------------------


class GatewayCreate(BaseModel):
    name: str = Field(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    clinic: InstitutionCode
    ae_title: str = Field(default="", max_length=16, pattern=r"^[ -~]*$")


class GatewayTokenOut(BaseModel):
    name: str
    clinic: str
    token: str = Field(description="Shown once; the hub keeps only its hash.")


class GatewayOut(BaseModel):
    name: str
    clinic: str
    ae_title: str
    revoked: bool


def _gateway_token_out(gateway: Gateway, token: str) -> GatewayTokenOut:
    return GatewayTokenOut(name=gateway.name, clinic=gateway.institution.code, token=token)


@router.post("/gateways", response_model=GatewayTokenOut, status_code=201)
def post_gateway(
    payload: GatewayCreate, _: GatewayAdmin, session: SessionDep, auditor: AuditDep
) -> GatewayTokenOut:
    """Register a clinic gateway and issue its token (shown once)."""
    issued = create_gateway(
        session,
        clinic=get_institution(session, payload.clinic),
        name=payload.name,
        ae_title=payload.ae_title,
    )
    session.refresh(issued.gateway)
    auditor.record(
        audit.ADMIN_GATEWAY,
        object_type="gateway",
        object_id=payload.name,
        detail={"op": "created", "clinic": payload.clinic},
    )
    session.commit()
    return _gateway_token_out(issued.gateway, issued.token)


@router.post("/gateways/{name}/rotate", response_model=GatewayTokenOut)
def post_gateway_rotate(
    name: GatewayNamePath, _: GatewayAdmin, session: SessionDep, auditor: AuditDep
) -> GatewayTokenOut:
    """A new token; the previous one keeps working until the next rotation (no downtime)."""
    gateway = get_gateway(session, name)
    token = rotate_gateway_token(session, gateway=gateway)
    auditor.record(
        audit.ADMIN_GATEWAY, object_type="gateway", object_id=name, detail={"op": "rotated"}
    )
    session.commit()
    return _gateway_token_out(gateway, token)


@router.post("/gateways/{name}/revoke", response_model=GatewayOut)
def post_gateway_revoke(
    name: GatewayNamePath, _: GatewayAdmin, session: SessionDep, auditor: AuditDep
) -> GatewayOut:
    """Revoke the gateway: both its tokens are refused from the next request on."""
    gateway = get_gateway(session, name)
    revoke_gateway(session, gateway=gateway)
    auditor.record(
        audit.ADMIN_GATEWAY, object_type="gateway", object_id=name, detail={"op": "revoked"}
    )
    session.commit()
    return GatewayOut(
        name=gateway.name,
        clinic=gateway.institution.code,
        ae_title=gateway.ae_title,
        revoked=gateway.revoked_at is not None,
    )
