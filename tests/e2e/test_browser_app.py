"""The browser app in Debian chromium against a real hub process (issue: browser app shell).

Studies reach the hub through the gateway ingest API with clinic gateway tokens (the same HTTP
path a gateway uses); one hub serves the whole module and one browser the whole session, so the
module stays within a few seconds per test. Priorities and due times are set in the database
because nothing in the hub sets them yet (the worklist engineer's issue 4 will).
"""

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from imaging_hub.worklist.db.models import Priority, Study
from imaging_hub.worklist.studies.registration import PRIORITY_RANK
from tests.conftest import SAMPLES
from tests.e2e.support import (
    BUNDLED,
    ingest,
    login,
    make_instance,
    me_status,
    session_cookie_value,
)
from tests.peers.browser import BrowserPage, OpenPage
from tests.peers.hub import HubProcess, start_hub_process

pytestmark = pytest.mark.e2e

HOSTILE_NAME = "<img src=x onerror=alert(1)>"
HOSTILE_ID = "<script>window.__xss=1</script>"


def set_priority(hub: HubProcess, uid: str, priority: Priority, due_in: timedelta) -> None:
    with hub.sessions() as session:
        study = session.scalars(select(Study).where(Study.study_instance_uid == uid)).one()
        study.priority = priority
        study.priority_rank = PRIORITY_RANK[priority]
        study.due_at = datetime.now(UTC) + due_in
        session.commit()


@pytest.fixture(scope="module")
def app_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    hub = start_hub_process(tmp_path_factory.mktemp("e2e") / "hub")
    try:
        # A real GB18030-encoded file: PatientName "Wang^XiaoDong=王^小东".
        gb = (BUNDLED / "chrX2_GB18030_Chinese.dcm").read_bytes()
        assert b"\xcd\xf5" in gb  # 王 in GB18030
        ingest(hub, "clinic-a", gb)
        ct = make_instance(
            BUNDLED / "CT_small.dcm",
            SpecificCharacterSet="ISO_IR 192",
            PatientName="赵^建国",
            PatientID="CT-7",
            PatientSex="M",
            PatientBirthDate="19580301",
            StudyDate="20261101",
            BodyPartExamined="CHEST",
        )
        ingest(hub, "clinic-a", ct)
        mr = make_instance(
            SAMPLES / "by-modality" / "MR" / "MR_small.dcm",
            SpecificCharacterSet="ISO_IR 192",
            PatientName="李^华",
            PatientID="MR-9",
        )
        stat_uid = ingest(hub, "clinic-b", mr)
        set_priority(hub, stat_uid, Priority.stat, timedelta(minutes=-12))
        hostile = make_instance(
            SAMPLES / "by-modality" / "CR" / "RG2_JPLY_fixed.dcm",
            SpecificCharacterSet="ISO_IR 192",
            PatientName=HOSTILE_NAME,
            PatientID=HOSTILE_ID,
        )
        hostile_uid = ingest(hub, "clinic-a", hostile)
        set_priority(hub, hostile_uid, Priority.urgent, timedelta(minutes=90))
        yield hub
    finally:
        hub.stop()


def rows(bp: BrowserPage) -> list[str]:
    texts: list[str] = bp.page.locator("#worklist-table tbody tr td.col-patient").all_inner_texts()
    return texts


def expect_names(bp: BrowserPage, names: list[str]) -> None:
    """Wait until the worklist shows exactly these patients, in this order."""
    expect(bp.page.locator("#worklist-table tbody tr td.col-patient")).to_have_text(names)


def wait_rows(bp: BrowserPage, count: int) -> list[str]:
    expect(bp.page.locator("#worklist-table tbody tr")).to_have_count(count)
    return rows(bp)


