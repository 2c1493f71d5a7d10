"""Administration of user accounts and clinic gateway credentials: the domain functions.

Each takes the :class:`Caller` and decides everything for its action: permission, the change,
the one audit record (``admin.user`` / ``admin.gateway`` with ``detail.op``) and the commit. The
HTTP routes (:mod:`.routes`) and ``imaging-hub admin user|gateway`` only translate.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imaging_hub.errors import Conflict
from imaging_hub.worklist.access import accounts
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import Gateway, Role, User

USERS = "admin.users"
GATEWAYS = "admin.gateways"


@dataclass(frozen=True)
class UserView:
    username: str
    display_name: str
    role: Role
    institution: str
    is_active: bool
    on_duty: bool
    locked_until: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> "UserView":
        return cls(
            username=user.username,
            display_name=user.display_name,
            role=user.role,
            institution=user.institution.code,
            is_active=user.is_active,
            on_duty=user.on_duty,
            locked_until=user.locked_until,
            created_at=user.created_at,
        )


@dataclass(frozen=True)
class IssuedToken:
    """A gateway's new token: shown once, the hub keeps only its hash."""

    name: str
    clinic: str
    token: str
    #: After a rotation: until when the previous token still works (None for a new gateway).
    previous_token_valid_until: datetime | None = None


@dataclass(frozen=True)
class GatewayView:
    name: str
    clinic: str
    ae_title: str
    revoked: bool

    @classmethod
    def of(cls, gateway: Gateway) -> "GatewayView":
        return cls(
            name=gateway.name,
            clinic=gateway.institution.code,
            ae_title=gateway.ae_title,
            revoked=gateway.revoked_at is not None,
        )


@dataclass(frozen=True)
class GatewayListing(GatewayView):
    last_seen_at: datetime | None = None


def _user_audit(session: Session, caller: Caller, username: str, **detail: object) -> None:
    audit.record_for(
        session, caller, audit.ADMIN_USER, object_type="user", object_id=username, detail=detail
    )


def _gateway_audit(session: Session, caller: Caller, name: str, **detail: object) -> None:
    audit.record_for(
        session, caller, audit.ADMIN_GATEWAY, object_type="gateway", object_id=name, detail=detail
    )


# --- Users -----------------------------------------------------------------------------------


def list_users(session: Session, caller: Caller) -> list[UserView]:
    """Every account, by username."""
    caller.require(USERS)
    return [UserView.of(u) for u in session.scalars(select(User).order_by(User.username))]


def create_user(
    session: Session,
    caller: Caller,
    *,
    username: str,
    password: str,
    role: Role,
    institution: str,
    display_name: str = "",
) -> UserView:
    """A new account (Conflict if the name is taken or the role does not fit the institution)."""
    caller.require(USERS)
    user = accounts.create_user(
        session,
        username=username,
        password=password,
        role=role,
        institution=accounts.get_institution(session, institution),
        display_name=display_name,
    )
    _user_audit(
        session, caller, user.username, op="created", role=user.role.value, institution=institution
    )
    session.commit()
    return UserView.of(user)


class LastAdmin(Conflict):
    """The change would leave the hub without an active administrator, or an administrator
    would lock themselves out."""

    code = "last_admin"


def _keep_an_admin(
    session: Session, caller: Caller, user: User, *, active: bool, role: Role
) -> None:
    """Refuse disabling oneself, and disabling or demoting the last active administrator."""
    losing_admin = user.role == Role.admin and user.is_active and (not active or role != Role.admin)
    if not losing_admin:
        return
    if isinstance(caller.principal, User) and caller.principal.id == user.id:
        raise LastAdmin(
            "You cannot disable your own account or take away your own administrator role; "
            "ask another administrator."
        )
    others = session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == Role.admin, User.is_active.is_(True), User.id != user.id)
    )
    if not others:
        raise LastAdmin("This is the last active administrator: enable or create another first.")


