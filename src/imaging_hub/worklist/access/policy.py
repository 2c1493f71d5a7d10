"""Authorization in one place: named permissions, the roles that hold them, and study scopes.

Every HTTP route declares the permission it needs with ``require("<permission>")`` from
:mod:`imaging_hub.worklist.http.permissions` (a FastAPI dependency carrying the permission as an
attribute, so tests can read it back from the app), or is listed in :data:`PUBLIC_ROUTES`. This
module imports nothing from FastAPI: domain functions call :func:`authorize` themselves.
``tests/security/test_policy_routes.py`` calls every route
with every role's token and checks the answer against :data:`GRANTS`; a route that declares
nothing fails that test.

Which studies a caller sees is decided here too (:func:`study_scope`, :func:`can_see_study`,
:func:`get_study_in_scope`), so "a clinic sees only its own studies" lives in one function that
the worklist, reports and DICOMweb all use.

Usage in a router::

    from imaging_hub.worklist.http.permissions import require

    @router.get("/studies/{study_instance_uid}")
    def get_study(
        study_instance_uid: str,
        user: Annotated[User, require("study.read_phi")],
        session: SessionDep,
    ) -> ...:
        study = get_study_in_scope(session, user=user, study_instance_uid=study_instance_uid)

A gateway permission (``gateway.*``) resolves to the calling :class:`Gateway` instead of a user.
"""

import enum
import functools
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import ColumnElement, Select, exists, false, or_, select, true
from sqlalchemy.orm import Session, aliased

from imaging_hub.errors import Forbidden, NotFound
from imaging_hub.worklist.access.caller import Operator
from imaging_hub.worklist.db.models import (
    Consultation,
    Gateway,
    Institution,
    Role,
    Study,
    User,
)

Principal = TypeVar("Principal", bound=User | Gateway | Operator)


class Permission(enum.StrEnum):
    """What a caller may do. Names are ``<area>.<verb>``; add new ones here, with their grants."""

    account_self = "account.self"  # own profile, password change, logout
    worklist_read = "worklist.read"  # the reading worklist (lists PHI of studies in scope)
    study_read_phi = "study.read_phi"  # open a study in scope: details, timeline, images
    study_claim = "study.claim"  # claim / release / heartbeat / next
    study_assign = "study.assign"  # reassign a study to a radiologist
    study_prioritize = "study.prioritize"  # change a study's priority (and so its due time)
    study_escalate = "study.escalate"  # ask a city/province institution for an opinion
    study_opinion = "study.opinion"  # a consultant's opinion on an escalated study
    study_cancel = "study.cancel"
    report_read = "report.read"  # read/download a signed report in scope
    report_write = "report.write"  # draft a report
    report_sign = "report.sign"  # sign a report or an addendum
    report_acknowledge = "report.acknowledge"  # a clinic user records receipt of a critical result
    report_templates = "report.templates"  # import report templates
    clinic_studies = "clinic.studies"  # the clinic page: a clinic's studies with report status
    order_read = "order.read"
    order_write = "order.write"  # register exam orders at the clinic
    stats_read = "stats.read"  # volumes, turnaround, workload (no PHI)
    dicomweb_read = "dicomweb.read"  # QIDO-RS / WADO-RS in scope
    dicomweb_store = "dicomweb.store"  # STOW-RS into the caller's own clinic
    admin_users = "admin.users"
    admin_institutions = "admin.institutions"
    admin_gateways = "admin.gateways"
    audit_read = "audit.read"
    gateway_ingest = "gateway.ingest"  # a clinic gateway uploads instances, completes studies
    gateway_heartbeat = "gateway.heartbeat"  # a clinic gateway reports its status
    gateway_reports = "gateway.reports"  # a clinic gateway pulls signed reports of its clinic
    gateway_orders = "gateway.orders"  # a clinic gateway syncs its clinic's orders, reports MPPS


P = Permission

