"""The user guide's screenshots (docs/guide/), taken while the screens are checked, in Debian
chromium against a real hub process (and a clinic gateway's LAN page), once in Chinese and once
in English.

Each flow is the one the guide describes: clinic staff sign in (a wrong password first), see
their exams by stage, register an order and read its accession number, mark an exam done,
download the signed report and its addendum, acknowledge a critical result; a radiologist takes
the next study, uses the viewer (preset, shortcuts, a length, the prior side by side), writes,
marks critical, signs (password again) and adds an addendum, escalates another study; a
consultant answers; clinic staff use the gateway's LAN page. Every screenshot is taken only after
the screen shows what the guide says it shows, in the language of the run.

Screenshots go to the test's temporary directory (``<lang>/<name>.png``). With
``IMAGING_HUB_GUIDE_SCREENSHOTS=DIR`` (``scripts/guide-screenshots.sh`` sets it to
``docs/guide/img``) they are written to ``DIR/<lang>/`` instead, palette-optimised with Pillow,
at 1280x800 — a normal test run never writes into the repository.
"""

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Locator, Page, ViewportSize, expect
from pydicom.uid import generate_uid

from imaging_hub.dicom_gateway.hub_client import HubClient
from imaging_hub.dicom_gateway.lan_page import LanPage, LanPageServer
from imaging_hub.dicom_gateway.reports import ReportPuller, ReportStore
from tests.e2e.support import BUNDLED, claim_and_sign, ingest, login, make_instance
from tests.e2e.test_viewer import wait_drawn
from tests.integration.test_gateway_reports import pull_until
from tests.peers.browser import BrowserPage, OpenPage
from tests.peers.hub import HubProcess, start_hub_process
from tests.peers.net import free_port

pytestmark = pytest.mark.e2e

ENV_DIR = "IMAGING_HUB_GUIDE_SCREENSHOTS"
ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guide"
SCRIPT = ROOT / "scripts" / "guide-screenshots.sh"
# Every screenshot this module takes; the guide shows each of them, in both languages.
SHOT_NAMES = frozenset(
    {
        "login-error",
        "clinic-list",
        "order-form",
        "order-accession",
        "order-errors",
        "exam-done",
        "critical-ack",
        "clinic-acknowledged",
        "worklist",
        "viewer-shortcuts",
        "viewer-measurement",
        "viewer-prior",
        "report-draft",
        "report-sign",
        "report-signed",
        "report-addendum",
        "escalate",
        "consultant-opinion",
        "opinion-arrived",
        "lan-login",
        "lan-reports",
        "lan-acknowledge",
    }
)
SIZE: ViewportSize = {"width": 1280, "height": 800}
LANGS = ["zh-CN", "en"]
CATEGORY = "颅内出血 intracranial haemorrhage"
CHEST_CATEGORY = "气胸 pneumothorax"