def update_user(
    session: Session,
    caller: Caller,
    username: str,
    *,
    role: Role | None = None,
    institution: str | None = None,
    display_name: str | None = None,
    is_active: bool | None = None,
) -> UserView:
    """Change role, institution or display name; ``is_active=False`` disables at once."""
    caller.require(USERS)
    user = accounts.get_user(session, username)
    _keep_an_admin(
        session,
        caller,
        user,
        active=user.is_active if is_active is None else is_active,
        role=role or user.role,
    )
    changes = {
        k: v.value if isinstance(v, Role) else v
        for k, v in {
            "role": role,
            "institution": institution,
            "display_name": display_name,
            "is_active": is_active,
        }.items()
        if v is not None
    }
    accounts.update_user(
        session,
        user=user,
        role=role,
        institution=accounts.get_institution(session, institution) if institution else None,
        display_name=display_name,
    )
    if is_active is not None:
        accounts.set_active(session, user=user, active=is_active)
    _user_audit(session, caller, user.username, op="updated", changes=changes)
    session.commit()
    return UserView.of(user)


def set_active(session: Session, caller: Caller, username: str, *, active: bool) -> UserView:
    """Enable (clearing a lockout) or disable an account: its tokens and sessions stop at once."""
    caller.require(USERS)
    user = accounts.get_user(session, username)
    _keep_an_admin(session, caller, user, active=active, role=user.role)
    accounts.set_active(session, user=user, active=active)
    _user_audit(session, caller, user.username, op="enabled" if active else "disabled")
    session.commit()
    return UserView.of(user)


def reset_password(session: Session, caller: Caller, username: str, *, password: str) -> None:
    """Set a new password (told to the user out of band); every session of the account ends."""
    caller.require(USERS)
    user = accounts.get_user(session, username)
    accounts.set_password(session, user=user, new_password=password)
    _user_audit(session, caller, user.username, op="password_reset")
    session.commit()


# --- Gateway credentials ---------------------------------------------------------------------


def list_gateways(session: Session, caller: Caller) -> list[GatewayListing]:
    """Every clinic gateway, by name (never its tokens)."""
    caller.require(GATEWAYS)
    return [
        GatewayListing(**vars(GatewayView.of(gw)), last_seen_at=gw.last_seen_at)
        for gw in session.scalars(select(Gateway).order_by(Gateway.name))
    ]


def create_gateway(
    session: Session, caller: Caller, *, name: str, clinic: str, ae_title: str = ""
) -> IssuedToken:
    """Register a clinic gateway and issue its token (shown once)."""
    caller.require(GATEWAYS)
    issued = accounts.create_gateway(
        session, clinic=accounts.get_institution(session, clinic), name=name, ae_title=ae_title
    )
    _gateway_audit(session, caller, name, op="created", clinic=clinic)
    session.commit()
    return IssuedToken(name=issued.gateway.name, clinic=clinic, token=issued.token)


def rotate_gateway(session: Session, caller: Caller, name: str) -> IssuedToken:
    """A new token; the previous one keeps working for 72 hours (no downtime)."""
    caller.require(GATEWAYS)
    gateway = accounts.get_gateway(session, name)
    token = accounts.rotate_gateway_token(session, gateway=gateway)
    _gateway_audit(session, caller, name, op="rotated")
    session.commit()
    return IssuedToken(
        name=gateway.name,
        clinic=gateway.institution.code,
        token=token,
        previous_token_valid_until=gateway.previous_token_expires_at,
    )


def revoke_gateway(session: Session, caller: Caller, name: str) -> GatewayView:
    """Revoke the gateway: both its tokens are refused from the next request on."""
    caller.require(GATEWAYS)
    gateway = accounts.get_gateway(session, name)
    accounts.revoke_gateway(session, gateway=gateway)
    _gateway_audit(session, caller, name, op="revoked")
    session.commit()
    return GatewayView.of(gateway)
