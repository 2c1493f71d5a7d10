"""Administration of user accounts and gateway credentials (``/api/v1/admin``).

Thin edge over :mod:`imaging_hub.worklist.admin.users`, which audits every change.
"""

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from imaging_hub.worklist.access.accounts import USERNAME_PATTERN
from imaging_hub.worklist.admin import users
from imaging_hub.worklist.db.models import Role, User
from imaging_hub.worklist.http.deps import CallerDep, SessionDep
from imaging_hub.worklist.http.permissions import require

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])

UserAdmin = Annotated[User, require("admin.users")]
GatewayAdmin = Annotated[User, require("admin.gateways")]
UsernamePath = Annotated[str, Path(max_length=64, pattern=USERNAME_PATTERN)]
GatewayNamePath = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
InstitutionCode = Annotated[str, Field(max_length=63, pattern=r"^[a-z0-9-]+$")]


# --- Users -----------------------------------------------------------------------------------


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


@router.get("/users", response_model=list[users.UserView])
def list_users(_: UserAdmin, caller: CallerDep, session: SessionDep) -> list[users.UserView]:
    return users.list_users(session, caller)


@router.post("/users", response_model=users.UserView, status_code=201)
def post_user(
    payload: UserCreate, _: UserAdmin, caller: CallerDep, session: SessionDep
) -> users.UserView:
    return users.create_user(session, caller, **payload.model_dump())


@router.patch("/users/{username}", response_model=users.UserView)
def patch_user(
    username: UsernamePath,
    payload: UserUpdate,
    _: UserAdmin,
    caller: CallerDep,
    session: SessionDep,
) -> users.UserView:
    """Change role, institution or display name; ``is_active: false`` disables at once."""
    return users.update_user(session, caller, username, **payload.model_dump())


@router.post("/users/{username}/disable", response_model=users.UserView)
def disable_user(
    username: UsernamePath, _: UserAdmin, caller: CallerDep, session: SessionDep
) -> users.UserView:
    """Disable an account: its tokens and sessions are refused from the next request on."""
    return users.set_active(session, caller, username, active=False)


@router.post("/users/{username}/enable", response_model=users.UserView)
def enable_user(
    username: UsernamePath, _: UserAdmin, caller: CallerDep, session: SessionDep
) -> users.UserView:
    return users.set_active(session, caller, username, active=True)


@router.post("/users/{username}/password", status_code=204)
def reset_password(
    username: UsernamePath,
    payload: PasswordReset,
    _: UserAdmin,
    caller: CallerDep,
    session: SessionDep,
) -> None:
    """Set a new password (tell the user out of band); every session of the account ends."""
    users.reset_password(session, caller, username, password=payload.password)


# --- Gateway credentials ---------------------------------------------------------------------


class GatewayCreate(BaseModel):
    name: str = Field(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    clinic: InstitutionCode
    ae_title: str = Field(default="", max_length=16, pattern=r"^[ -~]*$")


@router.post("/gateways", response_model=users.IssuedToken, status_code=201)
def post_gateway(
    payload: GatewayCreate, _: GatewayAdmin, caller: CallerDep, session: SessionDep
) -> users.IssuedToken:
    """Register a clinic gateway and issue its token (shown once)."""
    return users.create_gateway(session, caller, **payload.model_dump())


@router.post("/gateways/{name}/rotate", response_model=users.IssuedToken)
def post_gateway_rotate(
    name: GatewayNamePath, _: GatewayAdmin, caller: CallerDep, session: SessionDep
) -> users.IssuedToken:
    """A new token; the previous one keeps working for 72 hours (no downtime)."""
    return users.rotate_gateway(session, caller, name)


@router.post("/gateways/{name}/revoke", response_model=users.GatewayView)
def post_gateway_revoke(
    name: GatewayNamePath, _: GatewayAdmin, caller: CallerDep, session: SessionDep
) -> users.GatewayView:
    """Revoke the gateway: both its tokens are refused from the next request on."""
    return users.revoke_gateway(session, caller, name)
