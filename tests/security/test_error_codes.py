"""Errors carry a stable machine-readable ``code`` (problem+json), documented and translated.

Gateways decide retry or park by code, the browser translates by code: so every code the source
can raise is listed in docs/errors.md and has a Chinese and an English message in the browser
app's errors.js, and the hub's answers carry it.
"""

import ast
import re
from pathlib import Path

import pytest

from imaging_hub.errors import RETRYABLE_CODES
from imaging_hub.worklist.http.problems import HTTP_CODES
from tests.security.conftest import HubApp

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "imaging_hub"
CODE = re.compile(r"^[a-z][a-z0-9_]*$")


def codes_in_source() -> set[str]:
    """``code = "..."`` class attributes and ``code="..."`` keywords anywhere in the package."""
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Assign)
                and [getattr(t, "id", None) for t in node.targets] == ["code"]
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                found.add(node.value.value)
            if (
                isinstance(node, ast.keyword)
                and node.arg == "code"
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                found.add(node.value.value)
    return found


ALL_CODES = codes_in_source() | set(HTTP_CODES.values())
# Codes that never reach the browser: the gateway's own, and the console's (audit verification,
# backup and restore).
GATEWAY_ONLY = {
    "spool_error",
    "forward_failed",
    "spool_file_unreadable",
    "object_not_found",
    "error",
    "audit_chain_broken",
    # imaging-hub admin backup / restore (console only)
    "backup_failed",
    "backup_incomplete",
    "backup_corrupt",
    "backup_incompatible",
    "restore_target_not_empty",
}


def test_codes_are_stable_identifiers() -> None:
    assert len(ALL_CODES) >= 20
    assert all(CODE.match(c) for c in ALL_CODES), sorted(ALL_CODES)
    assert RETRYABLE_CODES <= ALL_CODES


def test_every_code_is_documented() -> None:
    doc = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    missing = sorted(c for c in ALL_CODES if f"`{c}`" not in doc)
    assert missing == []


def test_the_browser_translates_every_code_the_hub_answers() -> None:
    js = (SRC / "viewer_static" / "errors.js").read_text(encoding="utf-8")
    zh = js[js.index('"zh-CN": {') : js.index("  en: {")]
    en = js[js.index("  en: {") : js.index("};")]
    for table in (zh, en):
        keys = set(re.findall(r"^\s+([a-z_0-9]+):", table, re.M))
        missing = sorted(ALL_CODES - GATEWAY_ONLY - keys)
        assert missing == []
    # No English left in the Chinese table (every message has Chinese characters).
    for line in zh.splitlines()[1:]:
        if ":" in line:
            assert re.search(r"[\u4e00-\u9fff]", line), line


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api/v1/studies/1.2.3", 404, "not_found"),
        ("GET", "/api/v1/worklist?limit=-5", 422, "validation_failed"),
        ("DELETE", "/api/v1/worklist", 405, "method_not_allowed"),
        ("GET", "/api/v1/worklist?patient=a%00b", 400, "bad_request"),
        ("GET", "/api/v1/stats/volume?start=2026-02-01&end=2026-01-01", 409, "invalid_window"),
    ],
)
def test_answers_carry_their_code(
    hub_app: HubApp, method: str, path: str, status: int, code: str
) -> None:
    response = hub_app.client.request(method, path, headers=hub_app.headers("admin"))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status


def test_unauthenticated_and_wrong_password_have_codes(hub_app: HubApp) -> None:
    anonymous = hub_app.client.get("/api/v1/worklist")
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "unauthenticated"
    wrong = hub_app.client.post(
        "/api/v1/auth/token", data={"username": "rad1", "password": "not-the-password"}
    )
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "authentication_failed"