# Who holds which permission. "gateway" is the principal of a clinic gateway token.
GATEWAY = "gateway"
GRANTS: dict[str, frozenset[Permission]] = {
    Role.admin.value: frozenset(
        {
            P.account_self,
            P.worklist_read,
            P.study_read_phi,
            P.study_assign,
            P.study_prioritize,
            P.study_cancel,
            P.report_read,
            P.report_templates,
            P.clinic_studies,
            P.order_read,
            P.stats_read,
            P.dicomweb_read,
            P.admin_users,
            P.admin_institutions,
            P.admin_gateways,
            P.audit_read,
        }
    ),
    Role.radiologist.value: frozenset(
        {
            P.account_self,
            P.worklist_read,
            P.study_read_phi,
            P.study_claim,
            P.study_prioritize,
            P.study_escalate,
            P.study_cancel,
            P.report_read,
            P.report_write,
            P.report_sign,
            P.order_read,
            P.stats_read,
            P.dicomweb_read,
        }
    ),
    Role.consultant.value: frozenset(
        {
            P.account_self,
            P.worklist_read,
            P.study_read_phi,
            P.study_opinion,
            P.report_read,
            P.dicomweb_read,
        }
    ),
    Role.clinic_staff.value: frozenset(
        {
            P.account_self,
            P.study_read_phi,
            P.report_read,
            P.report_acknowledge,
            P.clinic_studies,
            P.order_read,
            P.order_write,
            P.dicomweb_read,
            P.dicomweb_store,
        }
    ),
    GATEWAY: frozenset(
        {P.gateway_ingest, P.gateway_heartbeat, P.gateway_reports, P.gateway_orders}
    ),
}

PRINCIPALS: tuple[str, ...] = (*(r.value for r in Role), GATEWAY)

# Routes anyone may call without a token: (method, path template). Static files of the browser
# app are served by a mount, not a route, and are public too.
PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("POST", "/api/v1/auth/token"),
        ("POST", "/api/v1/auth/session"),
        ("GET", "/api/v1/auth/session"),
        ("DELETE", "/api/v1/auth/session"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("HEAD", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
        ("HEAD", "/docs/oauth2-redirect"),
        ("GET", "/redoc"),
        ("HEAD", "/redoc"),
        ("HEAD", "/openapi.json"),
        # The hub CA certificate and its CRL: what anyone verifying a report needs (no PHI).
        ("GET", "/api/v1/pki/ca.pem"),
        ("GET", "/api/v1/pki/crl.der"),
    }
)


def principal_name(principal: "User | Gateway | Operator") -> str:
    """``"gateway"`` for a gateway, the role for a user; the console operator acts as admin."""
    if isinstance(principal, Gateway):
        return GATEWAY
    if isinstance(principal, Operator):
        return Role.admin.value
    return principal.role.value


def allowed(principal: "User | Gateway | Operator", permission: Permission | str) -> bool:
    """Whether *principal* holds *permission* (no scope check: see :func:`study_scope`)."""
    return Permission(permission) in GRANTS[principal_name(principal)]


def roles_with(permission: Permission | str) -> frozenset[str]:
    """The principals (role names and ``"gateway"``) holding *permission*."""
    perm = Permission(permission)
    return frozenset(name for name, perms in GRANTS.items() if perm in perms)


def is_gateway_permission(permission: Permission | str) -> bool:
    return Permission(permission) in GRANTS[GATEWAY]


def authorize(principal: Principal, permission: Permission) -> Principal:
    """*principal* if it holds *permission*, else Forbidden (403) naming the permission."""
    if not allowed(principal, permission):
        raise Forbidden(f"Your account is not allowed to do this ({permission.value}).")
    return principal


# --- Scopes: which studies a caller may see ---------------------------------------------------


class Scope(enum.StrEnum):
    all = "all"  # every study (admin)
    institution = "institution"  # studies of clinics under the caller's institution (radiologist)
    assigned = "assigned"  # studies escalated or assigned to the caller (consultant)
    clinic = "clinic"  # the caller's own clinic (clinic staff, gateways)


SCOPES: dict[str, Scope] = {
    Role.admin.value: Scope.all,
    Role.radiologist.value: Scope.institution,
    Role.consultant.value: Scope.assigned,
    Role.clinic_staff.value: Scope.clinic,
    GATEWAY: Scope.clinic,
}


