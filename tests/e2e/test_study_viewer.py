"""The study page (#/study/<uid>) in Debian chromium over the hub's real DICOMweb endpoints:
header, claim and timeline, series thumbnails from WADO-RS /thumbnail, the Cornerstone3D viewer
(frames from WADO-RS, decoded in the browser): window presets, next/previous image, frames, the
position kept in the URL. Tools and pixels are checked in test_viewer.py."""

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Request, expect
from pydicom.uid import generate_uid

from tests.conftest import SAMPLES
from tests.e2e.support import BUNDLED, ingest, login, make_instance
from tests.peers.browser import BrowserPage, OpenPage
from tests.peers.hub import HubProcess, start_hub_process

pytestmark = pytest.mark.e2e

PATIENT = {
    "SpecificCharacterSet": "ISO_IR 192",
    "PatientName": "赵^建国",
    "PatientID": "CT-7",
    "PatientSex": "M",
    "PatientBirthDate": "19580301",
}
HOSTILE_NAME = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def viewer_hub(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[HubProcess, dict[str, str]]]:
    # A short claim lease, so the page's heartbeat (a third of the lease) shows within seconds.
    hub = start_hub_process(
        tmp_path_factory.mktemp("viewer") / "hub",
        extra_env={"IMAGING_HUB_CLAIM_LEASE_SECONDS": "15"},
    )
    try:
        study, ct_series, mr_series = generate_uid(), generate_uid(), generate_uid()
        ct = [
            make_instance(
                BUNDLED / "CT_small.dcm",
                study=study,
                series=ct_series,
                SeriesNumber=1,
                InstanceNumber=n,
                StudyDescription="胸部 CT 平扫",
                **PATIENT,
            )
            for n in (2, 1)
        ]
        # Enhanced MR with 10 frames (multi-frame) as a second series of the same study.
        mr = make_instance(
            SAMPLES / "by-modality" / "MR" / "emri_small.dcm",
            study=study,
            series=mr_series,
            SeriesNumber=2,
            **PATIENT,
        )
        ingest(hub, "clinic-a", *ct, mr)
        hostile = ingest(
            hub,
            "clinic-a",
            make_instance(
                SAMPLES / "by-modality" / "CR" / "RG2_JPLY_fixed.dcm",
                SpecificCharacterSet="ISO_IR 192",
                PatientName=HOSTILE_NAME,
            ),
        )
        yield hub, {"study": study, "ct": ct_series, "mr": mr_series, "hostile": hostile}
    finally:
        hub.stop()


VIEWPORT = "[data-testid=viewport]"


def image_drawn(bp: BrowserPage, selector: str = VIEWPORT) -> None:
    """Until the viewport shows an image of its own series on a sized canvas (never blanked)."""
    bp.page.wait_for_function(
        """(selector) => {
            const el = document.querySelector(selector);
            const c = el && el.querySelector('canvas');
            return el && c && c.width > 0 && el.dataset.sop && !el.classList.contains('vp-blank');
        }""",
        arg=selector,
    )