# What each screen must say, per language (the app's own strings).
TEXT: dict[str, dict[str, str]] = {
    "zh-CN": {
        "login_failed": "用户名或密码错误。",
        "lang_switch": "English",
        "clinic_title": "本院检查",
        "critical_band": r"有 \d+ 份危急值报告尚未确认接收",
        "stage_signed": "已签发",
        "stage_waiting": "待阅片",
        "stage_ordered": "已申请",
        "stage_scanning": "检查中",
        "stage_acknowledged": "已确认接收",
        "order_title": "新建检查申请",
        "order_created": "检查申请已登记",
        "order_invalid": "申请未提交：请修改标红的项目。",
        "done_title": "确认检查已完成？",
        "ack_title": "确认接收危急值",
        "next_study": "领取下一个检查",
        "help_title": "快捷键",
        "measurements": "测量",
        "prior": "既往检查",
        "saved": "已于",
        "sign_dialog": "签发报告",
        "signed": "已签发",
        "addendum": "补充报告",
        "escalate": "申请会诊",
        "escalated": "会诊中",
        "opinion": "会诊意见",
        "lan_login": "登录",
        "lan_critical": "有 1 份危急值报告尚未确认接收。",
        "lan_ack_title": "确认接收危急值",
        "lan_waiting": "待同步到影像中心",
        "findings": "右侧胸腔见无肺纹理透亮区，右肺压缩约 30%。左肺上叶结节约 8 mm。",
        "impression": "右侧气胸（约 30%），请立即处理。左肺上叶结节较前增大。",
        "addendum_text": "补充：已电话通知卫生院值班医生。",
        "question": "右肺下叶磨玻璃影，炎症还是早期肺癌？",
        "opinion_text": "考虑炎症可能大，建议抗炎治疗 2 周后复查胸部 CT。",
        "readback": "右侧颞叶脑出血，已电话告知张医生",
    },
    "en": {
        "login_failed": "Wrong user name or password.",
        "lang_switch": "中文",
        "clinic_title": "Our exams",
        "critical_band": r"\d+ critical result\(s\) not yet acknowledged",
        "stage_signed": "Signed",
        "stage_waiting": "Waiting for reading",
        "stage_ordered": "Ordered",
        "stage_scanning": "Scanning",
        "stage_acknowledged": "Acknowledged",
        "order_title": "New exam order",
        "order_created": "Exam order registered",
        "order_invalid": "The order was not registered: correct the fields marked in red.",
        "done_title": "Is the exam done?",
        "ack_title": "Acknowledge the critical result",
        "next_study": "Take next study",
        "help_title": "Keyboard shortcuts",
        "measurements": "Measurements",
        "prior": "Prior studies",
        "saved": "saved at",
        "sign_dialog": "Sign the report",
        "signed": "Signed",
        "addendum": "Addendum",
        "escalate": "Escalate",
        "escalated": "Escalated",
        "opinion": "Opinion",
        "lan_login": "Sign in",
        "lan_critical": "1 critical result(s) not yet acknowledged.",
        "lan_ack_title": "Acknowledge the critical result",
        "lan_waiting": "waiting to reach the hub",
        "findings": (
            "Right pleural space without lung markings, right lung collapsed by about 30%."
            " Left upper lobe nodule of about 8 mm."
        ),
        "impression": (
            "Right pneumothorax (about 30%): treat now. Left upper lobe nodule larger than before."
        ),
        "addendum_text": "Addendum: the clinic's doctor on duty was told by phone.",
        "question": "Ground-glass opacity in the right lower lobe: infection or early cancer?",
        "opinion_text": "Most likely infection; treat and repeat the chest CT in 2 weeks.",
        "readback": "Right temporal haemorrhage, told Dr Zhang by phone",
    },
}


@dataclass(frozen=True)
class Guide:
    lang: str
    hub: HubProcess
    #: clinic-a: an ordered CT with a signed critical report and a signed addendum.
    critical_uid: str
    #: clinic-a, patient G-1: a signed prior study and the current one (unread, oldest).
    prior_uid: str
    current_uid: str
    #: clinic-a: a second unread study, escalated by the radiologist.
    consult_uid: str
    #: clinic-a: an unread study nobody takes (the radiologists' test takes two before it).
    waiting_uid: str
    #: clinic-b: a signed critical report for the LAN page.
    lan_report: int


class Shots:
    """Screenshots of one run: to the test's directory, or to the guide's (optimised)."""

    def __init__(self, lang: str, tmp_path: Path) -> None:
        target = os.environ.get(ENV_DIR)
        self.optimise = bool(target)
        self.directory = (Path(target) if target else tmp_path) / lang
        self.directory.mkdir(parents=True, exist_ok=True)

    def __call__(self, page: Page, name: str) -> Path:
        assert name in SHOT_NAMES, name
        path = self.directory / f"{name}.png"
        page.screenshot(path=str(path))
        if self.optimise:
            with Image.open(path) as image:
                small = image.convert("RGB").quantize(colors=80, method=Image.Quantize.MEDIANCUT)
            small.save(path, optimize=True)
        with Image.open(path) as image:
            assert image.size == (SIZE["width"], SIZE["height"])
        return path


def api(hub: HubProcess, username: str) -> httpx.Client:
    token = httpx.post(
        f"{hub.url}/api/v1/auth/token",
        data={"username": username, "password": hub.passwords[username]},
        timeout=10,
    ).json()["access_token"]
    return httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def ct_study(hub: HubProcess, clinic: str, study: str | None = None, **attrs: object) -> str:
    study = study or generate_uid()
    series, frame = generate_uid(), generate_uid()
    fields = {
        "SpecificCharacterSet": "ISO_IR 192",
        "PatientSex": "M",
        "PatientBirthDate": "19600101",
        **attrs,
    }
    instances = [
        make_instance(
            BUNDLED / "CT_small.dcm",
            study=study,
            series=series,
            SeriesNumber=1,
            InstanceNumber=n + 1,
            FrameOfReferenceUID=frame,
            ImagePositionPatient=[-158.135803, -179.035797, 5.0 * n],
            SliceLocation=5.0 * n,
            **fields,
        )
        for n in range(3)
    ]
    return ingest(hub, clinic, *instances)


