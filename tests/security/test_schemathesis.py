"""Schemathesis against the hub's OpenAPI document: every operation, generated inputs, a valid
token of a principal allowed to call it; no 5xx and no response that breaks the schema.

Bounded to a few examples per operation (the whole run stays well under a minute) and
derandomized, so a failure reproduces. Runs in process against the ASGI app on a copy of the
demo database.
"""

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from imaging_hub.worklist.access.policy import GATEWAY, PRINCIPALS, roles_with
from imaging_hub.worklist.http.permissions import route_permissions
from tests.security.conftest import ROLE_USERS, HubApp


def _headers(hub_app: HubApp, method: str, path: str) -> dict[str, str]:
    permission = route_permissions(hub_app.app).get((method.upper(), path))
    if permission is None:
        return {}
    holders = roles_with(permission)
    for principal in PRINCIPALS:
        if principal in holders:
            if principal == GATEWAY:
                return {"Authorization": f"Bearer {hub_app.gateway_tokens['clinic-a']}"}
            return hub_app.headers(ROLE_USERS[principal])
    return {}


CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def test_every_operation_against_its_schema(hub_app: HubApp) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", hub_app.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=6,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            headers = _headers(hub_app, case.method, case.path)
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # collect all failures, report together
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)
