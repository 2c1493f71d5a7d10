"""Signing in and out, and changing one's own password: the account rules with their audit.

The HTTP edge (:mod:`imaging_hub.worklist.http.auth_routes`) only translates: form in, cookies
and tokens out. Here each action checks, changes, writes its one audit record and commits.
"""

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy.orm import Session

from imaging_hub.worklist.access.accounts import (
    AuthenticationFailed,
    LoginThrottle,
    authenticate,
    change_password,
    issue_access_token,
    resolve_token,
    revoke_access_token,
    revoke_token_id,
)
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import User

#: Usernames are at most this long; a longer one is cut before it is looked up or recorded.
USERNAME_MAX = 64


@dataclass(frozen=True)
class SignedIn:
    user: User
    token: str
    lifetime: timedelta


def sign_in(
    session: Session,
    *,
    username: str,
    password: str,
    source_ip: str,
    throttle: LoginThrottle,
    lifetime: timedelta,
    kind: Literal["access", "session"],
) -> SignedIn:
    """Check a password login (throttled per address) and issue a bearer token or a browser
    session. Success and failure are both audited; a failure raises AuthenticationFailed."""
    throttle.check(source_ip)
    name = username[:USERNAME_MAX]
    try:
        user = authenticate(session, username=name, password=password)
    except AuthenticationFailed as exc:
        session.rollback()
        throttle.failed(source_ip)
        audit.record(
            session,
            actor=None,
            action=audit.LOGIN_FAILED,
            object_type="user",
            object_id=name,
            source_ip=source_ip,
            detail={"reason": str(exc)},
        )
        session.commit()
        raise
    token = issue_access_token(session, user=user, lifetime=lifetime, kind=kind)
    audit.record_for(
        session,
        Caller(principal=user, source_ip=source_ip),
        audit.LOGIN,
        object_type="user",
        object_id=user.username,
        detail={"via": "token" if kind == "access" else "session"},
    )
    session.commit()
    return SignedIn(user=user, token=token, lifetime=lifetime)


def sign_out(session: Session, caller: Caller, *, token_id: int | None) -> None:
    """Revoke the token or browser session the caller used."""
    user = caller.user
    revoke_token_id(session, token_id=token_id)
    audit.record_for(session, caller, audit.LOGOUT, object_type="user", object_id=user.username)
    session.commit()


def end_browser_session(session: Session, *, cookie: str | None, source_ip: str) -> None:
    """Sign out of a browser session by its cookie (idempotent: an unknown cookie does nothing)."""
    row = resolve_token(session, cookie, kind="session") if cookie else None
    if row is None or cookie is None:
        return
    revoke_access_token(session, cookie)
    audit.record_for(
        session,
        Caller(principal=row.user, source_ip=source_ip),
        audit.LOGOUT,
        object_type="user",
        object_id=row.user.username,
    )
    session.commit()


def change_own_password(
    session: Session,
    caller: Caller,
    *,
    current_password: str,
    new_password: str,
    keep_token_id: int | None,
) -> None:
    """Change the caller's password; every other token and session of the account ends."""
    caller.require("account.self")
    user = caller.user
    change_password(
        session,
        user=user,
        current_password=current_password,
        new_password=new_password,
        keep_token_id=keep_token_id,
    )
    # The report-signing key is encrypted with the password: re-encrypt it (same certificate).
    from imaging_hub.worklist.reports.credentials import rewrap_for_new_password

    rewrapped = rewrap_for_new_password(
        session, user=user, old_password=current_password, new_password=new_password
    )
    audit.record_for(
        session,
        caller,
        audit.PASSWORD_CHANGED,
        object_type="user",
        object_id=user.username,
        detail={"signing_key_reencrypted": True} if rewrapped else None,
    )
    session.commit()
