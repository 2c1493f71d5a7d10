"""The admin pages in Debian chromium against the real hub app: users, gateway tokens, worklist
reassignment and priority, clinic names instead of codes, refusals in the user's language.

Screenshots land in a temporary "admin-screenshots" directory (printed) for the user guide.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect
from sqlalchemy import select

from imaging_hub.worklist.db.models import Priority, Study, User
from tests.e2e.support import login
from tests.peers.browser import BrowserPage, OpenPage
from tests.peers.hub import HubProcess, start_hub_process
from tests.worklist_support import add_study

pytestmark = pytest.mark.e2e

CLINIC_A = "A镇卫生院 Township Health Centre A"
CLINIC_B = "B镇卫生院 Township Health Centre B"


@dataclass
class Shots:
    directory: Path

    def take(self, page: Page, name: str) -> None:
        page.screenshot(path=str(self.directory / f"admin-{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def admin_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    hub = start_hub_process(tmp_path_factory.mktemp("admin-hub"))
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Shots:
    directory = tmp_path_factory.mktemp("admin-screenshots")
    print(f"admin page screenshots: {directory}")
    return Shots(directory)


def admin_page(open_page: OpenPage, hub: HubProcess, path: str) -> BrowserPage:
    bp = open_page(hub.url)
    login(bp, hub, "admin")
    expect(bp.page.locator("#session-role")).to_have_text("管理员")
    bp.page.click(f"#nav a[href='#{path}']")
    expect(bp.page).to_have_url(re.compile(f"#{re.escape(path)}"))
    return bp


def user_row(page: Page, username: str) -> Locator:
    return page.locator(f"[data-testid=admin-user-row][data-username='{username}']")


def heartbeat(hub: HubProcess, token: str, **extra: object) -> int:
    body = {"version": "test", "queue_depth": 0, "bytes_pending": 0, **extra}
    response = httpx.post(
        f"{hub.url}/api/v1/gateways/heartbeat",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    return response.status_code


def test_institutions_api_names_for_every_signed_in_user(admin_hub: HubProcess) -> None:
    for username in ("admin", "rad1", "consult1", "staff-a"):
        with admin_hub.client(username) as client:
            answer = client.get("/api/v1/institutions")
            assert answer.status_code == 200, answer.text
            by_code = {i["code"]: i for i in answer.json()}
            assert by_code["clinic-a"]["name"] == CLINIC_A
            assert by_code["clinic-a"]["level"] == "township"
            assert by_code["clinic-a"]["parent"] == "hub"
            assert by_code["province"]["parent"] is None
    anonymous = httpx.get(f"{admin_hub.url}/api/v1/institutions", timeout=10)
    assert anonymous.status_code == 401
    gateway = httpx.get(
        f"{admin_hub.url}/api/v1/institutions",
        headers={"Authorization": f"Bearer {admin_hub.gateway_tokens['clinic-a']}"},
        timeout=10,
    )
    assert gateway.status_code in (401, 403)


def test_admin_creates_a_user_who_signs_in_and_edits_duty(
    open_page: OpenPage, admin_hub: HubProcess, shots: Shots
) -> None:
    bp = admin_page(open_page, admin_hub, "/admin/users")
    page = bp.page
    expect(page.locator("h1")).to_have_text("用户管理")
    # Institutions by name, never only the code.
    expect(user_row(page, "staff-a").locator("td.col-institution")).to_have_text(CLINIC_A)
    expect(user_row(page, "rad1").locator("td.col-role")).to_have_text("影像科医生")

    page.get_by_test_id("admin-user-new").click()
    page.fill("#new-username", "rad9")
    page.fill("#new-display", "赵医生 Dr. Zhao")
    page.select_option("#new-role", "radiologist")
    page.select_option("#new-institution", "hub")
    # A weak password first: refused by code, in Chinese, nothing created.
    page.fill("#new-password", "short")
    page.evaluate("document.querySelector('#new-password').removeAttribute('minlength')")
    page.get_by_test_id("admin-user-submit").click()
    notice = page.get_by_test_id("admin-users-notice")
    expect(notice.locator(".message-error")).to_be_visible()
    assert re.search(r"[\u4e00-\u9fff]", notice.inner_text()), notice.inner_text()
    expect(user_row(page, "rad9")).to_have_count(0)

    page.fill("#new-password", "Zhao-reads-2026")
    shots.take(page, "user-create")
    page.get_by_test_id("admin-user-submit").click()
    expect(notice).to_contain_text("已创建用户 rad9")
    expect(user_row(page, "rad9").locator("td.col-display")).to_have_text("赵医生 Dr. Zhao")
    hub_name = user_row(page, "rad9").locator("td.col-institution")
    expect(hub_name).to_contain_text("县人民医院影像中心")

    # The new user signs in with the initial password.
    token = httpx.post(
        f"{admin_hub.url}/api/v1/auth/token",
        data={"username": "rad9", "password": "Zhao-reads-2026"},
        timeout=10,
    )
    assert token.status_code == 200, token.text
    other = open_page(admin_hub.url)
    login(other, admin_hub, "rad9", password="Zhao-reads-2026")
    expect(other.page.locator("#session-user")).to_have_text("赵医生 Dr. Zhao")

    # Eligibility and a shift for the radiologist.
    user_row(page, "rad9").get_by_test_id("admin-user-edit").click()
    expect(page.locator("#admin-user-edit")).to_be_visible()
    page.fill("#elig-modalities", "ct, dx")
    page.locator("[data-testid=admin-eligibility-clinic][value='clinic-b']").check()
    page.get_by_test_id("admin-eligibility-save").click()
    expect(notice).to_contain_text("已保存 rad9 的阅片资格")
    with admin_hub.client("admin") as client:
        elig = client.get("/api/v1/admin/users/rad9/eligibility").json()
    assert elig["modalities"] == ["CT", "DX"]
    assert elig["clinics"] == ["clinic-b"]
    page.fill("#shift-start", "2030-01-02T08:00")
    page.fill("#shift-end", "2030-01-02T20:00")
    page.get_by_test_id("admin-shift-add").click()
    expect(notice).to_contain_text("已添加值班")
    expect(page.get_by_test_id("admin-shift-row")).to_have_count(1)
    # A shift longer than 24 hours is refused, translated.
    page.fill("#shift-start", "2030-02-01T08:00")
    page.fill("#shift-end", "2030-02-03T08:00")
    page.get_by_test_id("admin-shift-add").click()
    expect(notice.locator(".message-error")).to_be_visible()
    expect(page.get_by_test_id("admin-shift-row")).to_have_count(1)
    shots.take(page, "user-duty")

    # Change the display name; reset the password (the old one stops working).
    page.fill("#edit-display", "赵主治 Dr. Zhao")
    page.get_by_test_id("admin-user-save").click()
    expect(user_row(page, "rad9").locator("td.col-display")).to_have_text("赵主治 Dr. Zhao")
    expect(notice).to_contain_text("已保存 rad9 的修改")
    page.fill("#reset-password", "Zhao-new-pass-1")
    page.get_by_test_id("admin-user-password").click()
    # Hashing the new password (argon2) on a loaded CI machine can take seconds.
    expect(notice).to_contain_text("已重置 rad9 的密码", timeout=20_000)
    old = httpx.post(
        f"{admin_hub.url}/api/v1/auth/token",
        data={"username": "rad9", "password": "Zhao-reads-2026"},
        timeout=10,
    )
    assert old.status_code == 401

    # Disable, then the sign-in is refused; enable again.
    user_row(page, "rad9").get_by_test_id("admin-user-disable").click()
    expect(user_row(page, "rad9").locator("td.col-active")).to_have_text("否")
    refused = httpx.post(
        f"{admin_hub.url}/api/v1/auth/token",
        data={"username": "rad9", "password": "Zhao-new-pass-1"},
        timeout=10,
    )
    assert refused.status_code == 401
    user_row(page, "rad9").get_by_test_id("admin-user-enable").click()
    expect(user_row(page, "rad9").locator("td.col-active")).to_have_text("是")

    # A locked account (after failed logins) shows as locked; "unlock" clears the lockout.
    with admin_hub.sessions() as db:
        staff = db.scalar(select(User).where(User.username == "staff-b"))
        assert staff is not None
        staff.locked_until = datetime.now(UTC) + timedelta(minutes=15)
        db.commit()
    page.reload()
    expect(user_row(page, "staff-b").locator("td.col-locked")).to_have_text("是")
    unlock = user_row(page, "staff-b").get_by_test_id("admin-user-enable")
    expect(unlock).to_have_text("解锁")
    unlock.click()
    expect(user_row(page, "staff-b").locator("td.col-locked")).to_have_text("否")
    with admin_hub.sessions() as db:
        staff = db.scalar(select(User).where(User.username == "staff-b"))
        assert staff is not None and staff.locked_until is None

    # Disabling oneself: 409 last_admin, shown in Chinese, the account stays active.
    user_row(page, "admin").get_by_test_id("admin-user-disable").click()
    error = notice.locator(".message-error")
    expect(error).to_have_attribute("data-code", "last_admin")
    expect(error).to_have_text("不能停用或降级自己的账号，也不能停用最后一位管理员。")
    expect(user_row(page, "admin").locator("td.col-active")).to_have_text("是")
    shots.take(page, "user-refused")
    page.click("#lang-switch")
    expect(page.locator("h1")).to_have_text("User accounts")
    user_row(page, "admin").get_by_test_id("admin-user-disable").click()
    expect(notice.locator(".message-error")).to_contain_text("You cannot disable")
    with admin_hub.sessions() as db:
        me = db.scalar(select(User).where(User.username == "admin"))
        assert me is not None and me.is_active
    assert bp.problems() == []


def test_admin_rotates_and_revokes_gateway_tokens(
    open_page: OpenPage, admin_hub: HubProcess, shots: Shots
) -> None:
    # A parked study reported by clinic-b's gateway: shown with its reason, by clinic name.
    assert (
        heartbeat(
            admin_hub,
            admin_hub.gateway_tokens["clinic-b"],
            parked_studies=1,
            parked=[
                {
                    "study_instance_uid": "1.2.3.4",
                    "code": "uid_conflict",
                    "reason": "UID belongs to another clinic",
                    "instances": 2,
                }
            ],
        )
        == 204
    )
    bp = admin_page(open_page, admin_hub, "/admin/gateways")
    page = bp.page
    expect(page.locator("#gateways-list")).to_contain_text(CLINIC_B)
    expect(page.locator("#gateways-parked")).to_contain_text("该检查的 UID 已属于其他卫生院")
    expect(page.locator("#gateways-parked")).to_contain_text(CLINIC_B)
    assert "clinic-b" not in page.locator("#gateways-list td.col-clinic").all_inner_texts()

    # Create a gateway: the token is shown once, with the warning.
    page.get_by_test_id("admin-gateway-new").click()
    page.fill("#gw-name", "gateway-clinic-a2")
    page.select_option("#gw-clinic", "clinic-a")
    page.fill("#gw-ae", "CLINIC_A2")
    page.get_by_test_id("admin-gateway-submit").click()
    first = page.get_by_test_id("admin-token").inner_text()
    expect(page.get_by_test_id("admin-token-warning")).to_contain_text("令牌只显示这一次")
    page.get_by_test_id("admin-token-copy").click()
    expect(page.locator(".token-copied")).not_to_be_empty()
    shots.take(page, "gateway-token")
    assert heartbeat(admin_hub, first) == 204
    page.get_by_test_id("admin-token-close").click()
    expect(page.get_by_test_id("admin-token")).to_have_count(0)

    row = page.locator("[data-testid=admin-gateway-row][data-name='gateway-clinic-a2']")
    expect(row.locator("td.col-clinic")).to_have_text(CLINIC_A)
    # Rotate: a new token; the previous one works until the next rotation (no downtime).
    row.get_by_test_id("admin-gateway-rotate").click()
    second = page.get_by_test_id("admin-token").inner_text()
    assert second != first
    assert heartbeat(admin_hub, second) == 204
    assert heartbeat(admin_hub, first) == 204
    page.get_by_test_id("admin-token-close").click()
    # Rotate again: the first token is refused at the hub, the newest two work.
    row.get_by_test_id("admin-gateway-rotate").click()
    third = page.get_by_test_id("admin-token").inner_text()
    assert len({first, second, third}) == 3
    assert heartbeat(admin_hub, first) == 401
    assert heartbeat(admin_hub, third) == 204
    assert heartbeat(admin_hub, second) == 204
    page.get_by_test_id("admin-token-close").click()

    # Revoke needs a confirmation; cancelling changes nothing.
    row.get_by_test_id("admin-gateway-revoke").click()
    expect(row).to_contain_text("确认停用 gateway-clinic-a2")
    row.get_by_test_id("admin-gateway-revoke-cancel").click()
    assert heartbeat(admin_hub, third) == 204
    row.get_by_test_id("admin-gateway-revoke").click()
    row.get_by_test_id("admin-gateway-revoke-confirm").click()
    expect(page.get_by_test_id("admin-gateways-notice")).to_contain_text("已停用网关")
    expect(row.locator("td.col-state")).to_have_text("已停用")
    assert heartbeat(admin_hub, third) == 401
    assert heartbeat(admin_hub, second) == 401

    # A name already taken: refused, translated, no token shown.
    page.get_by_test_id("admin-gateway-new").click()
    page.fill("#gw-name", "gateway-clinic-a2")
    page.get_by_test_id("admin-gateway-submit").click()
    expect(page.get_by_test_id("admin-gateways-notice").locator(".message-error")).to_be_visible()
    expect(page.get_by_test_id("admin-token")).to_have_count(0)
    shots.take(page, "gateways")

    # The audit trail names the clinic of the gateway created, by name with its code.
    page.click("#nav a[href='#/admin/audit']")
    expect(page.locator("#audit-table")).to_contain_text(f"clinic: {CLINIC_A} (clinic-a)")
    assert bp.problems() == []


def test_admin_reassigns_and_reprioritises_from_the_worklist(
    open_page: OpenPage, admin_hub: HubProcess, shots: Shots
) -> None:
    with admin_hub.sessions() as db:
        study = add_study(db, clinic="clinic-b", priority=Priority.routine, patient_name="钱^大伟")
        uid = study.study_instance_uid
        db.commit()
    # rad8 reads MR only: not eligible for this CR study.
    with admin_hub.client("admin") as client:
        made = client.post(
            "/api/v1/admin/users",
            json={
                "username": "rad8",
                "password": "Mr-only-reader-1",
                "role": "radiologist",
                "institution": "hub",
                "display_name": "孙医生 Dr. Sun",
            },
        )
        assert made.status_code == 201, made.text
        elig = client.put("/api/v1/admin/users/rad8/eligibility", json={"modalities": ["MR"]})
        assert elig.status_code == 200, elig.text
    # rad1 claims it; the admin hands it to rad2.
    with admin_hub.client("rad1") as client:
        assert client.post(f"/api/v1/studies/{uid}/claim").status_code == 200
    bp = admin_page(open_page, admin_hub, "/worklist")
    page = bp.page
    row = page.locator(f"[data-testid=worklist-row][data-uid='{uid}']")
    expect(row.locator("td.col-clinic")).to_have_text(CLINIC_B)
    expect(row.locator("td.col-assigned")).to_have_text("李医生 Dr. Li")
    expect(page.get_by_test_id("worklist-next")).to_have_count(0)

    row.get_by_test_id("worklist-reassign-to").select_option("rad2")
    row.get_by_test_id("worklist-reassign").click()
    notice = page.locator("#worklist-notice")
    expect(notice).to_contain_text("改派给 张医生 Dr. Zhang")
    expect(row.locator("td.col-assigned")).to_have_text("张医生 Dr. Zhang")
    with admin_hub.sessions() as db:
        holder = db.scalar(
            select(User.username)
            .join(Study, Study.assigned_to_id == User.id)
            .where(Study.study_instance_uid == uid)
        )
    assert holder == "rad2"

    row.get_by_test_id("worklist-priority").select_option("stat")
    expect(notice).to_contain_text("优先级已改为")
    expect(row.locator("td.col-priority")).to_have_text("急诊")
    with admin_hub.sessions() as db:
        changed = db.scalar(select(Study).where(Study.study_instance_uid == uid))
        assert changed is not None and changed.priority == Priority.stat

    # rad8 is not eligible for a CR: refused with the hub's code, translated; the holder stays.
    row.get_by_test_id("worklist-reassign-to").select_option("rad8")
    row.get_by_test_id("worklist-reassign").click()
    expect(notice.locator(".message-error")).to_have_attribute("data-code", "not_eligible")
    expect(notice.locator(".message-error")).to_contain_text("没有此检查的阅片资格")
    with admin_hub.sessions() as db:
        again = db.scalar(select(Study).where(Study.study_instance_uid == uid))
        assert again is not None and again.assigned_to is not None
        assert again.assigned_to.username == "rad2"
    shots.take(page, "worklist")

    # A consultation names the institution asked by name on the study page.
    with admin_hub.client("rad2") as client:
        asked = client.post(
            f"/api/v1/studies/{uid}/escalate",
            json={"institution": "province", "question": "请会诊"},
        )
        assert asked.status_code == 201, asked.text
    row.locator("a.patient-link").click()
    expect(page.locator(".consult-to")).to_have_text(re.compile("省人民医院"))
    expect(page.locator(".consult-to")).to_have_attribute("data-code", "province")
    assert bp.problems() == []


def test_radiologist_worklist_shows_clinic_names_and_no_admin_controls(
    open_page: OpenPage, admin_hub: HubProcess
) -> None:
    with admin_hub.sessions() as db:
        add_study(db, clinic="clinic-a")
        add_study(db, clinic="clinic-b")
        db.commit()
    bp = open_page(admin_hub.url)
    login(bp, admin_hub, "rad2")
    page = bp.page
    expect(page).to_have_url(re.compile(r"#/worklist"))
    rows = page.get_by_test_id("worklist-row")
    expect(rows.first).to_be_visible()
    clinics = page.locator("[data-testid=worklist-row] td.col-clinic").all_inner_texts()
    assert clinics and all(c in (CLINIC_A, CLINIC_B) for c in clinics), clinics
    # A radiologist gets no admin controls.
    expect(page.get_by_test_id("worklist-reassign")).to_have_count(0)
    expect(page.get_by_test_id("worklist-next")).to_be_visible()
    assert bp.problems() == []
