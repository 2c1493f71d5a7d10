"""``POST /api/v1/auth/token`` (OAuth2 password form) and the caller's own account."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from imaging_hub.worklist.accounts import authenticate, issue_access_token
from imaging_hub.worklist.api.deps import CurrentUser, SessionDep, StateDep

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class MeOut(BaseModel):
    username: str
    display_name: str
    role: str
    institution: str
    institution_name: str


@router.post("/token", response_model=TokenOut)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    state: StateDep,
) -> TokenOut:
    user = authenticate(session, username=form.username, password=form.password)
    lifetime = timedelta(minutes=state.settings.access_token_minutes)
    token = issue_access_token(session, user=user, lifetime=lifetime)
    session.commit()
    return TokenOut(access_token=token, expires_in=int(lifetime.total_seconds()))


@router.get("/me", response_model=MeOut)
def me(user: CurrentUser) -> MeOut:
    return MeOut(
        username=user.username,
        display_name=user.display_name,
        role=user.role.value,
        institution=user.institution.code,
        institution_name=user.institution.name,
    )