def scope_of(principal: User | Gateway) -> Scope:
    return SCOPES[principal_name(principal)]


@functools.lru_cache(maxsize=4096)
def institution_subtree_ids(institution_id: int) -> Select[tuple[int]]:
    """A subquery: ids of the institution and every institution below it in the five-level chain.

    One recursive CTE evaluated inside the query that uses it, so every request sees the
    institutions as they are now (a new or moved institution counts at once, in every worker)
    without a round trip of its own. The expression (not its result) is kept per institution:
    SQLAlchemy constructs are immutable, and building this one cost about a millisecond of CPU
    per request.
    """
    below = aliased(Institution)
    tree = (
        select(Institution.id)
        .where(Institution.id == institution_id)
        .cte("institution_subtree", recursive=True, nesting=True)
    )
    tree = tree.union_all(select(below.id).where(below.parent_id == tree.c.id))
    return select(tree.c.id)


def institution_subtree(session: Session, institution_id: int) -> set[int]:
    """Ids of the institution and every institution below it in the five-level chain."""
    return set(session.scalars(institution_subtree_ids(institution_id)))


@dataclass(frozen=True)
class ScopeKey:
    """Everything :func:`study_scope` depends on, read from the principal on every request."""

    scope: Scope
    user_id: int
    institution_id: int
    active: bool


def scope_key(principal: User | Gateway) -> ScopeKey:
    scope = scope_of(principal)
    if isinstance(principal, Gateway):
        return ScopeKey(scope, 0, principal.institution_id, True)
    return ScopeKey(scope, principal.id, principal.institution_id, principal.is_active)


@functools.lru_cache(maxsize=4096)
def scope_condition(key: ScopeKey) -> ColumnElement[bool]:
    """The SQL condition of :func:`study_scope` for *key*, built once per key.

    Like :func:`institution_subtree_ids`, only the expression is kept (SQLAlchemy constructs are
    immutable); the database evaluates it in every query, and the key is read from the caller on
    every request, so a changed role, institution or account counts at once. One expression
    object per key also lets statements that embed it be built once (see
    ``imaging_hub.worklist.dicomweb.search``).
    """
    if key.scope is Scope.all:
        return true()
    if key.scope is Scope.clinic:
        return Study.clinic_id == key.institution_id
    if not key.active:
        return false()
    below = institution_subtree_ids(key.institution_id)
    if key.scope is Scope.institution:
        return Study.clinic_id.in_(below)
    # Scope.assigned (consultants): studies held by them, or on which their institution was asked
    # for a consultation (open or answered: the opinion stays readable), from below it.
    asked = exists().where(
        Consultation.study_id == Study.id,
        Consultation.to_institution_id == key.institution_id,
    )
    return or_(Study.assigned_to_id == key.user_id, asked & Study.clinic_id.in_(below))


def study_scope(session: Session, principal: User | Gateway) -> ColumnElement[bool]:
    """A SQL condition on :class:`Study` selecting exactly the studies *principal* may see.

    Use it in every query that lists or fetches studies (and join through Study for series,
    instances, reports): ``select(Study).where(study_scope(session, user))``.
    """
    return scope_condition(scope_key(principal))


def can_see_study(session: Session, principal: User | Gateway, study: Study) -> bool:
    """Whether *study* is inside *principal*'s scope."""
    found = session.scalar(
        select(Study.id).where(Study.id == study.id, study_scope(session, principal))
    )
    return found is not None


def get_study_in_scope(
    session: Session, *, principal: User | Gateway, study_instance_uid: str
) -> Study:
    """The study, or NotFound when it does not exist *or* is outside the caller's scope.

    Out-of-scope studies answer exactly like unknown ones (404), so a clinic cannot probe for
    another clinic's StudyInstanceUIDs.
    """
    study = session.scalar(
        select(Study).where(
            Study.study_instance_uid == study_instance_uid, study_scope(session, principal)
        )
    )
    if study is None:
        raise NotFound("No study with this StudyInstanceUID is visible to you.")
    return study
