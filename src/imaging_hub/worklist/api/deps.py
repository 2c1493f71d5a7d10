"""FastAPI dependencies: settings, database session, object store, the authenticated caller."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from imaging_hub.config import HubSettings
from imaging_hub.errors import Forbidden
from imaging_hub.storage import ObjectStore
from imaging_hub.worklist.accounts import resolve_access_token, resolve_gateway_token
from imaging_hub.worklist.ingest import SlaPolicy
from imaging_hub.worklist.models import Gateway, Role, User


@dataclass
class HubState:
    """Everything the app builds once at start-up (no globals: see create_app)."""

    settings: HubSettings
    sessions: sessionmaker[Session]
    store: ObjectStore
    sla: SlaPolicy


class Unauthenticated(Exception):
    """No valid credentials: answered with 401 and a WWW-Authenticate header."""


def get_state(request: Request) -> HubState:
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


def current_user(session: SessionDep, credentials: BearerDep) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("A bearer token is required.")
    user = resolve_access_token(session, credentials.credentials)
    if user is None:
        raise Unauthenticated("The token is invalid, expired or revoked.")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def current_gateway(session: SessionDep, credentials: BearerDep) -> Gateway:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("A gateway token is required.")
    gateway = resolve_gateway_token(session, credentials.credentials)
    if gateway is None:
        raise Unauthenticated("The gateway token is invalid or revoked.")
    return gateway


CurrentGateway = Annotated[Gateway, Depends(current_gateway)]


def require_roles(*roles: Role) -> object:
    def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise Forbidden("Your role does not allow this action.")
        return user

    return Depends(check)


def reading_user(user: CurrentUser) -> User:
    """Radiologists, consultants and admins use the worklist; clinic staff do not."""
    if user.role not in (Role.radiologist, Role.consultant, Role.admin):
        raise Forbidden("Clinic accounts cannot use the reading worklist.")
    return user


ReadingUser = Annotated[User, Depends(reading_user)]
