"""Issue 14's "Must show", end to end, with real peers only (docs/clinic-return.md "The flow").

A real hub process; real ``gateway serve`` processes for clinic-a and clinic-b (each with its LAN
page, a short order sync and a stability window of ten minutes, so a study can only become
complete for reading through its MPPS); chromium (Playwright) for the portal and the LAN pages;
dcmtk's ``findscu -W`` and ``storescu`` and a pynetdicom modality for MPPS.

staff-a registers an order in the portal (Chinese name with pinyin); clinic-a's gateway answers
it to ``findscu -W`` with the name byte for byte in UTF-8 and in GB18030 (per calling AE);
``storescu`` sends images carrying the MWL answer's patient, accession number and
StudyInstanceUID; MPPS IN PROGRESS shows ``scanning``, MPPS COMPLETED makes the study ``unread``
at once; rad1 signs; clinic-a's gateway holds the PDF; staff-a downloads it from the portal (the
hub's bytes), the row is ``delivered``. With the hub stopped the gateway still answers the
worklist from its cache and serves the report on its LAN page. staff-b finds nothing of clinic-a:
portal, orders API, QIDO-RS, clinic-b's gateway worklist and LAN page.

Screenshots ``e2e-*.png`` are kept in the test's temporary directory.
"""

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pydicom
import pytest
from playwright.sync_api import Locator, Page, expect
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]
from sqlalchemy import select

from imaging_hub.dicom_gateway.mwl import OrderCache
from imaging_hub.dicom_gateway.reports import ReportStore
from imaging_hub.worklist.db.models import Study
from tests.e2e.support import BUNDLED, claim_and_sign, login
from tests.integration.test_gateway_mwl import wire_elements, worklist_item, write_part10
from tests.peers.browser import BrowserPage, OpenPage
from tests.peers.dcmtk import findscu, storescu, wlmscpfs
from tests.peers.hub import CLI, GatewayFactory, GatewayProcess, HubProcess, start_hub_process
from tests.peers.mpps import CT_IMAGE, create_attributes, final_attributes, modality
from tests.peers.net import free_port

pytestmark = pytest.mark.e2e

CT_SAMPLE = BUNDLED / "CT_small.dcm"  # the repository's CT sample (pydicom's, 128x128)
NAME, PINYIN = "王小东", "Wang^Xiaodong"
PN = f"{PINYIN}={NAME}"  # as the hub stores it (alphabetic=ideographic)
GB_AE = "GBMOD"  # answered in GB18030; every other calling AE in UTF-8
STABILITY_SECONDS = 600  # completion must come from the MPPS
UNREAD_WITHIN_SECONDS = 20  # "at once": far below the stability window, on a loaded machine
REPORT_WITHIN_SECONDS = 20
N_IMAGES = 3

T = TypeVar("T")


def wait_for(what: str, predicate: Callable[[], T], timeout: float, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)


def shot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"e2e-{name}.png"), full_page=True)


def study_status(hub: HubProcess, uid: str) -> str | None:
    with hub.sessions() as session:
        status = session.scalar(select(Study.status).where(Study.study_instance_uid == uid))
    return None if status is None else str(status)


def cached_studies(gateway: GatewayProcess) -> set[str]:
    """StudyInstanceUIDs of the orders in the gateway's cache (accession numbers are the
    clinic's own series: clinic-b's first order has clinic-a's first number too)."""
    cache = OrderCache(gateway.spool_dir)
    try:
        return {o.study_instance_uid for o in cache.orders()}
    finally:
        cache.close()


