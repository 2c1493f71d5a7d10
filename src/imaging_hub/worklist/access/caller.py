"""Who is asking: the :class:`Caller` every domain function takes.

Edges build it (the HTTP layer from the authenticated request, the CLI with
:meth:`Caller.console`) and hand it to one domain function, which decides everything with it:
permission (:meth:`Caller.require`), scope (:mod:`imaging_hub.worklist.access.policy`), the audit
record (:func:`imaging_hub.worklist.audit.trail.record_for`) and the commit.
"""

import getpass
from dataclasses import dataclass
from typing import Any

from imaging_hub.errors import Forbidden
from imaging_hub.worklist.db.models import Gateway, User


@dataclass(frozen=True)
class Operator:
    """A person at the hub's console (``imaging-hub admin …``): whoever can run commands on the
    hub's box and read its configuration already holds its database. Holds the administrator's
    permissions; the audit trail records the operating-system user."""

    os_user: str


@dataclass(frozen=True)
class Caller:
    principal: User | Gateway | Operator
    #: Where the request came from (an IP address, or ``"console"``).
    source_ip: str = ""
    #: Which login (token or browser session): repeated reads are audited once per window each.
    session_key: str = ""

    @classmethod
    def console(cls) -> "Caller":
        user = getpass.getuser()
        return cls(principal=Operator(os_user=user), source_ip="console", session_key=f"cli:{user}")

    @property
    def actor(self) -> User | Gateway | None:
        """The account to record in the audit trail (None for the console operator)."""
        return None if isinstance(self.principal, Operator) else self.principal

    @property
    def user(self) -> User:
        """The calling user; Forbidden for a gateway or the console."""
        if not isinstance(self.principal, User):
            raise Forbidden("This can only be done by a signed-in user.")
        return self.principal

    @property
    def name(self) -> str:
        p = self.principal
        if isinstance(p, Operator):
            return f"console:{p.os_user}"
        if isinstance(p, Gateway):
            return f"gateway:{p.name}"
        return p.username

    def audit_detail(self) -> dict[str, Any]:
        """What the audit record adds about the caller beyond its account."""
        if isinstance(self.principal, Operator):
            return {"via": "cli", "os_user": self.principal.os_user}
        return {}

    def require(self, permission: str) -> None:
        """Forbidden (403) unless the caller holds *permission*."""
        from imaging_hub.worklist.access.policy import Permission, authorize

        authorize(self.principal, Permission(permission))
