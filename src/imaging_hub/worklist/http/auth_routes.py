"""Sign-in, sign-out and the caller's own account over HTTP (cookies, CSRF: an HTTP concern, so
here in http/; the account rules are in :mod:`imaging_hub.worklist.access.accounts`).

- ``POST /api/v1/auth/token``: OAuth2 password form -> a short-lived bearer access token (API
  clients, scripts, tests).
- ``POST /api/v1/auth/session``: the same form -> a browser session: an HttpOnly, SameSite=Strict
  cookie plus a CSRF token (also in a readable cookie) that state-changing requests send back in
  the ``X-CSRF-Token`` header. ``GET`` tells whether a session is active (with its CSRF token);
  ``DELETE`` signs out.
- ``POST /api/v1/auth/logout`` revokes the credential used; ``POST /api/v1/auth/password``
  changes the password and revokes every other token and session of the account.
"""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from imaging_hub.worklist.access.accounts import resolve_token
from imaging_hub.worklist.access.policy import GRANTS
from imaging_hub.worklist.access.sessions import (
    change_own_password,
    end_browser_session,
    sign_in,
    sign_out,
)
from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.http.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    CallerDep,
    SessionDep,
    StateDep,
    client_ip,
    csrf_token_for,
)
from imaging_hub.worklist.http.permissions import require

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class SessionOut(BaseModel):
    authenticated: bool
    username: str | None = None
    csrf_token: str | None = None
    expires_in: int | None = None


class MeOut(BaseModel):
    username: str
    display_name: str
    role: str
    institution: str
    institution_name: str
    permissions: list[str]


class PasswordIn(BaseModel):
    current_password: str = Field(max_length=256)
    new_password: str = Field(min_length=10, max_length=256)


@router.post("/token", response_model=TokenOut)
def login(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    state: StateDep,
) -> TokenOut:
    signed = sign_in(
        session,
        username=form.username,
        password=form.password,
        source_ip=client_ip(request),
        throttle=state.login_throttle,
        lifetime=timedelta(minutes=state.settings.access_token_minutes),
        kind="access",
    )
    return TokenOut(access_token=signed.token, expires_in=int(signed.lifetime.total_seconds()))


def _set_session_cookies(response: Response, *, token: str, secure: bool, max_age: int) -> str:
    csrf = csrf_token_for(token)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        max_age=max_age,
        path="/",
        secure=secure,
        httponly=False,
        samesite="strict",
    )
    return csrf


@router.post("/session", response_model=SessionOut)
def create_session(
    request: Request,
    response: Response,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    state: StateDep,
) -> SessionOut:
    signed = sign_in(
        session,
        username=form.username,
        password=form.password,
        source_ip=client_ip(request),
        throttle=state.login_throttle,
        lifetime=timedelta(minutes=state.settings.session_idle_minutes),
        kind="session",
    )
    max_age = state.settings.session_max_hours * 3600
    csrf = _set_session_cookies(
        response, token=signed.token, secure=state.settings.session_cookie_secure, max_age=max_age
    )
    return SessionOut(
        authenticated=True,
        username=signed.user.username,
        csrf_token=csrf,
        expires_in=int(signed.lifetime.total_seconds()),
    )


@router.get("/session", response_model=SessionOut)
def get_session_status(request: Request, session: SessionDep) -> SessionOut:
    """Whether the browser holds a live session (never 401: the sign-in page asks this)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    row = resolve_token(session, cookie, kind="session") if cookie else None
    if row is None or cookie is None:
        return SessionOut(authenticated=False)
    return SessionOut(
        authenticated=True, username=row.user.username, csrf_token=csrf_token_for(cookie)
    )


@router.delete("/session", response_model=SessionOut)
def delete_session(request: Request, response: Response, session: SessionDep) -> SessionOut:
    """Sign out of the browser session (idempotent; needs no CSRF token: it only ends access)."""
    end_browser_session(
        session, cookie=request.cookies.get(SESSION_COOKIE), source_ip=client_ip(request)
    )
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return SessionOut(authenticated=False)


@router.get("/me", response_model=MeOut)
def me(user: Annotated[User, require("account.self")]) -> MeOut:
    return MeOut(
        username=user.username,
        display_name=user.display_name,
        role=user.role.value,
        institution=user.institution.code,
        institution_name=user.institution.name,
        permissions=sorted(p.value for p in GRANTS[user.role.value]),
    )


@router.post("/logout", status_code=204)
def logout(
    request: Request,
    response: Response,
    _: Annotated[User, require("account.self")],
    caller: CallerDep,
    session: SessionDep,
) -> Response:
    """Revoke the token (or browser session) this request was made with."""
    sign_out(session, caller, token_id=getattr(request.state, "token_id", None))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.post("/password", status_code=204)
def post_password(
    request: Request,
    payload: PasswordIn,
    _: Annotated[User, require("account.self")],
    caller: CallerDep,
    session: SessionDep,
) -> Response:
    """Change your password; every other token and session of your account stops working."""
    change_own_password(
        session,
        caller,
        current_password=payload.current_password,
        new_password=payload.new_password,
        keep_token_id=getattr(request.state, "token_id", None),
    )
    return Response(status_code=204)
