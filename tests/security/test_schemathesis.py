"""Schemathesis against the hub's OpenAPI document, under every principal.

Every operation is called with generated inputs as each principal — admin, radiologist,
consultant, the staff of clinic-a and of clinic-b, clinic-a's and clinic-b's gateways, and no
token — on a hub holding one real study of clinic-a. Generated path parameters are often
replaced by that study's real UIDs, so the calls reach the success paths (rendered frames,
metadata, multipart) and not only 404s. Checks on every response:

- no 5xx;
- the response matches the schema the OpenAPI document declares for its status, media type
  included (what an outside client generates its code from);
- nothing of clinic-a's patient reaches clinic-b's staff or gateway, nor a caller without a
  token.

Bounded (a few examples per operation and principal, long-poll waits cut to 0) and
derandomized, so a failure reproduces. Runs in process against the ASGI app.
"""

from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from tests.security.conftest import ROLE_USERS, HubApp
from tests.security.test_hostile_input import ingest_instance

# PHI of clinic-a's study that must never reach clinic-b or an anonymous caller.
SECRET_NAME = "泄露^检查"
SECRET_ID = "LEAKCHECK-A-7731"

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@dataclass(frozen=True)
class Principal:
    name: str
    #: May see clinic-a's patient.
    sees_clinic_a: bool
    examples: int


PRINCIPALS = (
    Principal("admin", True, 2),
    Principal("radiologist", True, 2),
    Principal("consultant", True, 1),
    Principal("staff-a", True, 2),
    Principal("staff-b", False, 2),
    Principal("gateway-a", True, 2),
    Principal("gateway-b", False, 2),
    Principal("anonymous", False, 1),
)


@dataclass(frozen=True)
class Known:
    study: str
    series: str
    instance: str


def _seed(hub_app: HubApp) -> Known:
    """One CT instance of clinic-a, ingested by its gateway and complete (unread)."""
    ds = ingest_instance(hub_app, name=SECRET_NAME, patient_id=SECRET_ID)
    return Known(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))


def _known_value(name: str, known: Known) -> str | None:
    lowered = name.lower()
    if "series" in lowered:
        return known.series
    if ("instance" in lowered and "study" not in lowered) or "sop" in lowered:
        return known.instance
    if "study" in lowered or lowered == "uid":
        return known.study
    if "frame" in lowered:
        return "1"
    return None


def _headers(hub_app: HubApp, principal: Principal) -> dict[str, str]:
    match principal.name:
        case "anonymous":
            return {}
        case "gateway-a":
            return {"Authorization": f"Bearer {hub_app.gateway_tokens['clinic-a']}"}
        case "gateway-b":
            return {"Authorization": f"Bearer {hub_app.gateway_tokens['clinic-b']}"}
        case "staff-a" | "staff-b":
            return hub_app.headers(principal.name)
        case role:
            return hub_app.headers(ROLE_USERS[role])


def _leaks(response: Any) -> bool:
    body = response.content or b""
    return any(
        secret in body
        for secret in (
            SECRET_ID.encode(),
            SECRET_NAME.encode("utf-8"),
            SECRET_NAME.replace("^", "").encode("utf-8"),
        )
    )


@pytest.mark.timeout(600)
def test_every_operation_under_every_principal(hub_app: HubApp) -> None:
    known = _seed(hub_app)
    schema = schemathesis.openapi.from_asgi("/openapi.json", hub_app.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    failures: list[str] = []
    succeeded: set[str] = set()

    def runner(operation: Any, principal: Principal) -> Any:
        # A fresh token per operation: logout and session deletion revoke the one they get.
        headers = _headers(hub_app, principal)

        # The simplest example (tried first) uses the known UIDs.
        @given(case=operation.as_strategy(), use_known=st.sampled_from([True, False]))
        @settings(
            max_examples=principal.examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any, use_known: bool) -> None:
            if use_known and case.path_parameters:
                for name in list(case.path_parameters):
                    value = _known_value(name, known)
                    if value is not None:
                        case.path_parameters[name] = value
            if isinstance(case.query, dict) and "wait" in case.query:
                case.query["wait"] = 0  # long-poll: its waiting is tested elsewhere
            response = case.call(headers=headers)
            if response.status_code < 300:
                succeeded.add(f"{case.method} {case.path}")
            case.validate_response(response, checks=CHECKS)
            if not principal.sees_clinic_a:
                assert not _leaks(response), (
                    f"{principal.name} got clinic-a's patient from "
                    f"{case.method} {case.formatted_path}: {response.status_code}"
                )

        return run

    for operation in operations:
        for principal in PRINCIPALS:
            try:
                runner(operation, principal)()
            except (Exception, BaseExceptionGroup) as exc:  # collect all, report together
                failures.append(
                    f"[{principal.name}] {operation.method.upper()} {operation.path}: {exc}"[:1500]
                )
    assert not failures, f"{len(failures)} failures:\n\n" + "\n\n".join(failures)
    # The known UIDs take the calls past 404 to the success paths of what a viewer fetches.
    reached = {
        "GET /dicomweb/studies/{study}/metadata",
        "GET /dicomweb/studies/{study}/series/{series}/instances/{instance}",
        "GET /dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
        "GET /api/v1/studies/{study_instance_uid}",
        "GET /api/v1/worklist",
    }
    assert reached <= succeeded, sorted(reached - succeeded)
    assert len(succeeded) >= 40, sorted(succeeded)