def test_study_page_series_images_windows_and_frames(
    viewer_hub: tuple[HubProcess, dict[str, str]], open_page: OpenPage
) -> None:
    hub, uids = viewer_hub
    bp = open_page(hub.url)
    page = bp.page
    requests: list[Request] = []
    page.on("request", lambda r: requests.append(r) if "/dicomweb/" in r.url else None)
    login(bp, hub, "rad1")
    page.locator("#worklist-table a.patient-link", has_text="赵建国").click()
    expect(page).to_have_url(re.compile(r"#/study/" + re.escape(uids["study"]) + "$"))
    expect(page.locator("#study-patient")).to_have_text("赵建国")
    expect(page.locator("#study-status")).to_have_text("待阅片")
    expect(page.locator(".study-facts")).to_contain_text("CT-7")
    expect(page.locator(".study-facts")).to_contain_text("A镇卫生院")
    expect(page.locator("#study-timeline li[data-kind=complete]")).to_have_count(1)
    expect(page.locator("#study-description")).to_have_text("胸部 CT 平扫")
    expect(page.locator("#series-list .series-item")).to_have_count(2)
    expect(page.locator("#series-list .series-item").first).to_contain_text("CT")
    expect(page.locator("#series-list .series-item").nth(1)).to_contain_text("MR")
    expect(page.locator("#series-list .thumb").first).to_have_attribute("src", re.compile("^blob:"))
    page.wait_for_function(
        "[...document.querySelectorAll('#series-list .thumb')].every(i => i.naturalWidth > 0)"
    )

    # The first CT image (by Instance Number), drawn by the viewer from WADO-RS frames.
    image = page.locator(VIEWPORT)
    image_drawn(bp)
    expect(page.locator("#viewer-position")).to_have_text("图像 1 / 2")
    expect(image).to_have_attribute("data-image-index", "1")
    first_sop = image.get_attribute("data-sop")
    assert any(f"/instances/{first_sop}/frames/1" in r.url for r in requests)
    assert not any("/rendered" in r.url for r in requests)
    # Thumbnails are asked for after the first image's frame (they do not compete with it).
    urls = [r.url for r in requests]
    first_frame = next(i for i, u in enumerate(urls) if "/frames/" in u)
    first_thumb = next(i for i, u in enumerate(urls) if u.endswith("/thumbnail"))
    assert first_frame < first_thumb, urls[: first_thumb + 1]

    page.click("button.preset[data-preset=lung]")
    expect(image).to_have_attribute("data-window", "-600,1500")
    expect(page.locator("button.preset[data-preset=lung]")).to_have_attribute(
        "aria-pressed", "true"
    )
    # Claim from the study page; the page keeps the claim alive with heartbeats.
    page.click("#study-claim")
    expect(page.locator("#study-status")).to_have_text("阅片中")
    expect(page.locator("#claim-note")).to_contain_text("您正在阅读此检查")
    expect(page.locator("#study-timeline li[data-kind=claimed]")).to_contain_text("rad1")
    with page.expect_request(lambda r: r.url.endswith("/heartbeat"), timeout=15_000) as beat:
        pass
    assert beat.value.method == "POST"
    assert beat.value.headers.get("x-csrf-token")
    expect(page.locator("#study-status")).to_have_text("阅片中")
    assert not page.locator("#claim-box .message-error").count()

    page.fill("#window-center", "40")
    page.fill("#window-width", "0")
    page.click("#window-form button[type=submit]")
    expect(page.locator("#viewer-status .message-error")).to_contain_text("窗宽")
    page.fill("#window-width", "350")
    page.click("#window-form button[type=submit]")
    expect(image).to_have_attribute("data-window", "40,350")

    page.click("#next-image")
    expect(page.locator("#viewer-position")).to_have_text("图像 2 / 2")
    expect(image).not_to_have_attribute("data-sop", first_sop or "")
    expect(image).to_have_attribute("data-window", "40,350")  # the window stays
    expect(page.locator("#next-image")).to_be_disabled()
    page.keyboard.press("ArrowLeft")
    expect(image).to_have_attribute("data-sop", first_sop or "")

    # The multi-frame MR: frames by keyboard, slider and mouse wheel.
    page.locator("#series-list .series-item").nth(1).click()
    expect(image).to_have_attribute("data-series", uids["mr"])
    image_drawn(bp)
    expect(page.locator("#viewer-frame")).to_have_text("帧 1 / 10")
    expect(page.locator("button.preset[data-preset=lung]")).to_have_count(0)  # HU presets: CT only
    expect(image).to_have_attribute("data-frame", "1")
    page.keyboard.press("ArrowDown")
    expect(page.locator("#viewer-frame")).to_have_text("帧 2 / 10")
    expect(image).to_have_attribute("data-frame", "2")
    page.locator(VIEWPORT).hover()
    page.mouse.wheel(0, 120)
    expect(image).to_have_attribute("data-frame", "3")
    page.locator("#image-slider").fill("10")
    expect(image).to_have_attribute("data-frame", "10")
    image_drawn(bp)
    frames = [r.url for r in requests if r.url.endswith("/frames/10")]
    assert frames and uids["mr"] in frames[0]

    # The position is kept in the URL: a language switch or a reload comes back to it.
    expect(page).to_have_url(re.compile(r"frame=10"))
    page.click("#lang-switch")
    expect(page.locator("#viewer-frame")).to_have_text("Frame 10 / 10")
    expect(page.locator("#series-list .series-item").first).to_contain_text(
        "Series 1 · CT · 2 image(s)"
    )
    page.locator("#series-list .series-item").first.click()
    page.click("#study-release")
    expect(page.locator("#study-status")).to_have_text("Unread")
    expect(page.locator("#study-timeline li[data-kind=released]")).to_have_count(1)
    page.click("button.preset[data-preset=bone]")
    expect(image).to_have_attribute("data-window", "400,1800")
    expect(page).to_have_url(re.compile(r"preset=bone"))
    page.reload()
    image_drawn(bp)
    expect(page.locator("#viewer-position")).to_have_text("Image 1 / 2")
    expect(page.locator("button.preset[data-preset=bone]")).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(image).to_have_attribute("data-window", "400,1800")
    assert bp.problems() == []


