"""The report pane beside the viewer, and the clinic's side of a signed report, in Debian chromium
against a real hub: rad1 takes the next study, writes findings and impression through the
``report-*`` hooks (hostile HTML included), reloads (the draft is kept: saved on the hub as typed),
signs with the password (a wrong one first: the Chinese message of its code, nothing signed),
sees the signed status with its SHA-256, downloads the PDF and writes and signs an addendum;
staff-a then sees the signed study on the clinic page, downloads the report and acknowledges the
critical result. On the way the radiologist marks the image shown in the viewer as the key image
(a thumbnail beside the text, kept with the draft) and the signed PDF carries it. Screenshots
of each step are kept in the test's temporary directory (``report-*.png``).
"""

import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from pydicom.uid import generate_uid

from tests.e2e.support import BUNDLED, claim_and_sign, ingest, login, make_instance
from tests.peers.browser import OpenPage
from tests.peers.hub import HubProcess, start_hub_process

pytestmark = pytest.mark.e2e

HOSTILE = "<img src=x onerror=alert(1)>"
CATEGORY = "颅内出血 intracranial haemorrhage"
QUESTION = "头颅CT平扫：突发头痛、呕吐 2 小时"


@pytest.fixture(scope="module")
def report_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, str]]:
    hub = start_hub_process(tmp_path_factory.mktemp("report-pane") / "hub")
    try:
        # The clinic's order carries the clinical question the pane shows above the editor.
        with api(hub, "staff-a") as staff:
            placed = staff.post(
                "/api/v1/orders",
                json={
                    "accession_number": "ACC-RP-1",
                    "patient_id": "R-1",
                    "patient_name": "李^雷",
                    "modality": "CT",
                    "scheduled_at": datetime.now(UTC).isoformat(),
                    "reason_for_procedure": QUESTION,
                },
            )
            assert placed.status_code == 201, placed.text
        study, series = generate_uid(), generate_uid()
        instances = [
            make_instance(
                BUNDLED / "CT_small.dcm",
                study=study,
                series=series,
                SeriesNumber=1,
                InstanceNumber=n,
                SpecificCharacterSet="ISO_IR 192",
                PatientName="李^雷",
                PatientID="R-1",
                BodyPartExamined="HEAD",
                StudyDescription="头颅CT平扫",
                AccessionNumber="ACC-RP-1",
            )
            for n in (1, 2)
        ]
        ingest(hub, "clinic-a", *instances)
        yield hub, study
    finally:
        hub.stop()


def api(hub: HubProcess, username: str) -> httpx.Client:
    token = httpx.post(
        f"{hub.url}/api/v1/auth/token",
        data={"username": username, "password": hub.passwords[username]},
        timeout=10,
    ).json()["access_token"]
    return httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def shot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"report-{name}.png"))


def pdf_image_sizes(pdf: Path) -> list[tuple[int, int]]:
    """(width, height) of the image XObjects in *pdf* (poppler's pdfimages)."""
    listing = subprocess.run(
        ["pdfimages", "-list", str(pdf)], capture_output=True, check=True, text=True
    ).stdout
    rows = [line.split() for line in listing.splitlines()[2:] if line.strip()]
    return [(int(row[3]), int(row[4])) for row in rows if row[2] == "image"]


def wait_saved(page: Page) -> None:
    status = page.locator("[data-testid=report-status]")
    expect(status).to_have_attribute("data-status", "draft")
    expect(status).to_contain_text("已于")  # "草稿 · 已于 hh:mm 保存"