def sign(client: httpx.Client, hub: HubProcess, user: str, uid: str, **draft: object) -> int:
    return int(claim_and_sign(client, hub.passwords[user], uid, **draft)["id"])


@pytest.fixture(scope="module", params=LANGS)
def guide(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guide]:
    lang: str = request.param
    hub = start_hub_process(tmp_path_factory.mktemp(f"guide-{lang}") / "hub")
    try:
        # The critical result the clinic acknowledges: ordered, imaged, signed, amended.
        with api(hub, "staff-a") as staff:
            placed = staff.post(
                "/api/v1/orders",
                json={
                    "patient_name": "李^雷",
                    "patient_id": "MZ-0001",
                    "patient_sex": "M",
                    "patient_birth_date": "19580312",
                    "exam_type": "CT_HEAD",
                    "priority": "stat",
                    "reason_for_procedure": "突发头痛 2 小时",
                },
            )
            assert placed.status_code == 201, placed.text
        order = placed.json()
        critical_uid = ct_study(
            hub,
            "clinic-a",
            str(order["study_instance_uid"]),
            PatientName="李^雷",
            PatientID="MZ-0001",
            AccessionNumber=str(order["accession_number"]),
            BodyPartExamined="HEAD",
        )
        with api(hub, "rad1") as rad1:
            sign(
                rad1,
                hub,
                "rad1",
                critical_uid,
                findings="右侧颞叶见片状高密度影，约 3 cm。",
                impression="右侧颞叶脑出血。",
                critical=True,
                critical_category=CATEGORY,
            )
            addendum = rad1.post(
                f"/api/v1/studies/{critical_uid}/report/addenda",
                json={"findings": "", "impression": "补充：建议 24 小时后复查头颅 CT。"},
            )
            assert addendum.status_code == 201, addendum.text
            signed = rad1.post(
                f"/api/v1/reports/{addendum.json()['id']}/sign",
                json={"password": hub.passwords["rad1"]},
            )
            assert signed.status_code == 200, signed.text

        # One patient, a signed prior chest CT of 2025 and today's (the oldest unread study).
        patient = {"PatientName": "张^三", "PatientID": "G-1", "BodyPartExamined": "CHEST"}
        chest = "胸部CT平扫"
        prior_uid = ct_study(
            hub, "clinic-a", StudyDate="20250105", StudyDescription=chest, **patient
        )
        with api(hub, "rad2") as rad2:
            sign(
                rad2,
                hub,
                "rad2",
                prior_uid,
                findings="左肺上叶见小结节，约 6 mm。",
                impression="左肺上叶小结节，建议随访。",
            )
        today = datetime.now(UTC).strftime("%Y%m%d")
        current_uid = ct_study(hub, "clinic-a", StudyDate=today, StudyDescription=chest, **patient)
        consult_uid = ct_study(
            hub,
            "clinic-a",
            PatientName="韩^梅梅",
            PatientID="G-2",
            PatientSex="F",
            PatientBirthDate="19750620",
            BodyPartExamined="CHEST",
            StudyDescription=chest,
            StudyDate=today,
        )
        waiting_uid = ct_study(
            hub,
            "clinic-a",
            PatientName="周^芷若",
            PatientID="G-3",
            PatientSex="F",
            PatientBirthDate="19920214",
            BodyPartExamined="CHEST",
            StudyDescription=chest,
            StudyDate=today,
        )
        # clinic-b: a critical result its gateway holds, for the LAN page.
        lan_uid = ct_study(
            hub,
            "clinic-b",
            PatientName="赵^敏",
            PatientID="MZ-B-0042",
            PatientSex="F",
            PatientBirthDate="19880308",
            BodyPartExamined="CHEST",
            StudyDescription=chest,
            StudyDate=today,
        )
        with api(hub, "rad1") as rad1:
            lan_report = sign(
                rad1,
                hub,
                "rad1",
                lan_uid,
                findings="右侧胸腔见无肺纹理透亮区。",
                impression="右侧气胸，建议立即处理。",
                critical=True,
                critical_category=CHEST_CATEGORY,
            )
        yield Guide(
            lang=lang,
            hub=hub,
            critical_uid=critical_uid,
            prior_uid=prior_uid,
            current_uid=current_uid,
            consult_uid=consult_uid,
            waiting_uid=waiting_uid,
            lan_report=lan_report,
        )
    finally:
        hub.stop()