def test_hostile_name_on_study_page_and_other_clinic_sees_nothing(
    viewer_hub: tuple[HubProcess, dict[str, str]], open_page: OpenPage
) -> None:
    hub, uids = viewer_hub
    bp = open_page(hub.url)
    page = bp.page
    login(bp, hub, "rad1")
    expect(page.locator("#worklist-table tbody tr")).to_have_count(2)
    page.goto(f"/#/study/{uids['hostile']}")
    expect(page.locator("#study-patient")).to_have_attribute("title", HOSTILE_NAME)
    image_drawn(bp)
    expect(page.locator(".vp-cell.active .vp-tl")).to_contain_text("onerror")
    assert page.locator(".vp-cell img").count() == 0
    assert page.locator(".study-head img").count() == 0
    assert page.evaluate("window.__xss") is None
    assert bp.dialogs == [] and bp.problems() == []

    # Clinic staff: their own clinic's studies, newest first, and the same study page.
    staff = open_page(hub.url)
    login(staff, hub, "staff-a")
    names = staff.page.locator("#clinic-studies td.col-patient a")
    expect(names).to_have_count(2)
    expect(staff.page.locator("#clinic-studies tbody tr", has_text="赵建国")).to_contain_text(
        "CT, MR"
    )
    staff.page.fill("#clinic-search", "建国")
    expect(names).to_have_text(["赵建国"])
    names.first.click()
    expect(staff.page.locator("#study-patient")).to_have_text("赵建国")
    image_drawn(staff)
    assert staff.problems() == []

    # A clinic-b account cannot find a clinic-a study, even with its UID.
    other = open_page(hub.url)
    login(other, hub, "staff-b")
    expect(other.page.locator("#clinic-studies tbody tr")).to_have_count(0)
    expect(other.page.locator(".clinic-page .empty")).to_have_text("还没有本院的检查。")
    other.page.goto(f"/#/study/{uids['study']}")
    expect(other.page.locator("#app .message-error")).to_have_text("未找到此检查，或您无权查看。")
    assert other.page.locator(VIEWPORT).count() == 0
    assert other.problems() == []


def test_worklist_refreshes_by_itself(
    viewer_hub: tuple[HubProcess, dict[str, str]], open_page: OpenPage
) -> None:
    """Runs last in this module: it adds a study. The page's clock is driven by the test."""
    hub, _ = viewer_hub
    bp = open_page(hub.url)
    page = bp.page
    page.clock.install()
    login(bp, hub, "rad2")
    rows = page.locator("#worklist-table tbody tr")
    expect(rows).to_have_count(2)
    ingest(
        hub,
        "clinic-b",
        make_instance(
            SAMPLES / "by-modality" / "MR" / "MR_small.dcm",
            SpecificCharacterSet="ISO_IR 192",
            PatientName="孙^丽",
        ),
    )
    page.clock.fast_forward(5_000)
    expect(rows).to_have_count(2)  # not before the refresh interval
    page.clock.fast_forward(11_000)
    expect(rows).to_have_count(3)
    expect(page.locator("#worklist-table td.col-patient", has_text="孙丽")).to_have_count(1)
    assert bp.problems() == []