def gateway_status(gateway: GatewayProcess) -> dict[str, Any]:
    out = subprocess.run(
        [*CLI, "gateway", "status", "--json"],
        env=gateway.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    status: dict[str, Any] = json.loads(out.stdout)
    return status


def mwl_query(path: Path, charset: str, **top: str) -> Path:
    """A findscu -W query file asking for the patient, the order and the whole step."""
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyInstanceUID",
        "RequestedProcedureDescription",
        "ReasonForTheRequestedProcedure",
        "RequestedProcedurePriority",
    ):
        setattr(ds, keyword, "")
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    sps = Dataset()
    for keyword in ("ScheduledStationAETitle", "Modality", "ScheduledProcedureStepID"):
        setattr(sps, keyword, "")
    ds.ScheduledProcedureStepSequence = [sps]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ModalityWorklistInformationFind
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def worklist(
    gateway: GatewayProcess, tmp_path: Path, name: str, *, calling: str, charset: str, **keys: str
) -> list[Dataset]:
    """findscu -W against *gateway*; the answers as received (raw element values kept)."""
    query = mwl_query(tmp_path / f"{name}-query.dcm", charset, **keys)
    out = tmp_path / f"{name}-answers"
    run = findscu(gateway.port, query, called_ae=gateway.ae_title, calling_ae=calling, out=out)
    assert run.returncode == 0, run.stdout + run.stderr
    return [pydicom.dcmread(f) for f in sorted(out.glob("rsp*.dcm"))]


def raw_bytes(ds: Dataset, keyword: str) -> bytes:
    """An element's value as it crossed the wire (before any decoding)."""
    elem = ds.get_item(keyword)
    assert elem is not None, keyword
    return bytes(elem.value or b"").rstrip(b" ")


def images_from_answer(answer: Dataset, directory: Path) -> list[Path]:
    """What a CT makes after picking the MWL item: the patient, accession number and
    StudyInstanceUID of the answer, in a new series, UTF-8."""
    series = generate_uid()
    today = time.strftime("%Y%m%d")
    files = []
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(N_IMAGES):
        ds = pydicom.dcmread(CT_SAMPLE)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = str(answer.PatientName)
        ds.PatientID = answer.PatientID
        ds.PatientBirthDate = answer.PatientBirthDate
        ds.PatientSex = answer.PatientSex
        ds.AccessionNumber = answer.AccessionNumber
        ds.StudyInstanceUID = answer.StudyInstanceUID
        ds.SeriesInstanceUID = series
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
        ds.StudyDescription = answer.RequestedProcedureDescription
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = n + 1
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = directory / f"img{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def forwarded_line(gateway: GatewayProcess) -> str:
    """The gateway's log once it names a study forwarded by its MPPS, else empty."""
    log = gateway.log_path.read_text(errors="replace")
    return log if "forwarded (mpps)" in log else ""


def refreshed_status(page: Page, row: Locator) -> str | None:
    """The row's stage after the portal's refresh button."""
    page.locator("#clinic-refresh").click()
    return row.get_attribute("data-status", timeout=5_000)


def lan_sign_in(bp: BrowserPage, username: str, password: str) -> None:
    page = bp.page
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.get_by_test_id("lan-login-username").fill(username)
    page.get_by_test_id("lan-login-password").fill(password)
    page.get_by_test_id("lan-login-submit").click()


def test_back_to_the_clinic(
    start_gateway: GatewayFactory, open_page: OpenPage, tmp_path: Path
) -> None:
    hub = start_hub_process(tmp_path / "hub")
    try:
        _chain(hub, start_gateway, open_page, tmp_path)
    finally:
        hub.stop()


