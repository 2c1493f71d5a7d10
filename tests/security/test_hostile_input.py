"""Hostile HTTP input against the whole API: SQL metacharacters in every query filter (SQLite
and PostgreSQL), path traversal in static files and in UIDs, oversized bodies, a patient named
with HTML/JS, and the security headers on every kind of response."""

import hashlib
import io
import re
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from imaging_hub.errors import ImagingHubError
from imaging_hub.storage.base import instance_key, report_key
from imaging_hub.worklist.access.policy import PRINCIPALS, roles_with
from imaging_hub.worklist.db.models import Institution, Study
from imaging_hub.worklist.http.permissions import route_permissions
from tests.security.conftest import ROLE_USERS, HubApp

BUNDLED = Path(__file__).resolve().parents[2] / "src" / "imaging_hub" / "dicom" / "samples"
HOSTILE_NAME = "<script>alert('pwn')</script>^<img src=x onerror=alert(1)>"
SQL_PAYLOADS = [
    "' OR '1'='1",
    "1; DROP TABLE studies; --",
    "%",
    "_",
    "\\",
    '"',
    "王' --",
    "') UNION SELECT password_hash FROM users --",
    "\x00",
    "a" * 70,
]


def ingest(hub_app: HubApp, *, name: str, clinic: str = "clinic-a") -> str:
    """A CT instance of *clinic* with this patient name, ingested and complete; its study UID."""
    return str(ingest_instance(hub_app, name=name, clinic=clinic).StudyInstanceUID)


def ingest_instance(
    hub_app: HubApp, *, name: str, clinic: str = "clinic-a", patient_id: str = "<b>ID-1</b>"
) -> pydicom.Dataset:
    """:func:`ingest`, answering the ingested data set (its study, series and instance UIDs)."""
    ds = pydicom.dcmread(BUNDLED / "CT_small.dcm")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    auth = {"Authorization": f"Bearer {hub_app.gateway_tokens[clinic]}"}
    put = hub_app.client.put(
        f"/api/v1/ingest/instances/{ds.SOPInstanceUID}",
        content=data,
        headers={**auth, "X-Content-SHA256": hashlib.sha256(data).hexdigest()},
    )
    assert put.status_code == 201, put.text
    done = hub_app.client.post(
        f"/api/v1/ingest/studies/{ds.StudyInstanceUID}/complete",
        json={"sop_instance_uids": [str(ds.SOPInstanceUID)]},
        headers=auth,
    )
    assert done.status_code == 200, done.text
    return ds


def _caller_for(hub_app: HubApp, permission: Any) -> dict[str, str] | None:
    for principal in PRINCIPALS:
        if principal in roles_with(permission) and principal in ROLE_USERS:
            return hub_app.headers(ROLE_USERS[principal])
    return None


def _string_params(operation: dict[str, Any]) -> list[str]:
    names = []
    for param in operation.get("parameters", []):
        if param.get("in") != "query":
            continue
        schema = param.get("schema", {})
        options = schema.get("anyOf", [schema])
        types = {o.get("type") for o in options}
        items = {o.get("items", {}).get("type") for o in options if o.get("type") == "array"}
        if "string" in types or "string" in items:
            names.append(param["name"])
    return names


def _metacharacters_in_every_filter(hub_app: HubApp) -> int:
    ingest(hub_app, name="张^三")
    schema = hub_app.client.get("/openapi.json").json()
    permissions = route_permissions(hub_app.app)
    tried = 0
    for path, operations in schema["paths"].items():
        operation = operations.get("get")
        if operation is None:
            continue
        names = _string_params(operation)
        permission = permissions.get(("GET", path))
        if not names or permission is None:
            continue
        headers = _caller_for(hub_app, permission)
        if headers is None:
            continue
        url = re.sub(r"\{[^}]+\}", "1.2.3", path)
        for name in names:
            for payload in SQL_PAYLOADS:
                response = hub_app.client.get(url, params={name: payload}, headers=headers)
                assert response.status_code < 500, f"GET {path}?{name}={payload!r}: {response.text}"
                assert response.status_code in (200, 400, 404, 409, 422), (path, name, payload)
                if "\x00" in payload:
                    assert response.status_code == 400, (path, name)
                tried += 1
    with hub_app.sessions() as session:  # every table is still there, the study too
        assert session.scalar(select(func.count()).select_from(Study)) == 1
        assert session.scalar(select(func.count()).select_from(Institution)) == 5
    # Wildcards are literal: "%" matches no name, it does not match every name.
    rad = hub_app.headers("rad1")
    for wildcard in ("%", "_", "' OR '1'='1"):
        found = hub_app.client.get("/api/v1/worklist", params={"patient": wildcard}, headers=rad)
        assert found.json()["items"] == [], wildcard
    return tried


def test_sql_metacharacters_in_every_filter_sqlite(hub_app: HubApp) -> None:
    assert _metacharacters_in_every_filter(hub_app) >= 3 * len(SQL_PAYLOADS)


@pytest.mark.postgres
def test_sql_metacharacters_in_every_filter_postgres(pg_hub_app: HubApp) -> None:
    assert _metacharacters_in_every_filter(pg_hub_app) >= 3 * len(SQL_PAYLOADS)


