"""The wiring of permissions to HTTP routes: ``require("<permission>")`` and its inventory.

What a permission means and who holds it is decided in :mod:`imaging_hub.worklist.access.policy`;
this module only makes it a FastAPI dependency (authenticate, then :func:`authorize`).
"""

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from imaging_hub.worklist.access.policy import Permission, authorize
from imaging_hub.worklist.http.deps import authenticated_principal


def require(permission: Permission | str) -> Any:
    """A FastAPI dependency: authenticate the caller and check *permission*.

    Resolves to the :class:`User` (or, for ``gateway.*`` permissions, the :class:`Gateway`).
    No or bad credentials -> 401; authenticated without the permission -> 403.
    """
    perm = Permission(permission)

    async def check(principal: Any = Depends(authenticated_principal)) -> Any:  # no I/O
        return authorize(principal, perm)

    check.__permission__ = perm  # type: ignore[attr-defined]
    check.__name__ = f"require_{perm.value.replace('.', '_')}"
    return Depends(check)


def _walk_dependencies(dependant: Any) -> Iterable[Callable[..., Any]]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _walk_dependencies(dep)


def route_permissions(app: FastAPI) -> dict[tuple[str, str], Permission | None]:
    """Every (method, path) API route of *app* with its declared permission (None: undeclared).

    Public routes are reported with None too; check them against :data:`PUBLIC_ROUTES`.
    """
    result: dict[tuple[str, str], Permission | None] = {}
    # iter_route_contexts flattens included routers with their prefixes and router-level
    # dependencies (FastAPI keeps included routers as nested route objects).
    for ctx in iter_route_contexts(app.routes):
        if not isinstance(ctx.original_route, APIRoute):
            continue
        declared = [
            getattr(call, "__permission__", None) for call in _walk_dependencies(ctx.dependant)
        ]
        perms = [p for p in declared if p is not None]
        for method in ctx.methods or ():
            result[(method, str(ctx.path_format))] = perms[0] if perms else None
    return result
