"""Accounts and credentials: argon2id password hashes, opaque bearer tokens, gateway tokens.

Tokens are 256-bit random strings; the database keeps only their SHA-256, so a leaked database
does not leak usable tokens. Disabling a user or revoking a token takes effect on the next request
because every request resolves its token against the database.
"""

import hashlib
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, joinedload

from imaging_hub.errors import Conflict, Forbidden, ImagingHubError, NotFound
from imaging_hub.worklist.db.models import AccessToken, Gateway, Institution, Role, User

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters

# Login throttling: after this many consecutive failures the account is locked for a while.
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=5)
# A hash to verify against when the user does not exist, so timing does not reveal usernames.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


class AuthenticationFailed(ImagingHubError):
    """Wrong username or password, a disabled account, or a locked account."""

    code = "authentication_failed"


class TooManyAttempts(ImagingHubError):
    """Too many failed logins from one address: answered with 429 and Retry-After."""

    code = "too_many_attempts"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LoginThrottle:
    """Per-address login throttling: at most *max_failures* failures per *window* seconds.

    Kept in memory by each hub process (a multi-worker hub allows that many per worker); the
    per-account lockout in the database is the limit that holds across workers.
    """

    def __init__(self, max_failures: int = 20, window: float = 300.0) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _prune(self, address: str, now: float) -> deque[float]:
        q = self._failures.setdefault(address, deque())
        while q and now - q[0] >= self.window:
            q.popleft()
        return q

    def check(self, address: str, now: float | None = None) -> None:
        """Raise TooManyAttempts if *address* used up its failures for the window."""
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._prune(address, now)
            if len(q) >= self.max_failures:
                retry = max(1, int(self.window - (now - q[0])) + 1)
                raise TooManyAttempts(
                    "Too many failed logins from your address; try again later.",
                    retry_after=retry,
                )

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._prune(address, now).append(now)
            if len(self._failures) > 100_000:  # bound memory under a distributed attack
                self._failures = {a: q for a, q in self._failures.items() if q}


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
            "This account is temporarily locked after repeated failed logins; try again later.",
            code="account_locked",
        )
    if not verify_password(user.password_hash, password):
        user.failed_logins += 1
        if user.failed_logins >= MAX_FAILED_LOGINS:
            user.locked_until = now + LOCKOUT
            user.failed_logins = 0
        session.commit()
        raise AuthenticationFailed("Incorrect username or password.")
    if not user.is_active:
        raise AuthenticationFailed("This account is disabled.", code="account_disabled")
    user.failed_logins = 0
    user.locked_until = None
    return user


def issue_access_token(
    session: Session, *, user: User, lifetime: timedelta, kind: str = "access"
) -> str:
    """A new bearer (``kind="access"``) or browser-session (``"session"``) token for *user*."""
    token = new_token("ihu" if kind == "access" else "ihs")
    session.add(
        AccessToken(
            token_hash=hash_token(token),
            user_id=user.id,
            kind=kind,
            expires_at=datetime.now(UTC) + lifetime,
        )
    )
    session.flush()
    return token


#: Built once (the hash is a bound parameter): building and keying it per request cost more
#: CPU than running it.
_TOKEN_BY_HASH = (
    select(AccessToken)
    .options(joinedload(AccessToken.user, innerjoin=True))
    .where(AccessToken.token_hash == bindparam("token_hash"))
)


def resolve_token(session: Session, token: str, *, kind: str = "access") -> AccessToken | None:
    """The live token row of *kind* for *token* whose user is active, else None.

    One indexed query (the token joined with its user), on every request: a revoked token or a
    disabled account stops working at once, in every worker.
    """
    row = session.scalar(_TOKEN_BY_HASH, {"token_hash": hash_token(token)})
    if row is None or row.kind != kind:
        return None
    if row.revoked_at is not None or row.expires_at <= datetime.now(UTC):
        return None
    if not row.user.is_active:
        return None
    return row


def resolve_access_token(session: Session, token: str) -> User | None:
    """The active user holding *token*, or None if the token is unknown, expired or revoked."""
    row = resolve_token(session, token)
    return row.user if row is not None else None


def revoke_access_token(session: Session, token: str) -> None:
    row = session.scalar(select(AccessToken).where(AccessToken.token_hash == hash_token(token)))
    if row is not None and row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)


def revoke_token_id(session: Session, *, token_id: int | None) -> None:
    """Revoke one token row by id (the credential of the current request)."""
    if token_id is None:
        return
    row = session.get(AccessToken, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)