def test_patient_named_with_html_is_data(hub_app: HubApp) -> None:
    uid = ingest(hub_app, name=HOSTILE_NAME)
    response = hub_app.client.get("/api/v1/worklist", headers=hub_app.headers("rad1"))
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    item = next(i for i in response.json()["items"] if i["study_instance_uid"] == uid)
    assert item["patient_name"] == HOSTILE_NAME  # stored and returned as it came, as data
    assert item["patient_id"] == "<b>ID-1</b>"
    detail = hub_app.client.get(f"/api/v1/studies/{uid}", headers=hub_app.headers("rad1"))
    assert detail.status_code == 200
    assert detail.headers["content-type"] == "application/json"
    assert HOSTILE_NAME in detail.json()["study"]["patient_name"]


@pytest.mark.parametrize(
    "path",
    [
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2f..%2fetc%2fpasswd",
        "/%2e%2e%5c%2e%2e%5cetc%5cpasswd",
        "/....//....//etc/passwd",
        "/index.html%00.js",
        "/static/../../pyproject.toml",
    ],
)
def test_static_files_do_not_escape_their_directory(hub_app: HubApp, path: str) -> None:
    response = hub_app.client.get(path)
    assert response.status_code in (400, 404), path
    assert b"root:" not in response.content and b"[project]" not in response.content


@pytest.mark.parametrize(
    "uid", ["..%2F..%2Fetc%2Fpasswd", "1.2.3%2F..%2F..", "1.2.3%00", "1" * 65, "1..2", ".1.2"]
)
def test_uids_in_urls_are_validated(hub_app: HubApp, uid: str) -> None:
    rad = hub_app.headers("rad1")
    for url in (f"/api/v1/studies/{uid}", f"/api/v1/studies/{uid}/claim"):
        response = hub_app.client.request("GET" if "claim" not in url else "POST", url, headers=rad)
        assert response.status_code in (400, 404, 405, 422), (url, response.status_code)
    gateway = {"Authorization": f"Bearer {hub_app.gateway_tokens['clinic-a']}"}
    put = hub_app.client.put(
        f"/api/v1/ingest/instances/{uid}",
        content=b"x",
        headers={**gateway, "X-Content-SHA256": hashlib.sha256(b"x").hexdigest()},
    )
    # 404 or 405: "%2F" decodes to "/", so the path is no longer the ingest route's.
    assert put.status_code in (400, 404, 405, 422), uid


@pytest.mark.parametrize(
    ("clinic", "uid"),
    [("clinic-a", "../../etc"), ("../x", "1.2.3"), ("clinic-a", "1.2.3/../../x"), ("A", "1")],
)
def test_object_keys_refuse_traversal(clinic: str, uid: str) -> None:
    with pytest.raises(ImagingHubError):
        instance_key(clinic, uid, "1.2.3", "1.2.3.4")
    with pytest.raises(ImagingHubError):
        report_key(clinic, uid, "report.pdf") if clinic != "clinic-a" else report_key(
            clinic, "1.2.3", uid
        )


def test_oversized_bodies_get_413(hub_app: HubApp) -> None:
    admin = hub_app.headers("admin")
    big = {"username": "x" * 10, "password": "p" * (2 * 1024 * 1024), "role": "admin"}
    response = hub_app.client.post("/api/v1/admin/users", json=big, headers=admin)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "payload_too_large"
    form = hub_app.client.post(
        "/api/v1/auth/token", data={"username": "admin", "password": "p" * (2 * 1024 * 1024)}
    )
    assert form.status_code == 413

    def chunks() -> Any:
        for _ in range(40):
            yield b"{" * 65536

    streamed = hub_app.client.post(
        "/api/v1/auth/password",
        content=chunks(),
        headers={**admin, "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413  # no Content-Length: counted while streaming
    assert streamed.json()["code"] == "payload_too_large"


def test_security_headers_everywhere(hub_app: HubApp) -> None:
    for path in ("/", "/api/v1/auth/me", "/healthz", "/nope", "/openapi.json"):
        response = hub_app.client.get(path)
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp, path
        # WASM compilation for the viewer's codecs is allowed; JavaScript eval() never is.
        assert "'unsafe-eval'" not in csp, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-frame-options"] == "DENY"
        assert "camera=()" in response.headers["permissions-policy"]
    assert hub_app.client.get("/api/v1/auth/me").headers["cache-control"] == "no-store"
    docs = hub_app.client.get("/docs")
    assert docs.status_code == 200
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]
    index = hub_app.client.get("/").text
    assert "<script>" not in index and " onload=" not in index and "style=" not in index


def test_api_paths_answer_as_the_api_not_as_the_browser_apps_files(hub_app: HubApp) -> None:
    """A wrong method on an API path is 405 with Allow, an unknown API path a problem+json 404;
    the browser app's files are still served everywhere else."""
    rad = hub_app.headers("rad1")
    head = hub_app.client.head("/dicomweb/studies", headers=rad)
    assert head.status_code == 405 and "GET" in head.headers["allow"]
    delete = hub_app.client.delete("/api/v1/worklist", headers=rad)
    assert delete.status_code == 405 and "GET" in delete.headers["allow"]
    unknown = hub_app.client.get("/api/v1/no-such-thing", headers=rad)
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    page = hub_app.client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
