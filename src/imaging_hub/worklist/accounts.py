"""Accounts and credentials: argon2id password hashes, opaque bearer tokens, gateway tokens.

Tokens are 256-bit random strings; the database keeps only their SHA-256, so a leaked database
does not leak usable tokens. Disabling a user or revoking a token takes effect on the next request
because every request resolves its token against the database.
"""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging_hub.errors import Conflict, ImagingHubError, NotFound
from imaging_hub.worklist.models import AccessToken, Gateway, Institution, User

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters

# Login throttling: after this many consecutive failures the account is locked for a while.
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=5)
# A hash to verify against when the user does not exist, so timing does not reveal usernames.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


class AuthenticationFailed(ImagingHubError):
    """Wrong username or password, a disabled account, or a locked account."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(prefix: str) -> str:
    """A fresh random token such as ``ihu_...`` (user) or ``ihg_...`` (gateway)."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def authenticate(session: Session, *, username: str, password: str) -> User:
    """Check a password login, with throttling; raise AuthenticationFailed on any failure."""
    user = session.scalar(select(User).where(User.username == username))
    now = datetime.now(UTC)
    if user is None:
        verify_password(_DUMMY_HASH, password)
        raise AuthenticationFailed("Incorrect username or password.")
    if user.locked_until is not None and user.locked_until > now:
        raise AuthenticationFailed(
            "This account is temporarily locked after repeated failed logins; try again later."
        )
    if not verify_password(user.password_hash, password):
        user.failed_logins += 1
        if user.failed_logins >= MAX_FAILED_LOGINS:
            user.locked_until = now + LOCKOUT
            user.failed_logins = 0
        session.commit()
        raise AuthenticationFailed("Incorrect username or password.")
    if not user.is_active:
        raise AuthenticationFailed("This account is disabled.")
    user.failed_logins = 0
    user.locked_until = None
    return user


def issue_access_token(session: Session, *, user: User, lifetime: timedelta) -> str:
    token = new_token("ihu")
    session.add(
        AccessToken(
            token_hash=hash_token(token),
            user_id=user.id,
            expires_at=datetime.now(UTC) + lifetime,
        )
    )
    session.flush()
    return token


def resolve_access_token(session: Session, token: str) -> User | None:
    """The active user holding *token*, or None if the token is unknown, expired or revoked."""
    row = session.scalar(select(AccessToken).where(AccessToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None or row.expires_at <= datetime.now(UTC):
        return None
    user = row.user
    if not user.is_active:
        return None
    return user


def revoke_access_token(session: Session, token: str) -> None:
    row = session.scalar(select(AccessToken).where(AccessToken.token_hash == hash_token(token)))
    if row is not None and row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)


@dataclass(frozen=True)
class IssuedGatewayToken:
    gateway: Gateway
    token: str  # shown once, never stored


def create_gateway(
    session: Session, *, clinic: Institution, name: str, ae_title: str = ""
) -> IssuedGatewayToken:
    if not clinic.is_clinic:
        raise Conflict("Gateways belong to township or village clinics.")
    if session.scalar(select(Gateway).where(Gateway.name == name)) is not None:
        raise Conflict(f"A gateway named {name!r} already exists.")
    token = new_token("ihg")
    gateway = Gateway(
        name=name, institution_id=clinic.id, ae_title=ae_title, token_hash=hash_token(token)
    )
    session.add(gateway)
    session.flush()
    return IssuedGatewayToken(gateway=gateway, token=token)


def rotate_gateway_token(session: Session, *, gateway: Gateway) -> str:
    """Issue a new token; the previous one keeps working until the next rotation (no downtime)."""
    if gateway.revoked_at is not None:
        raise Conflict("This gateway is revoked; create a new one.")
    token = new_token("ihg")
    gateway.previous_token_hash = gateway.token_hash
    gateway.token_hash = hash_token(token)
    return token


def revoke_gateway(session: Session, *, gateway: Gateway) -> None:
    gateway.revoked_at = datetime.now(UTC)


def resolve_gateway_token(session: Session, token: str) -> Gateway | None:
    digest = hash_token(token)
    gateway = session.scalar(
        select(Gateway).where(
            (Gateway.token_hash == digest) | (Gateway.previous_token_hash == digest)
        )
    )
    if gateway is None or gateway.revoked_at is not None:
        return None
    return gateway


def get_institution(session: Session, code: str) -> Institution:
    inst = session.scalar(select(Institution).where(Institution.code == code))
    if inst is None:
        raise NotFound(f"No institution with code {code!r}.")
    return inst