def open_app(open_page: OpenPage, guide: Guide) -> BrowserPage:
    bp = open_page(guide.hub.url, locale=guide.lang)
    bp.page.set_viewport_size(SIZE)
    if guide.lang != "zh-CN":  # as if the user had clicked the language switch once
        bp.context.add_init_script(
            "if (!localStorage.getItem('imaging-hub.lang'))"
            f" localStorage.setItem('imaging-hub.lang', '{guide.lang}');"
        )
    return bp


def row_of(page: Page, uid: str) -> Locator:
    return page.locator(f"[data-testid=clinic-study-row][data-study-uid='{uid}']")


def test_clinic_staff_screens(guide: Guide, open_page: OpenPage, tmp_path: Path) -> None:
    hub, text, shot = guide.hub, TEXT[guide.lang], Shots(guide.lang, tmp_path)
    bp = open_app(open_page, guide)
    page = bp.page

    # Signing in; a wrong password is refused with a message in the user's language.
    login(bp, hub, "staff-a", password="not-the-password")
    expect(page.locator("#login-status")).to_contain_text(text["login_failed"])
    expect(page.locator("html")).to_have_attribute("lang", guide.lang)
    expect(page.locator("#lang-switch")).to_have_text(text["lang_switch"])
    shot(page, "login-error")
    page.fill("#login-password", hub.passwords["staff-a"])
    page.click("#login-submit")

    # The clinic's exams by stage; the critical result stands out.
    critical = row_of(page, guide.critical_uid)
    expect(critical).to_have_attribute("data-status", "signed")
    expect(critical).to_have_class(re.compile(r"critical-open"))
    expect(critical.locator("[data-testid=clinic-stage]")).to_have_text(text["stage_signed"])
    # (One open critical result when this test runs first, as the guide's run does.)
    band = page.locator("#clinic-critical .clinic-critical-banner")
    expect(band).to_contain_text(re.compile(text["critical_band"]))
    expect(band).to_contain_text("李雷")
    waiting = row_of(page, guide.waiting_uid)
    expect(waiting.locator("[data-testid=clinic-stage]")).to_have_text(text["stage_waiting"])
    expect(page.locator("nav")).to_contain_text(text["clinic_title"])
    shot(page, "clinic-list")

    # A new exam order; its accession number for the machine's worklist.
    page.locator("[data-testid=order-new]").click()
    expect(page.locator("#order-title")).to_have_text(text["order_title"])
    page.locator("#order-patient-name").fill("王小东")
    page.locator("#order-patient-name-pinyin").fill("Wang^Xiaodong")
    page.locator("#order-patient-id").fill("MZ-20261206-1")
    page.locator("#order-patient-sex").select_option("M")
    page.locator("#order-patient-birth-date").fill("1980-05-01")
    page.locator("#order-exam-type").select_option("DX_CHEST_PA_LAT")
    page.locator("#order-priority").select_option("urgent")
    page.locator("#order-reason-for-procedure").fill("发热咳嗽 3 天，排除肺炎")
    shot(page, "order-form")
    with api(hub, "staff-a") as staff:
        orders = len(staff.get("/api/v1/orders", params={"limit": 1000}).json())
    page.locator("[data-testid=order-submit]").click()
    accession = page.locator("[data-testid=order-accession]")
    expect(accession).to_be_visible()
    expect(page.locator("[data-testid=order-created]")).to_contain_text(text["order_created"])
    with api(hub, "staff-a") as staff:
        mine = [
            o
            for o in staff.get("/api/v1/orders", params={"limit": 1000}).json()
            if o["patient_id"] == "MZ-20261206-1"
        ]
    assert len(mine) == 1
    expect(accession).to_have_text(str(mine[0]["accession_number"]))
    shot(page, "order-accession")

    # The next order, submitted empty: answered field by field, nothing registered.
    page.locator("#order-another").click()
    expect(page.locator("[data-testid=order-accession]")).to_have_count(0)
    expect(page.locator("#order-patient-name")).to_have_value("")
    page.locator("[data-testid=order-submit]").click()
    expect(page.locator("#order-form .order-status .message-error")).to_have_text(
        text["order_invalid"]
    )
    expect(page.locator(".field-error[data-field=patient_id]")).not_to_be_empty()
    expect(page.locator("#order-patient-id")).to_have_attribute("aria-invalid", "true")
    shot(page, "order-errors")
    with api(hub, "staff-a") as staff:
        assert len(staff.get("/api/v1/orders", params={"limit": 1000}).json()) == orders + 1

    # "Exam done" for a machine without MPPS: asked first, then the row moves on.
    row = row_of(page, str(mine[0]["study_instance_uid"]))
    expect(row.locator("[data-testid=clinic-stage]")).to_have_text(text["stage_ordered"])
    page.locator("#order-close").click()
    expect(page.locator("#order-form")).to_have_count(0)
    row.locator("[data-testid=order-done]").click()
    expect(page.locator("#order-done")).to_contain_text(text["done_title"])
    expect(page.locator("#order-done")).to_contain_text(str(mine[0]["accession_number"]))
    shot(page, "exam-done")
    page.locator("#order-done-confirm").click()
    expect(row.locator("[data-testid=clinic-stage]")).to_have_text(text["stage_scanning"])

    # The signed report and its addendum, as PDFs.
    with page.expect_download() as download:
        critical.locator("[data-testid=report-download]").click()
    assert Path(download.value.path()).read_bytes().startswith(b"%PDF")
    with page.expect_download() as download:
        critical.locator("[data-testid=report-download-addendum]").click()
    assert Path(download.value.path()).read_bytes().startswith(b"%PDF")

    # Acknowledging the critical result: how it was passed on, and the read-back.
    critical.locator("[data-testid=critical-acknowledge]").click()
    dialog = page.locator("#critical-ack")
    expect(dialog).to_contain_text(text["ack_title"])
    expect(dialog).to_contain_text("右侧颞叶脑出血。")
    page.locator("[data-testid=critical-ack-method]").select_option("phone")
    page.locator("[data-testid=critical-ack-readback]").fill(text["readback"])
    shot(page, "critical-ack")
    page.locator("[data-testid=critical-ack-confirm]").click()
    expect(critical).to_have_attribute("data-status", "acknowledged")
    expect(critical.locator("[data-testid=clinic-stage]")).to_have_text(text["stage_acknowledged"])
    expect(band.filter(has_text="李雷")).to_have_count(0)
    critical.scroll_into_view_if_needed()
    shot(page, "clinic-acknowledged")
    assert bp.problems() == []


