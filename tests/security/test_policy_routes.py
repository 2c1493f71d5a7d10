"""Every route declares a permission, and exactly the roles holding it get through.

The test walks the app's routes (and cross-checks the OpenAPI schema), then calls each one with
a token of every role, a gateway token and no token. A caller is *refused* when the answer is
401, or 403 naming the route's permission; anything else (200, 404, 409, 422, ...) means the
policy let it through. Path parameters get values that fail typical validation so that allowed
calls change nothing.
"""

import re
from typing import Any

from starlette.routing import Mount

from imaging_hub.worklist.access.policy import GATEWAY, PRINCIPALS, PUBLIC_ROUTES, roles_with
from imaging_hub.worklist.http.permissions import route_permissions
from tests.security.conftest import ROLE_USERS, HubApp

PARAM = re.compile(r"\{([^}:]+)(:[^}]+)?\}")


def _fill(path: str) -> str:
    # "~" fails every UID / name pattern: allowed callers get 422 or 404 and nothing changes.
    return PARAM.sub("~x~", path)


def _call(hub_app: HubApp, method: str, path: str, headers: dict[str, str]) -> Any:
    return hub_app.client.request(method, _fill(path), headers=headers)


def _refused(response: Any, permission: str) -> bool:
    if response.status_code == 401:
        return True
    if response.status_code == 403:
        return f"({permission})" in response.json().get("detail", "")
    return False


def test_every_route_declares_a_permission_or_is_public(hub_app: HubApp) -> None:
    routes = route_permissions(hub_app.app)
    undeclared = sorted(k for k, v in routes.items() if v is None and k not in PUBLIC_ROUTES)
    assert not undeclared, f"routes without require(...) and not in PUBLIC_ROUTES: {undeclared}"
    schema = hub_app.client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method in operations:
            assert (method.upper(), path) in routes, f"{method} {path} not found in the routes"
    # Sub-applications would hide their routes from this check: only the static app is mounted.
    mounts = [r for r in hub_app.app.routes if isinstance(r, Mount)]
    assert [m.path for m in mounts] == [""], "mount routers with include_router, not app.mount"


def test_every_route_admits_exactly_the_declared_roles(hub_app: HubApp) -> None:
    routes = route_permissions(hub_app.app)
    checked = 0
    mismatches: list[str] = []
    for (method, path), permission in sorted(routes.items()):
        if permission is None:
            continue
        allowed = roles_with(permission)
        for principal in PRINCIPALS:
            if principal == GATEWAY:
                headers = {"Authorization": f"Bearer {hub_app.gateway_tokens['clinic-a']}"}
            else:
                headers = hub_app.headers(ROLE_USERS[principal])
            response = _call(hub_app, method, path, headers)
            assert response.status_code < 500, f"{method} {path} as {principal}: {response.text}"
            got_in = not _refused(response, permission)
            if got_in != (principal in allowed):
                mismatches.append(
                    f"{method} {path} ({permission}) as {principal}: {response.status_code} "
                    f"{response.text[:120]}"
                )
            checked += 1
        anonymous = _call(hub_app, method, path, {})
        assert anonymous.status_code == 401, f"{method} {path} without a token"
        assert anonymous.headers["content-type"].startswith("application/problem+json")
    assert not mismatches, "\n".join(mismatches)
    assert checked >= 5 * 10


def test_public_routes_need_no_token(hub_app: HubApp) -> None:
    for method, path in sorted(PUBLIC_ROUTES):
        if (method, path) not in route_permissions(hub_app.app) and not path.startswith(
            ("/docs", "/redoc", "/openapi")
        ):
            continue
        response = hub_app.client.request(method, path)
        assert response.status_code not in (401, 403), f"{method} {path}"
    assert hub_app.client.get("/").status_code == 200  # the browser app's static files


def test_bad_tokens_are_refused(hub_app: HubApp) -> None:
    for value in ("Bearer ihu_not-a-token", "Bearer ihg_not-a-token", "Basic YWRtaW46eA==", "x"):
        response = hub_app.client.get("/api/v1/auth/me", headers={"Authorization": value})
        assert response.status_code == 401, value