def test_login_in_chinese_shows_worklist_with_gb18030_name(
    app_hub: HubProcess, open_page: OpenPage, tmp_path_factory: pytest.TempPathFactory
) -> None:
    bp = open_page(app_hub.url)
    page = bp.page
    page.goto("/")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator(".login-form h1")).to_have_text("登录影像中心")
    login(bp, app_hub, "rad1")
    expect(page).to_have_url(re.compile(r"#/worklist$"))
    names = wait_rows(bp, 4)
    assert "王小东 (Wang, XiaoDong)" in names
    assert "赵建国" in names and "李华" in names
    # STAT first (default sort: priority, then due time), then urgent, then routine.
    assert names[0] == "李华"
    expect(page.locator("#session-user")).to_have_text("李医生 Dr. Li")
    expect(page.locator("#session-role")).to_have_text("影像科医生")
    expect(page.locator("#session-institution")).to_contain_text("县人民医院影像中心")
    header = page.locator("#worklist-table thead").inner_text()
    assert "患者姓名" in header and "截止时间" in header
    stat_row = page.locator("#worklist-table tbody tr").first
    expect(stat_row).to_have_class(re.compile(r"\brow-overdue\b"))
    expect(stat_row.locator(".overdue-badge")).to_contain_text("已超时")
    expect(stat_row.locator(".col-priority")).to_have_text("急诊")
    expect(stat_row.locator(".col-clinic")).to_contain_text("B镇卫生院")
    ct_row = page.locator("#worklist-table tbody tr", has_text="赵建国")
    expect(ct_row.locator(".col-sexAge")).to_have_text("男 / 68岁")
    # The DICOM body part code by name (the code stays in the title and data-code).
    expect(ct_row.locator(".col-bodyPart")).to_have_text("胸部")
    expect(ct_row.locator(".col-bodyPart span")).to_have_attribute("data-code", "CHEST")
    expect(ct_row.locator(".col-studyDate")).to_have_text("2026/11/01")
    # Local time: the browser runs in Asia/Shanghai; the hub stores UTC.
    received = ct_row.locator(".col-received").inner_text()
    assert received.startswith(datetime.now(UTC).astimezone(_shanghai()).strftime("%Y/%m/%d"))
    shot = tmp_path_factory.mktemp("screenshots") / "worklist-1366x768.png"
    page.screenshot(path=str(shot))
    print(f"worklist screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert bp.problems() == []


def _shanghai() -> object:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Asia/Shanghai")


def test_english_login_language_persists_and_logout(
    app_hub: HubProcess, open_page: OpenPage
) -> None:
    bp = open_page(app_hub.url, locale="en-US")
    page = bp.page
    page.goto("/")
    expect(page.locator(".login-form h1")).to_have_text("登录影像中心")  # zh-CN is the default
    page.click("#lang-switch")
    expect(page.locator(".login-form h1")).to_have_text("Log in to the Imaging Hub")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    # A radiologist: consultants see only studies escalated to them (policy.study_scope).
    page.fill("#login-username", "rad2")
    page.fill("#login-password", app_hub.passwords["rad2"])
    page.click("#login-submit")
    wait_rows(bp, 4)
    expect(page.locator("#session-role")).to_have_text("Radiologist")
    expect(page.locator("#nav a.active")).to_have_text("Worklist")
    header = page.locator("#worklist-table thead").inner_text()
    assert "Patient name" in header and "Due" in header
    ct_row = page.locator("#worklist-table tbody tr", has_text="赵建国")
    expect(ct_row.locator(".col-bodyPart")).to_have_text("Chest")
    page.reload()
    wait_rows(bp, 4)
    expect(page.locator("#nav a.active")).to_have_text("Worklist")
    expect(page.locator("#worklist-table tbody tr").first.locator(".col-priority")).to_have_text(
        "STAT"
    )
    page.click("#lang-switch")
    expect(page.locator("#nav a.active")).to_have_text("工作列表")
    expect(page.locator("#worklist-table tbody tr").first.locator(".col-status")).to_have_text(
        "待阅片"
    )

    # The session lives in an HttpOnly cookie that page scripts cannot read.
    session_cookie = session_cookie_value(bp)
    assert session_cookie and "ih_session" not in page.evaluate("document.cookie")
    assert me_status(app_hub, session_cookie) == 200
    page.click("#logout")
    expect(page).to_have_url(re.compile(r"#/login"))
    # Logout revoked the session on the hub (the DELETE carried the CSRF token) and the cookie.
    assert me_status(app_hub, session_cookie) == 401
    assert session_cookie_value(bp) is None
    page.goto("/#/worklist")
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#session-user")).to_have_count(0)
    assert bp.problems() == []


def test_filters_and_sorting_map_to_the_api(app_hub: HubProcess, open_page: OpenPage) -> None:
    bp = open_page(app_hub.url)
    page = bp.page
    queries: list[str] = []
    page.on(
        "request",
        lambda r: queries.append(r.url.split("?", 1)[-1]) if "/api/v1/worklist" in r.url else None,
    )
    login(bp, app_hub, "rad2")
    wait_rows(bp, 4)

    page.select_option("#filter-priority", "stat")
    expect_names(bp, ["李华"])
    assert "priority=stat" in queries[-1]
    page.select_option("#filter-priority", "")
    wait_rows(bp, 4)

    page.select_option("#filter-modality", "CT")
    expect_names(bp, ["赵建国"])
    page.select_option("#filter-modality", "")
    wait_rows(bp, 4)

    page.fill("#filter-clinic", "clinic-b")
    page.press("#filter-clinic", "Enter")
    expect_names(bp, ["李华"])
    assert "clinic=clinic-b" in queries[-1]
    page.fill("#filter-clinic", "")
    page.press("#filter-clinic", "Enter")
    wait_rows(bp, 4)

    page.fill("#filter-patient", "王")
    expect_names(bp, ["王小东 (Wang, XiaoDong)"])
    # Filters live in the URL: a reload keeps them.
    page.reload()
    expect_names(bp, ["王小东 (Wang, XiaoDong)"])
    expect(page.locator("#filter-patient")).to_have_value("王")
    page.click("#filter-clear")
    wait_rows(bp, 4)

    page.select_option("#filter-status", "signed")
    wait_rows(bp, 0)
    expect(page.locator("#worklist-empty")).to_have_text("没有符合条件的检查。")
    page.select_option("#filter-status", "open")
    wait_rows(bp, 4)

    page.click("th.col-patient button.sort")
    expect(page.locator("th.col-patient")).to_have_attribute("aria-sort", "ascending")
    assert "sort=patient_name" in queries[-1] and "descending" not in queries[-1]
    page.click("th.col-patient button.sort")
    expect(page.locator("th.col-patient")).to_have_attribute("aria-sort", "descending")
    assert "sort=patient_name" in queries[-1] and "descending=true" in queries[-1]
    raw_names = page.locator("#worklist-table td.col-patient a").evaluate_all(
        "links => links.map((a) => a.title)"
    )
    assert raw_names == ["赵^建国", "李^华", "Wang^XiaoDong=王^小东", HOSTILE_NAME]
    assert bp.problems() == []


def test_hostile_patient_name_is_rendered_as_text(app_hub: HubProcess, open_page: OpenPage) -> None:
    bp = open_page(app_hub.url)
    page = bp.page
    login(bp, app_hub, "rad1")
    names = wait_rows(bp, 4)
    row = page.locator("#worklist-table tbody tr", has=page.locator(f'a[title="{HOSTILE_NAME}"]'))
    expect(row).to_have_count(1)
    # The PN's "=" separates component groups; the raw value is kept in the title.
    assert any("<img src" in n for n in names)
    expect(row.locator(".col-patientId")).to_have_text(HOSTILE_ID)
    assert page.locator("#worklist-table img, #worklist-table script").count() == 0
    page.wait_for_timeout(300)  # give an injected onerror handler the chance to fire
    assert page.evaluate("window.__xss") is None
    assert bp.dialogs == []
    assert bp.problems() == []


def test_wrong_password_expired_session_and_clinic_landing(
    app_hub: HubProcess, open_page: OpenPage
) -> None:
    bp = open_page(app_hub.url)
    page = bp.page
    login(bp, app_hub, "rad1", password="not-the-password")
    expect(page.locator("#login-status .message-error")).to_contain_text("用户名或密码错误")
    expect(page.locator("#login-password")).to_have_value("")
    assert session_cookie_value(bp) is None

    # The session ends under the page (expired, revoked): the next request gets 401 and the user
    # is back at the login page with the reason, and returns to where they were afterwards.
    page.fill("#login-password", app_hub.passwords["rad1"])
    page.click("#login-submit")
    wait_rows(bp, 4)
    bp.context.clear_cookies()
    page.click("#worklist-refresh")
    expect(page.locator("#login-status .message-info")).to_contain_text("登录已过期")
    # After logging in, the user lands where they wanted to go.
    page.fill("#login-username", "staff-a")
    page.fill("#login-password", app_hub.passwords["staff-a"])
    page.click("#login-submit")
    # Clinic staff cannot use the worklist: they get their own landing page instead.
    expect(page.locator("#app .message-error")).to_have_text("您没有执行此操作的权限。")
    expect(page.locator("#nav a")).to_have_text(["本院检查"])
    page.click("#nav a")
    expect(page.locator("#clinic-intro")).to_contain_text("阅片状态")
    expect(page.locator(".clinic-page h1")).to_contain_text("A镇卫生院")
    expect(page.locator("#session-role")).to_have_text("卫生院工作人员")
    assert bp.problems() == []


def test_locked_account_is_explained(app_hub: HubProcess, open_page: OpenPage) -> None:
    bp = open_page(app_hub.url, locale="en-US")
    page = bp.page
    page.goto("/")
    page.click("#lang-switch")
    expect(page.locator(".login-form h1")).to_have_text("Log in to the Imaging Hub")
    page.fill("#login-username", "consult1")
    for _ in range(5):
        page.fill("#login-password", "wrong-password")
        page.click("#login-submit")
        expect(page.locator("#login-status .message-error")).to_have_text(
            "Wrong user name or password."
        )
        page.locator("#login-status").evaluate("(el) => el.replaceChildren()")
    # Even the right password is refused while the account is locked, and the page says why.
    page.fill("#login-password", app_hub.passwords["consult1"])
    page.click("#login-submit")
    expect(page.locator("#login-status .message-error")).to_contain_text("temporarily locked")
    assert session_cookie_value(bp) is None
    assert bp.problems() == []


def test_admin_gateways_view_shows_backlog_alarm_and_errors_as_text(
    app_hub: HubProcess, open_page: OpenPage
) -> None:
    hostile_error = '<img src=x onerror="window.__xss=2">upload refused'
    heartbeat = httpx.post(
        f"{app_hub.url}/api/v1/gateways/heartbeat",
        headers={"Authorization": f"Bearer {app_hub.gateway_tokens['clinic-a']}"},
        json={
            "version": "0.1.0",
            "ae_title": "CLINIC_A",
            "queue_depth": 17,
            "bytes_pending": 3 * 1024 * 1024,
            "failed": 2,
            "last_error": hostile_error,
            "last_error_at": datetime.now(UTC).timestamp(),
            "uplink_bytes_per_second": 2.5 * 1024 * 1024,
        },
        timeout=10,
    )
    assert heartbeat.status_code == 204, heartbeat.text
    bp = open_page(app_hub.url)
    page = bp.page
    login(bp, app_hub, "admin")
    wait_rows(bp, 4)  # admins read the worklist too
    expect(page.locator("#next-study")).to_have_count(0)  # administrators do not claim
    page.click("#nav a[href='#/admin/gateways']")
    expect(page.locator("#gateways-list tbody tr")).to_have_count(2)
    # clinic-b's gateway never reported: the alarm is on.
    expect(page.locator("#gateways-alarm")).to_contain_text("没有报告")
    row_a = page.locator("#gateways-list tbody tr", has_text="CLINIC_A")
    expect(row_a.locator(".col-state")).to_have_text("正常")
    expect(row_a.locator(".col-queue")).to_have_text("17")
    expect(row_a.locator(".col-bytes")).to_have_text("3.0 MB")
    expect(row_a.locator(".col-uplink")).to_have_text("2.5 MB/s")
    expect(row_a.locator(".col-lastError")).to_have_text(hostile_error)
    row_b = page.locator("#gateways-list tbody tr", has_text="CLINIC_B")
    expect(row_b.locator(".col-state")).to_have_text("失联")
    expect(row_b.locator(".col-lastSeen")).to_have_text("从未报告")
    backlog_a = page.locator("#gateways-backlog tbody tr", has_text="A镇卫生院")
    expect(backlog_a.locator(".col-queue")).to_have_text("17")
    expect(backlog_a.locator(".col-failed")).to_have_text("2")
    assert page.locator("#gateways-list img").count() == 0
    assert page.evaluate("window.__xss") is None
    assert bp.problems() == []

    # Radiologists have no gateways link and get "not allowed" on the page itself.
    rad = open_page(app_hub.url)
    login(rad, app_hub, "rad1")
    wait_rows(rad, 4)
    expect(rad.page.locator("#nav a[href='#/admin/gateways']")).to_have_count(0)
    rad.page.goto("/#/admin/gateways")
    expect(rad.page.locator("#app .message-error")).to_have_text("您没有执行此操作的权限。")


def test_take_next_claim_release_and_conflict(app_hub: HubProcess, open_page: OpenPage) -> None:
    """Runs last in this module: it changes claims (and puts them back)."""
    rad2 = open_page(app_hub.url)
    login(rad2, app_hub, "rad2")
    wait_rows(rad2, 4)  # rad2 sees the list before rad1 claims anything

    bp = open_page(app_hub.url)
    page = bp.page
    login(bp, app_hub, "rad1")
    wait_rows(bp, 4)
    # "Take next study" claims the STAT study first and opens it.
    page.click("#next-study")
    expect(page).to_have_url(re.compile(r"#/study/[0-9.]+"))
    expect(page.locator("#study-patient")).to_have_text("李华")
    expect(page.locator("#study-status")).to_have_text("阅片中")
    expect(page.locator("#study-release")).to_be_visible()
    page.go_back()
    stat_row = page.locator("#worklist-table tbody tr", has_text="李华")
    expect(stat_row.locator(".col-status")).to_have_text("阅片中")
    expect(stat_row.locator(".col-assigned")).to_have_text("rad1")
    expect(stat_row.locator("button[data-action=release]")).to_have_text("释放")
    ct_row = page.locator("#worklist-table tbody tr", has_text="赵建国")
    ct_row.locator("button[data-action=claim]").click()
    expect(page.locator("#worklist-notice .message-ok")).to_have_text("已领取：赵建国")
    expect(ct_row.locator(".col-assigned")).to_have_text("rad1")

    # rad2's page is stale: claiming the same study is refused, and the page says why, in
    # Chinese (translated by the error's code; the hub's English detail is not shown).
    stale = rad2.page.locator("#worklist-table tbody tr", has_text="赵建国")
    stale.locator("button[data-action=claim]").click()
    expect(rad2.page.locator("#worklist-notice .message-error")).to_have_text(
        "该检查已被其他医生领取，或当前状态不可领取。请刷新工作列表。"
    )
    # After the refresh nobody else's study offers a button.
    expect(stale.locator(".col-assigned")).to_have_text("rad1")
    expect(stale.locator("button")).to_have_count(0)

    for name in ("李华", "赵建国"):
        page.locator("#worklist-table tbody tr", has_text=name).locator(
            "button[data-action=release]"
        ).click()
        expect(page.locator("#worklist-notice .message-ok")).to_have_text(f"已释放：{name}")
    expect(stat_row.locator(".col-status")).to_have_text("待阅片")
    expect(page.locator("#worklist-table td.col-assigned")).to_have_text([""] * 4)
    assert bp.problems() == [] and rad2.problems() == []
