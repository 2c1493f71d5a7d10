"""FastAPI dependencies: settings, database session, object store, the authenticated caller.

Authentication happens here (:func:`authenticated_principal`); authorization is declared per
route with ``imaging_hub.worklist.http.permissions.require`` and decided in that module.

A caller authenticates with ``Authorization: Bearer <token>`` (API clients: a user's access
token or a gateway's clinic token) or with the browser session cookie. Cookie-authenticated
requests that change state must carry the session's CSRF token in the ``X-CSRF-Token`` header
(see docs/security.md).
"""

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from imaging_hub.config import HubSettings
from imaging_hub.dicom.frames import FrameLayoutCache
from imaging_hub.errors import Forbidden
from imaging_hub.storage import ObjectStore
from imaging_hub.worklist.access.accounts import LoginThrottle, resolve_gateway_token, resolve_token
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import Gateway, User
from imaging_hub.worklist.studies.registration import LeasePolicy, SlaPolicy

SESSION_COOKIE = "ih_session"
CSRF_COOKIE = "ih_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class HubState:
    """Everything the app builds once at start-up (no globals: see create_app)."""

    settings: HubSettings
    sessions: sessionmaker[Session]
    store: ObjectStore
    sla: SlaPolicy
    lease: LeasePolicy
    access_batcher: audit.AccessBatcher = field(default_factory=audit.AccessBatcher)
    frame_layouts: FrameLayoutCache = field(default_factory=FrameLayoutCache)
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)
    #: Sessions for reads answered on the event loop (imaging_hub.worklist.dicomweb.fast): only
    #: when the database is a local SQLite file and the objects are local files; None otherwise.
    inline_sessions: sessionmaker[Session] | None = None


class Unauthenticated(Exception):
    """No valid credentials: answered with 401 and a WWW-Authenticate header."""


# Dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in its
# thread pool, a thread hop per dependency and request.


async def get_state(request: Request) -> HubState:
    state: HubState = request.app.state.hub
    return state


StateDep = Annotated[HubState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    session = state.sessions()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def bearer_credentials(request: Request) -> HTTPAuthorizationCredentials | None:
    """The ``Authorization: Bearer`` credentials as :data:`BearerDep` reads them (for routes
    that authenticate without FastAPI's dependency solving)."""
    return await _bearer(request)


def csrf_token_for(session_token: str) -> str:
    """The CSRF token bound to a browser session (derived, so nothing extra is stored)."""
    return hashlib.sha256(f"csrf:{session_token}".encode()).hexdigest()


def client_ip(request: Request) -> str:
    return request.client.host if request.client is not None else ""


def authenticated_principal(
    request: Request, session: SessionDep, state: StateDep, credentials: BearerDep
) -> User | Gateway:
    """The caller: a user (bearer access token or session cookie) or a clinic gateway.

    Raises Unauthenticated (401) without valid credentials, Forbidden (403) for a
    cookie-authenticated state-changing request without the matching CSRF header.
    """
    if credentials is not None:
        token = credentials.credentials
        if token.startswith("ihg_"):
            gateway = resolve_gateway_token(session, token)
            if gateway is None:
                raise Unauthenticated("The gateway token is invalid or revoked.")
            request.state.principal = gateway
            request.state.session_key = f"gateway:{gateway.id}"
            return gateway
        row = resolve_token(session, token, kind="access")
        if row is None:
            raise Unauthenticated("The token is invalid, expired or revoked.")
        request.state.principal = row.user
        request.state.session_key = f"token:{row.id}"
        request.state.token_id = row.id
        return row.user
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise Unauthenticated("A bearer token or a session is required.")
    row = resolve_token(session, cookie, kind="session")
    if row is None:
        raise Unauthenticated("Your session has ended; please sign in again.")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf_token_for(cookie).encode()):
            raise Forbidden("The request lacks the session's CSRF token (X-CSRF-Token header).")
    _slide_session(session, row, state.settings)
    request.state.principal = row.user
    request.state.session_key = f"token:{row.id}"
    request.state.token_id = row.id
    return row.user


def _slide_session(session: Session, row: Any, settings: HubSettings) -> None:
    """Extend an active browser session (idle timeout), at most once a minute, within its cap."""
    now = datetime.now(UTC)
    idle = timedelta(minutes=settings.session_idle_minutes)
    cap = row.created_at + timedelta(hours=settings.session_max_hours)
    target = min(now + idle, cap)
    if target - row.expires_at > timedelta(minutes=1):
        row.expires_at = target
        session.commit()


async def get_caller(
    request: Request, principal: Any = Depends(authenticated_principal)
) -> Caller:  # no I/O of its own: the principal is resolved once per request (FastAPI caches it)
    """The authenticated caller of this request, for the domain functions routes call."""
    return Caller(
        principal=principal,
        source_ip=client_ip(request),
        session_key=str(getattr(request.state, "session_key", client_ip(request))),
    )


CallerDep = Annotated[Caller, Depends(get_caller)]
