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

from imaging_hub.worklist.access.accounts import (
    AuthenticationFailed,
    authenticate,
    change_password,
    issue_access_token,
    resolve_token,
    revoke_access_token,
    revoke_token_id,
)
from imaging_hub.worklist.access.policy import GRANTS
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.http.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    AuditDep,
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


def _login(
    request: Request, form: OAuth2PasswordRequestForm, state: StateDep, auditor: AuditDep
) -> User:
    """Password check with per-address throttling; success and failure are both audited."""
    ip = client_ip(request)
    state.login_throttle.check(ip)
    session = auditor.session
    try:
        user = authenticate(session, username=form.username[:64], password=form.password)
    except AuthenticationFailed as exc:
        session.rollback()
        state.login_throttle.failed(ip)
        auditor.record(
            audit.LOGIN_FAILED,
            object_type="user",
            object_id=form.username[:64],
            detail={"reason": str(exc)},
        )
        session.commit()
        raise
    return user


@router.post("/token", response_model=TokenOut)
def login(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    state: StateDep,
    auditor: AuditDep,
) -> TokenOut:
    user = _login(request, form, state, auditor)
    lifetime = timedelta(minutes=state.settings.access_token_minutes)
    token = issue_access_token(session, user=user, lifetime=lifetime)
    auditor.record(
        audit.LOGIN,
        actor=user,
        object_type="user",
        object_id=user.username,
        detail={"via": "token"},
    )
    session.commit()
    return TokenOut(access_token=token, expires_in=int(lifetime.total_seconds()))


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
    auditor: AuditDep,
) -> SessionOut:
    user = _login(request, form, state, auditor)
    idle = timedelta(minutes=state.settings.session_idle_minutes)
    token = issue_access_token(session, user=user, lifetime=idle, kind="session")
    auditor.record(
        audit.LOGIN,
        actor=user,
        object_type="user",
        object_id=user.username,
        detail={"via": "session"},
    )
    session.commit()
    max_age = state.settings.session_max_hours * 3600
    csrf = _set_session_cookies(
        response, token=token, secure=state.settings.session_cookie_secure, max_age=max_age
    )
    return SessionOut(
        authenticated=True,
        username=user.username,
        csrf_token=csrf,
        expires_in=int(idle.total_seconds()),
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
def delete_session(
    request: Request, response: Response, session: SessionDep, auditor: AuditDep
) -> SessionOut:
    """Sign out of the browser session (idempotent; needs no CSRF token: it only ends access)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    row = resolve_token(session, cookie, kind="session") if cookie else None
    if row is not None and cookie is not None:
        revoke_access_token(session, cookie)
        auditor.record(
            audit.LOGOUT, actor=row.user, object_type="user", object_id=row.user.username
        )
        session.commit()
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
    user: Annotated[User, require("account.self")],
    session: SessionDep,
    auditor: AuditDep,
) -> Response:
    """Revoke the token (or browser session) this request was made with."""
    token_id = getattr(request.state, "token_id", None)
    revoke_token_id(session, token_id=token_id)
    auditor.record(audit.LOGOUT, object_type="user", object_id=user.username)
    session.commit()
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.post("/password", status_code=204)
def post_password(
    request: Request,
    payload: PasswordIn,
    user: Annotated[User, require("account.self")],
    session: SessionDep,
    auditor: AuditDep,
) -> Response:
    """Change your password; every other token and session of your account stops working."""
    change_password(
        session,
        user=user,
        current_password=payload.current_password,
        new_password=payload.new_password,
        keep_token_id=getattr(request.state, "token_id", None),
    )
    auditor.record(audit.PASSWORD_CHANGED, object_type="user", object_id=user.username)
    session.commit()
    return Response(status_code=204)