def test_write_sign_addendum_and_clinic_acknowledges(
    report_hub: tuple[HubProcess, str], open_page: OpenPage, tmp_path: Path
) -> None:
    hub, uid = report_hub
    bp = open_page(hub.url)
    page = bp.page
    login(bp, hub, "rad1")
    page.locator("[data-testid=worklist-next], #next-study").first.click()
    expect(page).to_have_url(f"{hub.url}/#/study/{uid}")
    pane = page.locator("[data-testid=report-pane-slot] .report-pane")
    expect(pane).to_be_visible()

    # The order's clinical question and the template the hub suggests for CT HEAD, pre-selected;
    # its sections insert their "normal" text.
    expect(page.locator("#report-question")).to_contain_text(QUESTION)
    template = page.locator("[data-testid=report-template]")
    expect(template).to_have_value("ct-head-noncontrast")
    expect(page.locator("[data-testid=report-status]")).to_have_attribute("data-status", "none")
    page.locator("#report-all-normal").click()
    findings = page.locator("[data-testid=report-findings]")
    expect(findings).not_to_have_value("")
    wait_saved(page)

    findings.fill(f"右侧颞叶见片状高密度影，约 3 cm。{HOSTILE}")
    page.locator("[data-testid=report-impression]").fill("右侧颞叶脑出血。")
    page.locator("[data-testid=report-critical]").check()
    page.locator("#report-critical-category").select_option(CATEGORY)
    wait_saved(page)

    # The key image: the image the active viewport shows (instance, frame, window), marked with
    # one click; its thumbnail comes from WADO-RS rendered; saved with the draft.
    viewport = page.locator("[data-testid=viewport]")
    expect(viewport).to_have_attribute("data-sop", re.compile(r"^[0-9.]+$"), timeout=30_000)
    sop = viewport.get_attribute("data-sop")
    expect(page.locator("[data-testid=report-key-image-thumb]")).to_have_count(0)
    page.locator("[data-testid=report-key-image-set]").click()
    thumb = page.locator("[data-testid=report-key-image-thumb]")
    expect(thumb).to_be_visible()
    expect(thumb).to_have_attribute("src", re.compile(r"^blob:"))
    assert thumb.evaluate("img => img.naturalWidth") > 0
    wait_saved(page)
    with api(hub, "rad1") as client:
        marked = client.get(f"/api/v1/studies/{uid}/report").json()["draft"]["key_image"]
    assert marked["sop_instance_uid"] == sop and marked["frame"] == 1
    shot(page, tmp_path, "1-draft")

    # A reload keeps the draft: it lives on the hub.
    page.reload()
    expect(page.locator("[data-testid=report-findings]")).to_have_value(
        f"右侧颞叶见片状高密度影，约 3 cm。{HOSTILE}"
    )
    expect(page.locator("[data-testid=report-impression]")).to_have_value("右侧颞叶脑出血。")
    expect(page.locator("[data-testid=report-critical]")).to_be_checked()
    expect(page.locator("#report-critical-category")).to_have_value(CATEGORY)
    expect(page.locator("[data-testid=report-template]")).to_have_value("ct-head-noncontrast")
    expect(page.locator("[data-testid=report-key-image]")).to_have_attribute("data-sop", str(sop))
    expect(page.locator("[data-testid=report-key-image-thumb]")).to_be_visible()
    page.locator("[data-testid=report-save]").click()
    wait_saved(page)

    # Signing asks for the password again; a wrong one is explained in Chinese by its code and
    # signs nothing.
    page.locator("[data-testid=report-sign]").click()
    password = page.locator("[data-testid=report-sign-password]")
    expect(password).to_be_visible()
    password.fill("not-my-password")
    page.locator("[data-testid=report-sign-confirm]").click()
    expect(page.locator("#report-sign-dialog .message-error")).to_have_text(
        "签名密码错误，报告未签发。"
    )
    shot(page, tmp_path, "2-wrong-password")
    with api(hub, "rad1") as client:
        chain = client.get(f"/api/v1/studies/{uid}/report").json()
        assert chain["report"] is None and chain["draft"]["status"] == "draft"
    password.fill(hub.passwords["rad1"])
    page.locator("[data-testid=report-sign-confirm]").click()
    status = page.locator("[data-testid=report-status]")
    expect(status).to_have_attribute("data-status", "signed", timeout=30_000)
    with api(hub, "rad1") as client:
        chain = client.get(f"/api/v1/studies/{uid}/report").json()
    report = chain["report"]
    assert report["status"] == "signed" and report["critical"] is True
    expect(status).to_have_attribute("data-sha256", report["sha256"])
    expect(status).to_contain_text("已签发")
    expect(page.locator("[data-testid=report-sha256]")).to_have_text(report["sha256"])
    # Read-only now: the editor is gone; the hostile text is shown as text.
    expect(page.locator("#report-editor")).to_have_count(0)
    expect(page.locator(".report-findings-text").first).to_contain_text(HOSTILE)
    expect(page.locator("#study-status")).to_have_text("已签发")
    shot(page, tmp_path, "3-signed")

    with page.expect_download() as download:
        page.locator("[data-testid=report-pdf]").first.click()
    pdf = Path(download.value.path()).read_bytes()
    assert pdf.startswith(b"%PDF")
    assert report["key_image"]["sop_instance_uid"] == sop
    assert (128, 128) in pdf_image_sizes(Path(download.value.path()))  # CT_small, rendered

    # An addendum: a new draft, edited and signed the same way; the first report stays.
    page.locator("[data-testid=report-addendum]").click()
    expect(page.locator("#report-editor")).to_have_attribute("data-kind", "addendum")
    page.locator("[data-testid=report-impression]").fill("补充：建议复查头颅CT。")
    wait_saved(page)
    page.locator("[data-testid=report-sign]").click()
    page.locator("[data-testid=report-sign-password]").fill(hub.passwords["rad1"])
    page.locator("[data-testid=report-sign-confirm]").click()
    expect(page.locator(".report-doc")).to_have_count(2, timeout=30_000)
    expect(status).to_have_attribute("data-status", "signed")
    expect(page.locator(".report-doc-addendum")).to_contain_text("建议复查头颅CT")
    with api(hub, "rad1") as client:
        chain = client.get(f"/api/v1/studies/{uid}/report").json()
    assert len(chain["addenda"]) == 1
    assert chain["report"]["sha256"] == report["sha256"]
    expect(status).to_have_attribute("data-sha256", chain["addenda"][0]["sha256"])
    shot(page, tmp_path, "4-addendum")
    assert bp.problems() == []

    # The clinic: the signed study with its status, the report download, the critical result
    # standing out until acknowledged (method + read-back).
    staff = open_page(hub.url)
    spage = staff.page
    login(staff, hub, "staff-a")
    row = spage.locator(f"[data-testid=clinic-study-row][data-study-uid='{uid}']")
    expect(row).to_have_attribute("data-status", "signed")
    expect(row).to_have_class(re.compile(r"critical-open"))
    expect(spage.locator("#clinic-critical .message-error")).to_contain_text("危急值")
    expect(spage.locator("[data-testid=notifications-count]")).to_have_text("1")
    shot(spage, tmp_path, "5-clinic-critical")
    with spage.expect_download() as download:
        row.locator("[data-testid=report-download]").click()
    assert Path(download.value.path()).read_bytes() == pdf
    with spage.expect_download() as download:
        row.locator("[data-testid=report-download-addendum]").click()
    assert Path(download.value.path()).read_bytes().startswith(b"%PDF")

    row.locator("[data-testid=critical-acknowledge]").click()
    spage.locator("#critical-ack-method").select_option("phone")
    spage.locator("#critical-ack-readback").fill("右侧颞叶脑出血，已电话告知王医生")
    shot(spage, tmp_path, "6-acknowledge")
    spage.locator("#critical-ack-confirm").click()
    expect(row).to_have_attribute("data-status", "acknowledged")
    expect(row).not_to_have_class(re.compile(r"critical-open"))
    expect(row).to_contain_text("已确认接收")
    expect(spage.locator("#clinic-critical .message-error")).to_have_count(0)
    with api(hub, "staff-a") as client:
        acked = client.get(f"/api/v1/studies/{uid}/report").json()["report"]
    assert acked["acknowledgement_method"] == "phone"
    assert acked["acknowledgement_read_back"] == "右侧颞叶脑出血，已电话告知王医生"
    shot(spage, tmp_path, "7-acknowledged")
    assert staff.problems() == []

    # The same pane in English: the labels follow the language.
    page.locator("#lang-switch").click()
    expect(page.locator(".report-title")).to_have_text("Report")
    expect(page.locator("[data-testid=report-status]")).to_contain_text("Signed")
    shot(page, tmp_path, "8-english")
    assert bp.problems() == []