def revoke_user_tokens(session: Session, *, user: User, keep_token_id: int | None = None) -> int:
    """Revoke every live token and session of *user* except *keep_token_id*; returns the count."""
    now = datetime.now(UTC)
    rows = session.scalars(
        select(AccessToken).where(AccessToken.user_id == user.id, AccessToken.revoked_at.is_(None))
    ).all()
    count = 0
    for row in rows:
        if row.id != keep_token_id:
            row.revoked_at = now
            count += 1
    return count


MIN_PASSWORD_LENGTH = 10


class WeakPassword(ImagingHubError):
    """A new password does not meet the rules (length, not the username)."""

    code = "weak_password"


def check_new_password(*, username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > 256:
        raise WeakPassword("A password may have at most 256 characters.")
    if password.casefold() == username.casefold():
        raise WeakPassword("A password must not be the username.")


def set_password(
    session: Session, *, user: User, new_password: str, keep_token_id: int | None = None
) -> None:
    """Set a new password and end every other token and session of the account."""
    check_new_password(username=user.username, password=new_password)
    user.password_hash = hash_password(new_password)
    user.password_changed_at = datetime.now(UTC)
    user.failed_logins = 0
    user.locked_until = None
    revoke_user_tokens(session, user=user, keep_token_id=keep_token_id)


def change_password(
    session: Session,
    *,
    user: User,
    current_password: str,
    new_password: str,
    keep_token_id: int | None = None,
) -> None:
    """The user's own password change: the current password must be right."""
    if not verify_password(user.password_hash, current_password):
        raise Forbidden("The current password is not correct.")
    set_password(session, user=user, new_password=new_password, keep_token_id=keep_token_id)


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


#: After a rotation the previous token keeps working this long, so the gateway box can be given
#: the new one without downtime; a leaked token is stopped at once by revoking the gateway.
GATEWAY_TOKEN_GRACE = timedelta(hours=72)


def rotate_gateway_token(session: Session, *, gateway: Gateway, now: datetime | None = None) -> str:
    """Issue a new token; the previous one keeps working for :data:`GATEWAY_TOKEN_GRACE`."""
    if gateway.revoked_at is not None:
        raise Conflict("This gateway is revoked; create a new one.")
    token = new_token("ihg")
    gateway.previous_token_hash = gateway.token_hash
    gateway.previous_token_expires_at = (now or datetime.now(UTC)) + GATEWAY_TOKEN_GRACE
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
    if gateway.token_hash != digest:  # the previous token: only within its grace
        until = gateway.previous_token_expires_at
        if until is not None and _aware(until) <= datetime.now(UTC):
            return None
    return gateway


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def get_institution(session: Session, code: str) -> Institution:
    inst = session.scalar(select(Institution).where(Institution.code == code))
    if inst is None:
        raise NotFound(f"No institution with code {code!r}.")
    return inst


def get_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"No user named {username!r}.")
    return user


USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def create_user(
    session: Session,
    *,
    username: str,
    password: str,
    role: Role,
    institution: Institution,
    display_name: str = "",
) -> User:
    """A new active account. Clinic staff belong to a clinic; the others to a hospital."""
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise Conflict(f"A user named {username!r} already exists.")
    _check_role_institution(role, institution)
    check_new_password(username=username, password=password)
    user = User(
        username=username,
        display_name=display_name,
        password_hash=hash_password(password),
        role=role,
        institution_id=institution.id,
        is_active=True,
    )
    session.add(user)
    session.flush()
    return user


def _check_role_institution(role: Role, institution: Institution) -> None:
    if role == Role.clinic_staff and not institution.is_clinic:
        raise Conflict("Clinic staff must belong to a township or village clinic.")
    if role != Role.clinic_staff and institution.is_clinic:
        raise Conflict("Only clinic staff belong to a township or village clinic.")


def update_user(
    session: Session,
    *,
    user: User,
    role: Role | None = None,
    institution: Institution | None = None,
    display_name: str | None = None,
) -> None:
    """Change role, institution or display name; a changed role or institution ends sessions."""
    new_role = role or user.role
    new_inst = institution or user.institution
    _check_role_institution(new_role, new_inst)
    changed_rights = new_role != user.role or new_inst.id != user.institution_id
    user.role = new_role
    user.institution_id = new_inst.id
    user.institution = new_inst
    if display_name is not None:
        user.display_name = display_name
    if changed_rights:
        revoke_user_tokens(session, user=user)


def set_active(session: Session, *, user: User, active: bool) -> None:
    """Disable (every token stops working on its next request) or enable an account."""
    user.is_active = active
    if not active:
        revoke_user_tokens(session, user=user)
    else:
        user.failed_logins = 0
        user.locked_until = None


def get_gateway(session: Session, name: str) -> Gateway:
    gateway = session.scalar(select(Gateway).where(Gateway.name == name))
    if gateway is None:
        raise NotFound(f"No gateway named {name!r}.")
    return gateway
