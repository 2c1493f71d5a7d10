"""The clinic portal (``#/clinic``) in Debian chromium against a real hub process
(docs/clinic-return.md, docs/browser-app.md "Clinic portal").

staff-a registers an exam order through the form (``order-new`` → ``order-submit``) and finds it
in the list as ``ordered`` with the accession number the hub assigned; bad input is answered
field by field (Chinese hints, the hub's English messages) and registers nothing; "exam done"
moves the row on, "cancel" needs a reason; a signed critical report stands out in a red band,
its PDF downloads (and opens to print) byte for byte as the hub serves it, stays open once the
clinic's gateway holds it (``delivered``), and acknowledging it (method + read-back) clears the
band (stage ``acknowledged``); the list refreshes itself without touching the form;
staff-b sees nothing of clinic-a. Hostile text goes in as text. Screenshots ``clinic-*.png`` are
kept in each test's temporary directory.
"""

import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from playwright.sync_api import Locator, Page, Route, expect
from pydicom.uid import generate_uid

from tests.e2e.support import BUNDLED, ingest, login, make_instance
from tests.peers.browser import OpenPage
from tests.peers.hub import HubProcess, start_hub_process

pytestmark = pytest.mark.e2e

HOSTILE = "<img src=x onerror=alert(1)>"
CATEGORY = "颅内出血 intracranial haemorrhage"


@dataclass(frozen=True)
class Portal:
    hub: HubProcess
    #: A clinic-a exam with a signed critical report, ordered through the API.
    critical_uid: str
    critical_report: int
    critical_accession: str


def api(hub: HubProcess, username: str) -> httpx.Client:
    token = httpx.post(
        f"{hub.url}/api/v1/auth/token",
        data={"username": username, "password": hub.passwords[username]},
        timeout=10,
    ).json()["access_token"]
    return httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def place_order(hub: HubProcess, username: str = "staff-a", **fields: str) -> dict[str, object]:
    body = {
        "patient_name": "韩^梅",
        "patient_id": "P-" + generate_uid()[-8:],
        "patient_sex": "F",
        "patient_birth_date": "19700101",
        "exam_type": "DX_CHEST_PA",
        "priority": "routine",
        "reason_for_procedure": "咳嗽两周",
        **fields,
    }
    with api(hub, username) as client:
        placed = client.post("/api/v1/orders", json=body)
    assert placed.status_code == 201, placed.text
    order: dict[str, object] = placed.json()
    return order


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    hub = start_hub_process(tmp_path_factory.mktemp("clinic-portal") / "hub")
    try:
        # An order whose images arrived and whose report rad1 signed as a critical result.
        order = place_order(
            hub,
            patient_name="李^雷",
            exam_type="CT_HEAD",
            priority="stat",
            reason_for_procedure="突发头痛 2 小时",
        )
        uid = str(order["study_instance_uid"])
        ingest(
            hub,
            "clinic-a",
            make_instance(
                BUNDLED / "CT_small.dcm",
                study=uid,
                SpecificCharacterSet="ISO_IR 192",
                PatientName="李^雷",
                PatientID=str(order["patient_id"]),
                AccessionNumber=str(order["accession_number"]),
            ),
        )
        with api(hub, "rad1") as client:
            assert client.post(f"/api/v1/studies/{uid}/claim").status_code == 200
            draft = client.put(
                f"/api/v1/studies/{uid}/report",
                json={
                    "findings": f"右侧颞叶见片状高密度影。{HOSTILE}",
                    "impression": "右侧颞叶脑出血。",
                    "critical": True,
                    "critical_category": CATEGORY,
                },
            )
            assert draft.status_code == 200, draft.text
            signed = client.post(
                f"/api/v1/reports/{draft.json()['id']}/sign",
                json={"password": hub.passwords["rad1"]},
            )
            assert signed.status_code == 200, signed.text
        yield Portal(
            hub=hub,
            critical_uid=uid,
            critical_report=int(signed.json()["id"]),
            critical_accession=str(order["accession_number"]),
        )
    finally:
        hub.stop()


def shot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"clinic-{name}.png"), full_page=True)


def row_of(page: Page, uid: str) -> Locator:
    return page.locator(f"[data-testid=clinic-study-row][data-study-uid='{uid}']")