def test_the_patients_prior_report_beside_the_pane(
    report_hub: tuple[HubProcess, str], open_page: OpenPage, tmp_path: Path
) -> None:
    """A second study of a patient whose earlier study was signed: the pane offers the earlier
    report, folded, text only; another clinic's staff does not get the study at all."""
    hub, _ = report_hub

    def study_of_r2(date: str) -> str:
        return ingest(
            hub,
            "clinic-a",
            make_instance(
                BUNDLED / "CT_small.dcm",
                SpecificCharacterSet="ISO_IR 192",
                PatientName="韩^梅",
                PatientID="R-2",
                BodyPartExamined="HEAD",
                StudyDate=date,
            ),
        )

    earlier = study_of_r2("20230105")
    with api(hub, "rad2") as client:
        claim_and_sign(
            client,
            hub.passwords["rad2"],
            earlier,
            findings=f"脑实质未见异常。{HOSTILE}",
            impression="头颅CT平扫未见异常。",
        )
    later = study_of_r2("20240105")

    staff = open_page(hub.url)
    spage = staff.page
    login(staff, hub, "staff-a")
    # From the clinic page (one list request) to the later study.
    spage.locator(f"[data-testid=clinic-study-row][data-study-uid='{later}'] .patient-link").click()
    expect(spage).to_have_url(f"{hub.url}/#/study/{later}")
    prior = spage.locator("[data-testid=report-prior]")
    expect(prior).to_have_attribute("data-study-uid", earlier)
    expect(prior.locator("summary")).to_have_text("上次报告")
    expect(spage.locator("[data-testid=report-prior-impression]")).to_be_hidden()
    prior.locator("summary").click()
    expect(spage.locator("[data-testid=report-prior-impression]")).to_have_text(
        "头颅CT平扫未见异常。"
    )
    expect(spage.locator("[data-testid=report-prior-findings]")).to_have_text(
        f"脑实质未见异常。{HOSTILE}"
    )
    shot(spage, tmp_path, "9-prior")
    assert staff.problems() == []
    with api(hub, "staff-b") as client:
        assert client.get(f"/api/v1/studies/{later}/report").status_code == 404


