"""The admin audit page in Debian chromium: lists and filters audit events, downloads them as
CSV, in zh-CN and en, and shows hostile strings (a username that is HTML) as text."""

import csv
import io
import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.support import login
from tests.peers.browser import OpenPage
from tests.peers.hub import HubProcess

pytestmark = pytest.mark.e2e

HOSTILE_USER = '<img src=x onerror="window.__xss=3">'
FORMULA_USER = '=HYPERLINK("http://evil")'


def test_audit_page_filters_and_csv(hub: HubProcess, open_page: OpenPage) -> None:
    for username in (HOSTILE_USER, FORMULA_USER):
        refused = httpx.post(
            f"{hub.url}/api/v1/auth/token",
            data={"username": username, "password": "wrong-password"},
            timeout=30,
        )
        assert refused.status_code == 401
    bp = open_page(hub.url)
    page = bp.page
    login(bp, hub, "admin")
    expect(page.locator("#session-user")).to_be_visible()
    page.goto(f"{hub.url}/#/admin/audit")
    expect(page.locator("h1")).to_have_text("审计日志")
    rows = page.locator("#audit-table tbody tr")
    expect(rows.first).to_be_visible()
    # Both failed logins and the admin's own sign-in, newest first.
    expect(page.locator("#audit-table tbody td.col-action").first).to_have_text("登录")
    objects = page.locator("#audit-table tbody td.col-object").all_inner_texts()
    assert f"user {HOSTILE_USER}" in objects
    assert page.evaluate("window.__xss") is None

    page.select_option("#audit-action", "auth.login_failed")
    page.click("#audit-apply")
    expect(rows).to_have_count(2)
    expect(page).to_have_url(re.compile(r"action=auth\.login_failed"))
    page.fill("#audit-user", "admin")
    page.click("#audit-apply")
    expect(page.locator("#audit-empty")).to_be_visible()
    page.fill("#audit-user", "")
    page.fill("#audit-study", "1.2.x")
    page.click("#audit-apply")
    expect(page.locator("#audit-notice .message-error")).to_be_visible()
    page.fill("#audit-study", "")
    page.click("#audit-apply")
    expect(rows).to_have_count(2)

    with page.expect_download() as info:
        page.click("#audit-csv")
    download = info.value
    assert download.suggested_filename.startswith("audit-")
    text = Path(download.path()).read_text(encoding="utf-8-sig")
    table = list(csv.reader(io.StringIO(text)))
    assert table[0][:5] == ["id", "at", "actor", "actor_kind", "action"]
    assert [r[4] for r in table[1:]] == ["auth.login_failed", "auth.login_failed"]
    object_ids = [r[6] for r in table[1:]]
    assert HOSTILE_USER in object_ids
    assert "'" + FORMULA_USER in object_ids  # a formula is defused with a leading quote

    page.click("#lang-switch")
    expect(page.locator("h1")).to_have_text("Audit log")
    expect(page.locator("#audit-table tbody td.col-action").first).to_have_text("Sign-in failed")
    page.reload()
    expect(rows).to_have_count(2)  # the filter survives a reload (it lives in the URL)
    assert bp.problems() == []
    assert page.evaluate("window.__xss") is None


def test_audit_page_is_for_admins_only(hub: HubProcess, open_page: OpenPage) -> None:
    bp = open_page(hub.url)
    login(bp, hub, "rad1")
    expect(bp.page.locator("#session-user")).to_be_visible()
    expect(bp.page.locator('#nav a[href="#/admin/audit"]')).to_have_count(0)
    bp.page.goto(f"{hub.url}/#/admin/audit")
    expect(bp.page.locator(".message-error")).to_be_visible()
    expect(bp.page.locator("#audit-table")).to_have_count(0)