def test_radiologist_and_consultant_screens(
    guide: Guide, open_page: OpenPage, tmp_path: Path
) -> None:
    hub, text, shot = guide.hub, TEXT[guide.lang], Shots(guide.lang, tmp_path)
    bp = open_app(open_page, guide)
    page = bp.page
    login(bp, hub, "rad1")
    expect(page.locator("[data-testid=worklist-next]")).to_have_text(text["next_study"])
    expect(page.locator("[data-testid=worklist-row]")).not_to_have_count(0)
    shot(page, "worklist")

    # Take the next study: today's chest CT of 张三 (the oldest unread one).
    page.locator("[data-testid=worklist-next]").click()
    expect(page).to_have_url(f"{hub.url}/#/study/{guide.current_uid}")
    wait_drawn(page)
    page.keyboard.press("1")  # lung window (CT preset 1)
    viewport = page.locator("[data-testid=viewport]")
    expect(viewport).to_have_attribute("data-window", "-600,1500")

    page.keyboard.press("?")
    help_box = page.locator("#viewer-help")
    expect(help_box).to_be_visible()
    expect(help_box).to_contain_text(text["help_title"])
    shot(page, "viewer-shortcuts")
    page.keyboard.press("Escape")
    expect(help_box).to_be_hidden()

    # A length measurement, listed with its value in mm.
    box = viewport.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.click("[data-testid=tool-length]")
    page.mouse.move(x - 80, y - 30)
    page.mouse.down()
    page.mouse.move(x + 60, y + 40, steps=8)
    page.mouse.up()
    measured = page.locator("[data-testid=measurements] li.measurement")
    expect(measured).to_have_count(1)
    expect(measured).to_contain_text("mm")
    expect(page.locator("body")).to_contain_text(text["measurements"])
    shot(page, "viewer-measurement")

    # The prior study side by side.
    prior = page.locator(f"[data-testid=prior-study][data-study-uid='{guide.prior_uid}']")
    expect(prior).to_be_visible()
    expect(page.locator("body")).to_contain_text(text["prior"])
    prior.locator("[data-testid=prior-open]").click()
    expect(page.locator(".vp-cell")).to_have_count(2)
    wait_drawn(page, ".vp-cell:nth-child(2) .vp-element")
    shot(page, "viewer-prior")

    # The report: text, a critical result, saved as typed.
    page.locator("[data-testid=report-findings]").fill(text["findings"])
    page.locator("[data-testid=report-impression]").fill(text["impression"])
    page.locator("[data-testid=report-critical]").check()
    page.locator("#report-critical-category").select_option(CHEST_CATEGORY)
    status = page.locator("[data-testid=report-status]")
    expect(status).to_have_attribute("data-status", "draft")
    expect(status).to_contain_text(text["saved"])
    shot(page, "report-draft")

    # Signing asks for the password again.
    page.locator("[data-testid=report-sign]").click()
    dialog = page.locator("#report-sign-dialog")
    expect(dialog).to_have_attribute("aria-label", text["sign_dialog"])
    page.locator("[data-testid=report-sign-password]").fill(hub.passwords["rad1"])
    shot(page, "report-sign")
    page.locator("[data-testid=report-sign-confirm]").click()
    expect(status).to_have_attribute("data-status", "signed", timeout=30_000)
    expect(status).to_contain_text(text["signed"])
    shot(page, "report-signed")

    # An addendum, signed the same way.
    page.locator("[data-testid=report-addendum]").click()
    expect(page.locator("#report-editor")).to_have_attribute("data-kind", "addendum")
    page.locator("[data-testid=report-impression]").fill(text["addendum_text"])
    expect(status).to_contain_text(text["saved"])
    page.locator("[data-testid=report-sign]").click()
    page.locator("[data-testid=report-sign-password]").fill(hub.passwords["rad1"])
    page.locator("[data-testid=report-sign-confirm]").click()
    expect(page.locator(".report-doc")).to_have_count(2, timeout=30_000)
    expect(page.locator(".report-doc-addendum")).to_contain_text(text["addendum"])
    shot(page, "report-addendum")
    with api(hub, "rad1") as client:
        chain = client.get(f"/api/v1/studies/{guide.current_uid}/report").json()
    assert chain["report"]["critical"] is True and len(chain["addenda"]) == 1

    # Escalating the next study to the provincial hospital.
    page.goto("/#/worklist")
    page.locator("[data-testid=worklist-next]").click()
    expect(page).to_have_url(f"{hub.url}/#/study/{guide.consult_uid}")
    page.locator("[data-testid=escalate]").click()
    expect(page.locator("[data-testid=escalate]")).to_have_text(text["escalate"])
    target = page.locator("[data-testid=escalate-institution]")
    expect(target).to_be_enabled()
    target.select_option("province")
    page.locator("#escalate-question").fill(text["question"])
    wait_drawn(page)
    shot(page, "escalate")
    page.locator("#escalate-submit").click()
    expect(page.locator("[data-testid=consult-item]")).to_have_attribute("data-status", "open")
    expect(page.locator("#study-status")).to_have_text(text["escalated"])
    assert bp.problems() == []

    # The consultant's opinion.
    con = open_app(open_page, guide)
    cpage = con.page
    login(con, hub, "consult1")
    expect(cpage.locator("[data-testid=notifications-count]")).to_have_text("1")
    cpage.goto(f"/#/study/{guide.consult_uid}")
    expect(cpage.locator("[data-testid=consult-item] .consult-question")).to_have_text(
        text["question"]
    )
    wait_drawn(cpage)
    cpage.locator("[data-testid=consult-opinion]").fill(text["opinion_text"])
    expect(cpage.locator("body")).to_contain_text(text["opinion"])
    shot(cpage, "consultant-opinion")
    cpage.locator("[data-testid=consult-opinion-submit]").click()
    expect(cpage.locator("[data-testid=consult-opinion-text]")).to_have_text(text["opinion_text"])
    assert con.problems() == []

    # Back with the radiologist: the opinion beside the report pane.
    page.reload()
    expect(page.locator("[data-testid=consult-opinion-text]")).to_have_text(text["opinion_text"])
    expect(page.locator("[data-testid=report-findings]")).to_be_editable()
    wait_drawn(page)
    shot(page, "opinion-arrived")
    assert bp.problems() == []