def orders_of(hub: HubProcess, username: str = "staff-a") -> list[dict[str, object]]:
    with api(hub, username) as client:
        answer = client.get("/api/v1/orders", params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    found: list[dict[str, object]] = answer.json()
    return found


def test_staff_registers_an_order_and_finds_it_ordered(
    portal: Portal, open_page: OpenPage, tmp_path: Path
) -> None:
    hub = portal.hub
    bp = open_page(hub.url)
    page = bp.page
    login(bp, hub, "staff-a")
    expect(row_of(page, portal.critical_uid)).to_be_visible()
    expect(page.locator("#order-form")).to_have_count(0)
    page.locator("[data-testid=order-new]").click()
    expect(page.locator("#order-title")).to_have_text("新建检查申请")

    # The catalogue: each exam type with its modality and body part.
    exam = page.locator("#order-exam-type")
    expect(exam.locator("option[value=DX_CHEST_PA_LAT]")).to_have_text("胸部正侧位（DX · 胸部）")
    page.locator("#order-patient-name").fill("王小东")
    page.locator("#order-patient-name-pinyin").fill("Wang^Xiaodong")
    page.locator("#order-patient-id").fill("MZ-20261206-1")
    page.locator("#order-patient-sex").select_option("M")
    page.locator("#order-patient-birth-date").fill("1980-05-01")
    exam.select_option("DX_CHEST_PA_LAT")
    expect(page.locator("#order-exam-detail")).to_have_text("DX · 胸部")
    page.locator("#order-priority").select_option("urgent")
    page.locator("#order-reason-for-procedure").fill(f"发热咳嗽 {HOSTILE}")
    page.locator("[data-testid=order-submit]").click()

    # The accession number, large, for the technician to pick on the machine.
    accession = page.locator("[data-testid=order-accession]")
    expect(accession).to_be_visible()
    mine = [o for o in orders_of(hub) if o["patient_id"] == "MZ-20261206-1"]
    assert len(mine) == 1
    order = mine[0]
    expect(accession).to_have_text(str(order["accession_number"]))
    assert order["patient_name"] == "Wang^Xiaodong=王小东"
    assert order["patient_birth_date"] == "19800501"
    assert order["patient_sex"] == "M"
    assert order["exam_type"] == "DX_CHEST_PA_LAT"
    assert order["priority"] == "urgent"
    assert order["reason_for_procedure"] == f"发热咳嗽 {HOSTILE}"
    # The form is empty again for the next patient.
    expect(page.locator("#order-patient-name")).to_have_value("")

    row = row_of(page, str(order["study_instance_uid"]))
    expect(row).to_have_attribute("data-status", "ordered")
    expect(row.locator("td.col-accession .accession")).to_have_text(str(order["accession_number"]))
    expect(row.locator("td.col-accession")).to_contain_text("预约 ")
    expect(row.locator("[data-testid=clinic-stage]")).to_have_text("已申请")
    expect(row.locator("td.col-exam")).to_contain_text("胸部正侧位")
    expect(row.locator("td.col-exam")).to_contain_text(HOSTILE)  # as text
    expect(row.locator("td.col-priority")).to_have_text("加急")
    expect(row.locator("td.col-patient")).to_contain_text("王小东 (Wang, Xiaodong)")
    assert page.locator(".clinic-page img").count() == 0
    shot(page, tmp_path, "1-ordered")

    # Exam done (for a machine without MPPS): confirmed first, then the row moves on.
    row.locator("[data-testid=order-done]").click()
    dialog = page.locator("#order-done")
    expect(dialog).to_contain_text(str(order["accession_number"]))
    page.locator("#order-done-back").click()
    expect(dialog).to_have_count(0)
    expect(row).to_have_attribute("data-status", "ordered")
    row.locator("[data-testid=order-done]").click()
    page.locator("#order-done-confirm").click()
    # Done, its images not at the hub yet: the clinic sees it being scanned, done once only.
    expect(row).to_have_attribute("data-status", "scanning")
    expect(row.locator("[data-testid=clinic-stage]")).to_have_text("检查中")
    expect(row.locator("[data-testid=order-done]")).to_have_count(0)
    expect(row.locator("[data-testid=order-cancel]")).to_have_count(0)
    done = next(o for o in orders_of(hub) if o["id"] == order["id"])
    assert done["status"] == "completed" and done["done_at"] is not None
    shot(page, tmp_path, "2-done")
    # Not offered again after a reload either.
    page.reload()
    expect(row).to_have_attribute("data-status", "scanning")
    expect(row.locator("[data-testid=order-done]")).to_have_count(0)

    # The search finds orders by patient name (in reading order) or ID.
    rows = page.locator("[data-testid=clinic-study-row]")
    page.fill("#clinic-search", "王小东")
    expect(rows).to_have_count(1)
    expect(rows).to_have_attribute("data-study-uid", str(order["study_instance_uid"]))
    page.fill("#clinic-search", "MZ-20261206")
    expect(rows).to_have_count(1)
    expect(page).to_have_url(re.compile(r"patient=MZ-20261206"))
    assert bp.problems() == []


def test_exam_done_while_the_images_arrive(portal: Portal, open_page: OpenPage) -> None:
    """A machine without MPPS: the order's images are arriving (``receiving``); "exam done" is
    offered and completes the order (the gateway then completes the study)."""
    hub = portal.hub
    order = place_order(hub, patient_name="钱^多多")
    uid = str(order["study_instance_uid"])
    data = make_instance(
        BUNDLED / "CT_small.dcm",
        study=uid,
        SpecificCharacterSet="ISO_IR 192",
        PatientName="钱^多多",
        PatientID=str(order["patient_id"]),
        AccessionNumber=str(order["accession_number"]),
    )
    sop = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID
    put = httpx.put(
        f"{hub.url}/api/v1/ingest/instances/{sop}",
        content=data,
        headers={
            "Authorization": f"Bearer {hub.gateway_tokens['clinic-a']}",
            "Content-Type": "application/dicom",
            "X-Content-SHA256": hashlib.sha256(data).hexdigest(),
        },
        timeout=30,
    )
    assert put.status_code == 201, put.text

    bp = open_page(hub.url)
    page = bp.page
    login(bp, hub, "staff-a")
    row = row_of(page, uid)
    expect(row).to_have_attribute("data-status", "receiving")
    expect(row.locator("td.col-accession")).to_have_text(str(order["accession_number"]))
    expect(row.locator("[data-testid=order-cancel]")).to_have_count(0)
    row.locator("[data-testid=order-done]").click()
    page.locator("#order-done-confirm").click()
    expect(row.locator("[data-testid=order-done]")).to_have_count(0)
    expect(page.locator(".clinic-messages .message-ok")).to_contain_text(
        str(order["accession_number"])
    )
    done = next(o for o in orders_of(hub) if o["id"] == order["id"])
    assert done["status"] == "completed" and done["done_at"] is not None
    assert bp.problems() == []


def test_bad_input_is_answered_field_by_field_and_registers_nothing(
    portal: Portal, open_page: OpenPage, tmp_path: Path
) -> None:
    hub = portal.hub
    before = orders_of(hub)
    bp = open_page(hub.url)
    page = bp.page
    login(bp, hub, "staff-a")
    page.locator("[data-testid=order-new]").click()
    expect(page.locator("#order-exam-type option")).not_to_have_count(1)
    # Nothing but a birth date in the future and pinyin that is not pinyin.
    page.locator("#order-patient-name-pinyin").fill("王<b>1</b>")
    page.locator("#order-patient-birth-date").fill("2999-01-01")
    page.locator("[data-testid=order-submit]").click()

    expect(page.locator("#order-form .order-status .message-error")).to_have_text(
        "申请未提交：请修改标红的项目。"
    )
    for field, hint in [
        ("patient_id", "请填写患者 ID。"),
        ("patient_name_pinyin", "拼音只能包含字母"),
        ("patient_birth_date", "出生日期不能晚于今天。"),
        ("exam_type", "请从列表中选择检查项目。"),  # the hub asked for the modality
    ]:
        expect(page.locator(f".field-error[data-field={field}]")).to_contain_text(hint)
    expect(page.locator(".field-error[data-field=patient_name]")).to_be_empty()
    expect(page.locator("#order-patient-birth-date")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("[data-testid=order-accession]")).to_have_count(0)
    shot(page, tmp_path, "3-field-errors")
    assert orders_of(hub) == before

    # The typed values survive the language switch (the page re-renders); in English the hub's
    # own sentence stands beside each field. With an exam type of the catalogue the hub wants
    # the whole patient and the clinical question.
    page.locator("#lang-switch").click()
    expect(page.locator("#order-title")).to_have_text("New exam order")
    expect(page.locator("#order-patient-birth-date")).to_have_value("2999-01-01")
    expect(page.locator("#order-patient-name-pinyin")).to_have_value("王<b>1</b>")
    page.locator("#order-exam-type").select_option("DX_CHEST_PA")
    page.locator("[data-testid=order-submit]").click()
    expect(page.locator("#order-form .order-status .message-error")).to_contain_text(
        "The order was not registered"
    )
    for field, text in [
        ("patient_name", "The patient name is required."),
        ("patient_birth_date", "The birth date is in the future."),
        ("reason_for_procedure", "required"),
        ("patient_sex", "required"),
    ]:
        expect(page.locator(f".field-error[data-field={field}]")).to_contain_text(text)
    expect(page.locator(".field-error[data-field=exam_type]")).to_be_empty()
    expect(page.locator("#order-patient-name-pinyin")).to_have_value("王<b>1</b>")
    assert page.locator(".order-panel b, .order-panel img").count() == 0
    shot(page, tmp_path, "4-field-errors-en")
    assert orders_of(hub) == before

    # Logging out forgets what was typed: the next user of this browser starts empty.
    page.locator("#logout").click()
    login(bp, hub, "staff-a")
    expect(page.locator("#order-form")).to_have_count(0)
    page.locator("[data-testid=order-new]").click()
    expect(page.locator("#order-patient-birth-date")).to_have_value("")
    expect(page.locator("#order-patient-name-pinyin")).to_have_value("")
    assert bp.problems() == []


def test_cancel_needs_a_reason_and_the_list_refreshes_itself(
    portal: Portal, open_page: OpenPage, tmp_path: Path
) -> None:
    hub = portal.hub
    bp = open_page(hub.url)
    page = bp.page
    page.clock.install()
    login(bp, hub, "staff-a")
    page.locator("[data-testid=order-new]").click()
    page.locator("#order-patient-name").fill("赵^敏")

    # An order placed elsewhere (another workstation) appears by itself; the form keeps its text.
    order = place_order(hub, patient_name=HOSTILE, priority="stat")
    row = row_of(page, str(order["study_instance_uid"]))
    expect(row).to_have_count(0)
    page.clock.run_for(16_000)
    expect(row).to_have_attribute("data-status", "ordered")
    expect(page.locator("#order-patient-name")).to_have_value("赵^敏")

    # The raw name in the tooltip, its person-name groups shown as text.
    expect(row.locator("td.col-patient .patient-name")).to_have_attribute("title", HOSTILE)
    expect(row.locator("td.col-patient")).to_contain_text("<img src")

    row.locator("[data-testid=order-cancel]").click()
    expect(page.locator("#order-cancel .dialog-text")).to_contain_text("<img src")
    page.locator("#order-cancel-confirm").click()
    expect(page.locator("#order-cancel .message-error")).to_have_text("请填写取消原因。")
    page.locator("#order-cancel-reason").fill(f"患者拒绝检查 {HOSTILE}")
    page.locator("#order-cancel-confirm").click()
    expect(row).to_have_attribute("data-status", "cancelled")
    expect(row.locator(".stage-reason")).to_have_text(f"患者拒绝检查 {HOSTILE}")
    expect(row.locator("[data-testid=order-cancel]")).to_have_count(0)
    expect(row.locator("[data-testid=order-done]")).to_have_count(0)
    cancelled = next(o for o in orders_of(hub) if o["id"] == order["id"])
    assert cancelled["status"] == "cancelled"
    assert page.locator(".clinic-page img, dialog img").count() == 0
    shot(page, tmp_path, "5-cancelled")
    assert bp.problems() == []


def test_critical_report_downloads_and_is_acknowledged(
    portal: Portal, open_page: OpenPage, tmp_path: Path
) -> None:
    hub = portal.hub
    with api(hub, "staff-a") as client:
        served = client.get(f"/api/v1/reports/{portal.critical_report}/pdf")
    assert served.status_code == 200 and served.content.startswith(b"%PDF")

    bp = open_page(hub.url)
    page = bp.page
    login(bp, hub, "staff-a")
    row = row_of(page, portal.critical_uid)
    expect(row).to_have_attribute("data-status", "signed")
    expect(row).to_have_class(re.compile(r"critical-open"))
    band = page.locator("#clinic-critical .clinic-critical-banner")
    expect(band).to_contain_text("有 1 份危急值报告尚未确认接收")
    expect(band).to_contain_text(CATEGORY)
    expect(band).to_contain_text("李雷")
    expect(row.locator("td.col-accession")).to_have_text(portal.critical_accession)  # no schedule
    expect(row.locator("td.col-priority")).to_have_text("急诊")
    expect(row.locator("td.col-radiologist")).not_to_have_text("—")
    shot(page, tmp_path, "6-critical")

    # The clinic's gateway takes the PDF: delivered, and still to acknowledge.
    gateway = {"Authorization": f"Bearer {hub.gateway_tokens['clinic-a']}"}
    received = httpx.post(
        f"{hub.url}/api/v1/gateway/reports/{portal.critical_report}/received",
        json={"sha256": hashlib.sha256(served.content).hexdigest()},
        headers=gateway,
        timeout=10,
    )
    assert received.status_code == 200, received.text
    page.locator("#clinic-refresh").click()
    expect(row).to_have_attribute("data-status", "delivered")
    expect(row.locator("[data-testid=clinic-stage]")).to_have_text("报告已送达")
    expect(row).to_have_class(re.compile(r"critical-open"))
    expect(band).to_be_visible()

    # Print: the same PDF in a tab of its own, in the browser's PDF viewer.
    pdf_url = f"{hub.url}/api/v1/reports/{portal.critical_report}/pdf"
    fetched: list[bytes] = []

    def keep(route: Route) -> None:
        answer = route.fetch()
        fetched.append(answer.body())
        route.fulfill(response=answer)

    page.route(pdf_url, keep)
    with bp.context.expect_page() as opened:
        row.locator("[data-testid=report-print]").click()
    tab = opened.value
    expect(tab).to_have_url(re.compile(r"^blob:"))
    tab.wait_for_load_state()
    assert tab.evaluate("document.contentType") == "application/pdf"
    assert fetched == [served.content]
    page.unroute(pdf_url)
    tab.close()
    with page.expect_download() as download:
        row.locator("[data-testid=report-download]").click()
    assert Path(download.value.path()).read_bytes() == served.content

    row.locator("[data-testid=critical-acknowledge]").click()
    expect(page.locator("#critical-ack")).to_contain_text("右侧颞叶脑出血。")
    page.locator("[data-testid=critical-ack-confirm]").click()
    expect(page.locator("#critical-ack .message-error")).to_have_text("请填写复述内容。")
    page.locator("[data-testid=critical-ack-method]").select_option("phone")
    page.locator("[data-testid=critical-ack-readback]").fill("右侧颞叶脑出血，已电话告知张医生")
    shot(page, tmp_path, "7-acknowledge")
    page.locator("[data-testid=critical-ack-confirm]").click()
    expect(row).to_have_attribute("data-status", "acknowledged")
    expect(row).not_to_have_class(re.compile(r"critical-open"))
    expect(page.locator("#clinic-critical .clinic-critical-banner")).to_have_count(0)
    with api(hub, "staff-a") as client:
        acked = client.get(f"/api/v1/studies/{portal.critical_uid}/report").json()["report"]
    assert acked["acknowledgement_method"] == "phone"
    assert acked["acknowledgement_read_back"] == "右侧颞叶脑出血，已电话告知张医生"
    shot(page, tmp_path, "8-acknowledged")

    # The same list in English.
    page.locator("#lang-switch").click()
    expect(row.locator("[data-testid=clinic-stage]")).to_have_text("Acknowledged")
    expect(page.locator("[data-testid=order-new]")).to_have_text("New exam order")
    expect(page.locator("th.col-accession")).to_have_text("Accession")
    shot(page, tmp_path, "9-english")
    assert bp.problems() == []


def test_other_clinic_sees_nothing_of_clinic_a(
    portal: Portal, open_page: OpenPage, tmp_path: Path
) -> None:
    hub = portal.hub
    order = place_order(hub, patient_name="周^芷若")
    bp = open_page(hub.url)
    page = bp.page
    login(bp, hub, "staff-b")
    expect(page.locator(".clinic-page .empty")).to_have_text("还没有本院的检查。")
    expect(page.locator("[data-testid=clinic-study-row]")).to_have_count(0)
    expect(page.locator("#clinic-critical .clinic-critical-banner")).to_have_count(0)
    page.fill("#clinic-search", "周芷若")
    expect(page.locator(".clinic-page .empty")).to_have_text("没有符合条件的检查。")
    shot(page, tmp_path, "10-other-clinic")
    with api(hub, "staff-b") as client:
        listed = client.get("/api/v1/clinic/studies", params={"limit": 200}).json()["items"]
        assert listed == []
        assert client.post(f"/api/v1/orders/{order['id']}/done").status_code == 404
        assert (
            client.post(f"/api/v1/orders/{order['id']}/cancel", json={"reason": "x"}).status_code
            == 404
        )
        assert client.get(f"/api/v1/reports/{portal.critical_report}/pdf").status_code == 404
    assert next(o for o in orders_of(hub) if o["id"] == order["id"])["status"] == "scheduled"
    assert bp.problems() == []