def test_a_report_series_in_a_viewport_says_it_has_no_images(
    report_hub: tuple[HubProcess, str], open_page: OpenPage, tmp_path: Path
) -> None:
    """The signed report's own series (the Encapsulated PDF, the SR) are listed with the study's
    images; opened in a viewport they say they hold no images — not "loading" for ever — and the
    viewport shows images again when an image series is opened in it."""
    hub, _ = report_hub
    study = ingest(
        hub,
        "clinic-a",
        make_instance(
            BUNDLED / "CT_small.dcm",
            SpecificCharacterSet="ISO_IR 192",
            PatientName="王^芳",
            PatientID="R-3",
            BodyPartExamined="HEAD",
        ),
    )
    with api(hub, "rad2") as client:
        claim_and_sign(
            client,
            hub.passwords["rad2"],
            study,
            findings="脑实质未见异常。",
            impression="头颅CT平扫未见异常。",
        )

    rad = open_page(hub.url)
    page = rad.page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    login(rad, hub, "rad2")
    expect(page.locator("#worklist-table")).to_be_visible()  # signed in: the worklist first
    page.goto(f"/#/study/{study}")
    expect(page).to_have_url(f"{hub.url}/#/study/{study}")
    viewport = page.locator("[data-testid=viewport]")
    expect(viewport).to_have_attribute("data-image-index", "1", timeout=30_000)
    items = page.locator("#series-list .series-item")
    expect(items).to_have_count(3)
    pdf_series = items.filter(has_text="DOC")
    expect(pdf_series.locator(".series-desc")).to_have_text("影像诊断报告 Signed report (PDF)")
    sr_series = items.filter(has_text="SR")
    expect(sr_series.locator(".series-desc")).to_have_text("影像诊断报告 Signed report (SR)")
    # No pixels, so no thumbnail asked for: a label in its place.
    expect(pdf_series.locator(".thumb-doc")).to_have_text("PDF")
    expect(sr_series.locator(".thumb-doc")).to_have_text("SR")
    expect(items.filter(has_text="CT").locator("img.thumb")).to_have_attribute(
        "src", re.compile("^blob:"), timeout=30_000
    )
    for item in (pdf_series, sr_series):
        series_uid = item.get_attribute("data-uid")
        assert series_uid and not [u for u in requested if f"{series_uid}/thumbnail" in u]

    pdf_series.click()
    message = page.locator(".vp-cell.active .vp-message .message-info")
    expect(message).to_contain_text("此序列没有图像", timeout=30_000)
    expect(viewport).not_to_have_attribute("data-image-index", "1")
    expect(page.locator("#window-center")).to_have_value("")  # not the CT image's window
    shot(page, tmp_path, "10-report-series")

    items.filter(has_text="CT").click()
    expect(viewport).to_have_attribute("data-image-index", "1", timeout=30_000)
    expect(message).to_have_count(0)
    expect(page.locator("#window-center")).not_to_have_value("")
    assert rad.problems() == []