def test_lan_page_screens(guide: Guide, open_page: OpenPage, tmp_path: Path) -> None:
    hub, text, shot = guide.hub, TEXT[guide.lang], Shots(guide.lang, tmp_path)
    store = ReportStore(tmp_path / "spool")
    client = HubClient(hub.url, hub.gateway_tokens["clinic-b"], timeout=30)
    puller = ReportPuller(
        store, client, wait_seconds=1, retry_initial_seconds=0.2, retry_max_seconds=1
    )
    server = LanPageServer(LanPage(store, clinic="clinic-b"), host="127.0.0.1", port=free_port())
    try:
        pull_until(puller, guide.lan_report, store)
        server.start()
        bp = open_page(f"http://127.0.0.1:{server.port}", locale=guide.lang)
        page = bp.page
        page.set_viewport_size(SIZE)
        page.goto(f"/login?lang={guide.lang}")
        expect(page.locator("html")).to_have_attribute("lang", guide.lang)
        page.get_by_test_id("lan-login-username").fill("staff-b")
        page.get_by_test_id("lan-login-password").fill(hub.passwords["staff-b"])
        expect(page.get_by_test_id("lan-login-submit")).to_have_text(text["lan_login"])
        shot(page, "lan-login")
        page.get_by_test_id("lan-login-submit").click()

        row = page.locator(f'[data-testid="lan-report-row"][data-report-id="{guide.lan_report}"]')
        expect(row).to_have_attribute("data-critical", "true")
        expect(row).to_contain_text("赵 敏")
        expect(row).to_contain_text("MZ-B-0042")
        expect(page.get_by_test_id("lan-critical-open")).to_have_text(text["lan_critical"])
        shot(page, "lan-reports")

        row.get_by_test_id("lan-ack-link").click()
        expect(page.locator("body")).to_contain_text(text["lan_ack_title"])
        page.get_by_test_id("lan-ack-method").select_option("phone")
        page.get_by_test_id("lan-ack-read-back").fill(text["readback"])
        shot(page, "lan-acknowledge")
        page.get_by_test_id("lan-ack-submit").click()
        expect(row).to_have_attribute("data-acknowledged", "true")
        expect(row).to_contain_text(text["lan_waiting"])
        assert bp.problems() == []
    finally:
        server.stop()
        client.close()
        store.close()
    # Stored on the gateway, waiting to reach the hub.
    store = ReportStore(tmp_path / "spool")
    try:
        assert [a.report_id for a in store.pending_acknowledgements()] == [guide.lan_report]
    finally:
        store.close()


@pytest.mark.parametrize("lang", LANGS)
def test_the_guide_shows_every_screenshot_and_only_committed_ones(lang: str) -> None:
    """docs/guide/<lang>.md shows each screenshot of this module once in its language, and
    each is committed (a renamed or dropped shot fails here, not in the reader's browser)."""
    text = (GUIDE / f"{lang}.md").read_text(encoding="utf-8")
    shown = re.findall(r"!\[[^\]]+\]\(img/([^/)]+)/([^)]+)\.png\)", text)
    assert {folder for folder, _ in shown} == {lang}
    names = [name for _, name in shown]
    assert sorted(names) == sorted(SHOT_NAMES)
    committed = {p.stem for p in (GUIDE / "img" / lang).glob("*.png")}
    assert committed == SHOT_NAMES
    for name in names:
        with Image.open(GUIDE / "img" / lang / f"{name}.png") as image:
            assert image.size == (SIZE["width"], SIZE["height"])


def test_the_screenshot_script_passes_shellcheck() -> None:
    result = subprocess.run(
        ["shellcheck", "--shell=bash", "--severity=style", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