def _chain(
    hub: HubProcess, start_gateway: GatewayFactory, open_page: OpenPage, tmp_path: Path
) -> None:
    lan_a, lan_b = free_port(), free_port()
    common = {
        "stability_seconds": STABILITY_SECONDS,
        "order_sync_seconds": 0.5,
        "report_poll_wait_seconds": 5,
        "scp_workers": 1,
        "transcode_processes": 0,
        "heartbeat_seconds": 3600,
        "mwl_character_sets": json.dumps({GB_AE: "GB18030"}),
    }
    gw_a = start_gateway(hub, "clinic-a", "CLINIC_A", lan_page_port=lan_a, **common)
    gw_b = start_gateway(hub, "clinic-b", "CLINIC_B", lan_page_port=lan_b, **common)

    # 1. staff-a registers the order in the portal.
    portal = open_page(hub.url)
    page = portal.page
    login(portal, hub, "staff-a")
    page.locator("[data-testid=order-new]").click()
    page.locator("#order-patient-name").fill(NAME)
    page.locator("#order-patient-name-pinyin").fill(PINYIN)
    patient_id = "E2E-" + generate_uid()[-8:]
    page.locator("#order-patient-id").fill(patient_id)
    page.locator("#order-patient-sex").select_option("M")
    page.locator("#order-patient-birth-date").fill("1980-05-01")
    page.locator("#order-exam-type").select_option("CT_HEAD")
    page.locator("#order-priority").select_option("urgent")
    page.locator("#order-reason-for-procedure").fill("头痛三天，排除颅内出血")
    page.locator("[data-testid=order-submit]").click()
    accession_shown = page.locator("[data-testid=order-accession]")
    expect(accession_shown).to_be_visible()
    with hub.client("staff-a") as staff:
        orders = staff.get("/api/v1/orders", params={"limit": 1000}).json()
        (order,) = [o for o in orders if o["patient_id"] == patient_id]
        # A second order, only for the worklist answered while the hub is down.
        other = staff.post(
            "/api/v1/orders",
            json={
                "patient_name": "李^雷",
                "patient_name_pinyin": "Li^Lei",
                "patient_id": "E2E-OTHER",
                "patient_sex": "M",
                "patient_birth_date": "19700101",
                "exam_type": "DX_CHEST_PA",
                "priority": "routine",
                "reason_for_procedure": "体检",
            },
        )
        assert other.status_code == 201, other.text
    with hub.client("staff-b") as staff_b:  # clinic-b's own order: its gateway syncs
        own_b = staff_b.post(
            "/api/v1/orders",
            json={
                "patient_name": "赵^六",
                "patient_name_pinyin": "Zhao^Liu",
                "patient_id": "E2E-B",
                "patient_sex": "F",
                "patient_birth_date": "19900101",
                "exam_type": "DX_CHEST_PA",
                "priority": "routine",
                "reason_for_procedure": "体检",
            },
        )
        assert own_b.status_code == 201, own_b.text
    b_accession, b_uid = own_b.json()["accession_number"], own_b.json()["study_instance_uid"]
    other_accession, other_uid = (
        other.json()["accession_number"],
        other.json()["study_instance_uid"],
    )
    accession, uid = str(order["accession_number"]), str(order["study_instance_uid"])
    expect(accession_shown).to_have_text(accession)
    assert order["patient_name"] == PN
    row = page.locator(f"[data-testid=clinic-study-row][data-study-uid='{uid}']")
    expect(row).to_have_attribute("data-status", "ordered")
    shot(page, tmp_path, "1-ordered")

    # 2. The gateway syncs it; findscu -W gets it byte for byte in both character sets.
    wait_for(
        "orders in clinic-a's cache",
        lambda: {uid, other_uid} <= cached_studies(gw_a),
        30,
    )
    wait_for("clinic-b's order in its cache", lambda: b_uid in cached_studies(gw_b), 30)
    assert cached_studies(gw_b) == {b_uid}
    assert b_uid not in cached_studies(gw_a)
    with httpx.Client(
        base_url=hub.url,
        headers={"Authorization": f"Bearer {hub.gateway_tokens['clinic-a']}"},
        timeout=30,
    ) as as_gateway:
        feed = as_gateway.get("/api/v1/gateway/orders").json()["orders"]
    (feed_item,) = [item for item in feed if item["accession_number"] == accession]
    answers: dict[str, Dataset] = {}
    for calling, charset, codec in (
        ("UTF8MOD", "ISO_IR 192", "utf-8"),
        (GB_AE, "GB18030", "gb18030"),
    ):
        (answer,) = worklist(
            gw_a, tmp_path, calling, calling=calling, charset=charset, PatientID=patient_id
        )
        got = wire_elements(answer)  # before any element is decoded
        assert answer.SpecificCharacterSet == charset
        assert raw_bytes(answer, "PatientName") == PN.encode(codec)
        assert raw_bytes(
            answer, "ReasonForTheRequestedProcedure"
        ) == "头痛三天，排除颅内出血".encode(codec)
        assert answer.AccessionNumber == accession
        assert answer.StudyInstanceUID == uid
        assert answer.RequestedProcedurePriority == "HIGH"
        assert answer.ScheduledProcedureStepSequence[0].Modality == "CT"
        answers[charset] = answer
        # dcmtk's wlmscpfs, answering the hub's feed item from a worklist file in the same
        # character set, puts the same bytes on the wire.
        oracle = tmp_path / f"wlm-{calling}"
        write_part10(worklist_item(feed_item, charset), oracle / "WLM" / "order.wl")
        (oracle / "WLM" / "lockfile").touch()
        query = mwl_query(tmp_path / f"oracle-{calling}.dcm", charset, PatientID=patient_id)
        with wlmscpfs(oracle) as wlm_port:
            run = findscu(
                wlm_port, query, called_ae="WLM", calling_ae=calling, out=oracle / "answers"
            )
        assert run.returncode == 0, run.stdout + run.stderr
        (expected,) = [pydicom.dcmread(f) for f in sorted((oracle / "answers").glob("rsp*.dcm"))]
        want = wire_elements(expected)
        assert got.keys() == want.keys()
        for keyword in want:
            assert got[keyword] == want[keyword], keyword
    # The name by Chinese wildcard, too (any component group).
    (by_name,) = worklist(
        gw_a, tmp_path, "by-name", calling="UTF8MOD", charset="ISO_IR 192", PatientName="王*"
    )
    assert by_name.AccessionNumber == accession
    mwl = answers["ISO_IR 192"]
    assert str(mwl.PatientName) == PN

    # 3. MPPS IN PROGRESS: the portal shows "scanning".
    mpps_uid = generate_uid()
    with modality(gw_a.port) as scu:
        attrs = create_attributes(uid, accession=accession)
        attrs.SpecificCharacterSet = "ISO_IR 192"
        attrs.PatientName = PN
        attrs.PatientID = patient_id
        attrs.Modality = "CT"
        status, _ = scu.create(mpps_uid, attrs)
        assert status == 0x0000
    wait_for(
        "stage scanning",
        lambda: refreshed_status(page, row) == "scanning",
        15,
        0.5,
    )
    expect(row).to_have_attribute("data-status", "scanning")
    shot(page, tmp_path, "2-scanning")

    # 4. storescu sends the images, then MPPS COMPLETED: unread at once.
    files = images_from_answer(mwl, tmp_path / "images")
    sent = storescu(gw_a.port, files, called_ae="CLINIC_A", calling_ae="CT_ROOM1")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    sops = [
        (CT_IMAGE, str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)) for f in files
    ]
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    with modality(gw_a.port) as scu:
        status, _ = scu.set(mpps_uid, final_attributes({series_uid: sops}))
        assert status == 0x0000
    completed_at = time.monotonic()
    wait_for(
        "study unread at the hub", lambda: study_status(hub, uid) == "unread", UNREAD_WITHIN_SECONDS
    )
    took = time.monotonic() - completed_at
    assert took < UNREAD_WITHIN_SECONDS < STABILITY_SECONDS
    log = wait_for(
        "the gateway's forwarded line",
        lambda: forwarded_line(gw_a),
        10,
    )
    assert f"study {uid} forwarded (mpps): {N_IMAGES} instances" in log
    assert NAME not in log and PINYIN not in log  # no patient name in the gateway's log
    with hub.client("staff-a") as staff:
        (mine,) = [
            o
            for o in staff.get("/api/v1/orders", params={"limit": 1000}).json()
            if o["id"] == order["id"]
        ]
    assert mine["status"] == "completed"
    page.locator("#clinic-refresh").click()
    expect(row).to_have_attribute("data-status", "waiting")
    shot(page, tmp_path, "3-waiting")

    # 5. rad1 claims and signs; clinic-a's gateway holds the report.
    with hub.client("rad1") as rad:
        # The order's priority and clinical question reached the radiologist's worklist.
        listed = rad.get("/api/v1/worklist", params={"limit": 200}).json()["items"]
        (item,) = [i for i in listed if i["study_instance_uid"] == uid]
        assert item["priority"] == "urgent" and item["status"] == "unread"
        assert item["clinical_question"] == "头痛三天，排除颅内出血"
        signed = claim_and_sign(
            rad,
            hub.passwords["rad1"],
            uid,
            findings="颅内未见出血。",
            impression="头颅 CT 平扫未见异常。",
        )
    signed_at = time.monotonic()
    report_id = int(signed["id"])
    with hub.client("staff-a") as staff:
        hub_pdf = staff.get(f"/api/v1/reports/{report_id}/pdf")
    assert hub_pdf.status_code == 200 and hub_pdf.content.startswith(b"%PDF")

    def held() -> bool:
        store = ReportStore(gw_a.spool_dir, clean_tmp=False)
        try:
            return store.held(report_id) is not None
        finally:
            store.close()

    wait_for("report held by clinic-a's gateway", held, REPORT_WITHIN_SECONDS, 0.2)
    held_for = time.monotonic() - signed_at
    assert (gw_a.spool_dir / "reports" / f"{report_id}.pdf").read_bytes() == hub_pdf.content
    status_a = wait_for(
        "gateway status: held and confirmed",
        lambda: (
            (s := gateway_status(gw_a))["reports_held"] == 1 and s["reports_unconfirmed"] == 0 and s
        ),
        20,
        0.5,
    )
    assert status_a["reports_held"] == 1
    assert gateway_status(gw_b)["reports_held"] == 0

    # 6. staff-a downloads the PDF from the portal; the row is delivered.
    wait_for(
        "stage delivered",
        lambda: refreshed_status(page, row) == "delivered",
        15,
        0.5,
    )
    expect(row).to_have_attribute("data-status", "delivered")
    # The refreshes above may still be replacing the list: click in the settled one.
    expect(page.locator(".table-wrap")).not_to_have_attribute("aria-busy", "true")
    with page.expect_download() as download:
        row.locator("[data-testid=report-download]").click()
    assert Path(download.value.path()).read_bytes() == hub_pdf.content
    shot(page, tmp_path, "4-delivered")
    assert portal.problems() == []

    # 7. staff-b finds nothing of clinic-a at the hub.
    other_portal = open_page(hub.url)
    login(other_portal, hub, "staff-b")
    b_rows = other_portal.page.locator("[data-testid=clinic-study-row]")
    expect(b_rows).to_have_count(1)  # clinic-b's own order, nothing else
    expect(b_rows).to_contain_text("E2E-B")
    expect(other_portal.page.locator(f"[data-study-uid='{uid}']")).to_have_count(0)
    other_portal.page.fill("#clinic-search", NAME)
    expect(other_portal.page.locator("[data-testid=clinic-study-row]")).to_have_count(0)
    shot(other_portal.page, tmp_path, "5-staff-b-portal")
    with hub.client("staff-b") as staff_b:
        items = staff_b.get("/api/v1/clinic/studies", params={"limit": 200}).json()["items"]
        assert [i["study_instance_uid"] for i in items] == [b_uid]
        assert patient_id not in json.dumps(items, ensure_ascii=False)
        listed = staff_b.get("/api/v1/orders", params={"limit": 1000}).json()
        assert [o["study_instance_uid"] for o in listed] == [b_uid]
        asked = staff_b.get("/api/v1/orders", params={"clinic": "clinic-a"})
        assert uid not in asked.text and other_uid not in asked.text and NAME not in asked.text
        assert asked.status_code in (403, 404) or asked.json() == [], asked.text
        qido = staff_b.get("/dicomweb/studies", headers={"Accept": "application/dicom+json"})
        assert qido.status_code in (200, 204), qido.text
        assert qido.status_code == 204 or qido.json() == []
        qido = staff_b.get(
            "/dicomweb/studies",
            params={"StudyInstanceUID": uid},
            headers={"Accept": "application/dicom+json"},
        )
        assert qido.status_code == 204 or qido.json() == []
        assert staff_b.get(f"/api/v1/reports/{report_id}/pdf").status_code == 404
        assert staff_b.get(f"/api/v1/studies/{uid}").status_code == 404
    with hub.client("staff-a") as staff:  # the same QIDO-RS finds it for clinic-a
        qido = staff.get(
            "/dicomweb/studies",
            params={"StudyInstanceUID": uid},
            headers={"Accept": "application/dicom+json"},
        )
        assert qido.status_code == 200 and len(qido.json()) == 1
    assert other_portal.problems() == []

    # 8. The hub stops: clinic-a's gateway answers the worklist from its cache and serves the
    #    report on its LAN page.
    password_a, password_b = hub.passwords["staff-a"], hub.passwords["staff-b"]
    hub.stop()
    (cached,) = worklist(
        gw_a, tmp_path, "hub-down", calling=GB_AE, charset="GB18030", PatientID="E2E-OTHER"
    )
    assert cached.AccessionNumber == other_accession
    assert raw_bytes(cached, "PatientName") == "Li^Lei=李^雷".encode("gb18030")

    lan = open_page(f"http://127.0.0.1:{lan_a}")
    lan_sign_in(lan, "staff-a", password_a)
    lan_row = lan.page.locator(f'[data-testid="lan-report-row"][data-report-id="{report_id}"]')
    expect(lan_row).to_be_visible()
    expect(lan_row).to_contain_text(NAME)
    with lan.page.expect_download() as lan_download:
        lan_row.get_by_test_id("lan-download-pdf").click()
    assert Path(lan_download.value.path()).read_bytes() == hub_pdf.content
    shot(lan.page, tmp_path, "6-lan-page-hub-down")
    assert lan.problems() == []

    # 9. clinic-b's gateway: nothing of clinic-a in its worklist or on its LAN page.
    (only_b,) = worklist(gw_b, tmp_path, "b-all", calling="UTF8MOD", charset="ISO_IR 192")
    assert only_b.AccessionNumber == b_accession and only_b.StudyInstanceUID == b_uid
    assert (
        worklist(
            gw_b, tmp_path, "b-name", calling="UTF8MOD", charset="ISO_IR 192", PatientName="王*"
        )
        == []
    )
    lan_b_page = open_page(f"http://127.0.0.1:{lan_b}")
    lan_sign_in(lan_b_page, "staff-a", password_a)  # not staff of clinic-b
    expect(lan_b_page.page.get_by_test_id("lan-login-error")).to_be_visible()
    lan_sign_in(lan_b_page, "staff-b", password_b)
    expect(lan_b_page.page.get_by_test_id("lan-empty")).to_be_visible()
    expect(lan_b_page.page.get_by_test_id("lan-report-row")).to_have_count(0)
    cookies = {c["name"]: c["value"] for c in lan_b_page.context.cookies()}
    assert cookies  # signed in as staff-b
    for path in (f"/reports/{report_id}/pdf", f"/reports/{report_id}/pdf?download=1"):
        refused = httpx.get(f"http://127.0.0.1:{lan_b}{path}", cookies=cookies, timeout=10)
        assert refused.status_code == 404 and hub_pdf.content not in refused.content
    shot(lan_b_page.page, tmp_path, "7-lan-page-clinic-b")
    assert lan_b_page.problems() == []

    print(f"\nMPPS COMPLETED -> unread: {took:.2f} s; signed -> held at clinic-a: {held_for:.2f} s")
    print(f"screenshots: {tmp_path}")
