"""The viewer's fidelity and reading-room features in Debian chromium against a real hub.

- JPEG 2000 and JPEG-LS instances travel compressed, are decoded in the browser (WASM) and show
  exactly the pixels of the same image stored uncompressed (decoded by pydicom here), side by
  side at 1:1 with the same window;
- a length on an image with only Imager Pixel Spacing is labelled "at detector";
- an elliptical ROI on a CT gives mean and SD in HU, as the pixels give them; an angle in degrees
  as its three points give it;
- a prior study of the same patient (QIDO-RS by Patient ID) opens side by side and the two CT
  series scroll together; another patient's study is never listed;
- a frame that cannot be decoded shows a clear message in its viewport; the other images of the
  series still show.

Screenshots of each step are kept in the test's temporary directory (``compare-*.png``).
"""

import io
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pydicom
import pytest
from playwright.sync_api import Page, expect
from pydicom.encaps import encapsulate
from pydicom.pixels.processing import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from tests.conftest import SAMPLES
from tests.e2e.support import BUNDLED, ingest, login, make_instance
from tests.e2e.test_viewer import RENDERERS, VIEWPORT, check_renderer, use_renderer, wait_drawn
from tests.peers.browser import OpenPage
from tests.peers.hub import HubProcess, start_hub_process

pytestmark = pytest.mark.e2e

CELL = ".vp-cell:nth-child({n}) .vp-element"
DETECTOR_SPACING = 0.2

# Every pixel of a viewport's canvas (RGBA) compared with another's: how many differ, by how
# much at most, and how many are lit.
CANVAS_DIFF = """
([a, b]) => {
  const ca = document.querySelector(a + ' canvas');
  const cb = document.querySelector(b + ' canvas');
  if (!ca || !cb || ca.width !== cb.width || ca.height !== cb.height) return null;
  const da = ca.getContext('2d').getImageData(0, 0, ca.width, ca.height).data;
  const db = cb.getContext('2d').getImageData(0, 0, cb.width, cb.height).data;
  let max = 0, differ = 0, lit = 0, levels = new Set();
  for (let i = 0; i < da.length; i += 4) {
    const d = Math.max(
      Math.abs(da[i] - db[i]), Math.abs(da[i + 1] - db[i + 1]), Math.abs(da[i + 2] - db[i + 2]));
    if (d > 0) differ += 1;
    if (d > max) max = d;
    if (da[i] > 8) lit += 1;
    levels.add(da[i]);
  }
  const size = { width: ca.width, height: ca.height };
  return { max, differ, lit: lit / (da.length / 4), levels: levels.size, ...size };
}
"""


def _part10(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _uncompressed_copy(data: bytes, series: str, number: int) -> bytes:
    """The same image (pixels decoded by pydicom) stored as Explicit VR Little Endian."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.decompress()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SeriesInstanceUID = series
    ds.SeriesNumber = number
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return _part10(ds)


def _ct_slices(
    study: str, series: str, frame: str, z0: float, count: int, **attrs: object
) -> list[bytes]:
    return [
        make_instance(
            BUNDLED / "CT_small.dcm",
            study=study,
            series=series,
            SeriesNumber=1,
            InstanceNumber=n + 1,
            FrameOfReferenceUID=frame,
            ImagePositionPatient=[-158.135803, -179.035797, z0 + 5.0 * n],
            SliceLocation=z0 + 5.0 * n,
            **attrs,
        )
        for n in range(count)
    ]


def _corrupt_jpegls_series(study: str, series: str) -> list[bytes]:
    """Three JPEG-LS slices of one series; the middle one's codestream is garbage."""
    out = []
    for n in (1, 2, 3):
        ds = pydicom.dcmread(BUNDLED / "CT_small.dcm")
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = n
        ds.PatientName, ds.PatientID = "Broken^Frame", "C-3"
        ds.compress(JPEGLSLossless)
        if n == 2:
            garbage = b"\xff\xd8\xff\xf7" + bytes(range(256)) * 8
            ds.PixelData = encapsulate([garbage])
        out.append(_part10(ds))
    return out


@pytest.fixture(scope="module")
def compare_hub(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[HubProcess, dict[str, Any]]]:
    hub = start_hub_process(tmp_path_factory.mktemp("viewer-compare") / "hub")
    try:
        uids: dict[str, Any] = {}
        # Compressed and uncompressed copies of the same pixels, two series of one study each.
        j2k_study, j2k, j2k_raw = generate_uid(), generate_uid(), generate_uid()
        j2k_data = make_instance(
            BUNDLED / "RG3_J2KR.dcm", study=j2k_study, series=j2k, SeriesNumber=1
        )
        ingest(hub, "clinic-a", j2k_data, _uncompressed_copy(j2k_data, j2k_raw, 2))
        jls_study, jls, jls_raw = generate_uid(), generate_uid(), generate_uid()
        jls_data = make_instance(
            SAMPLES / "by-modality" / "CR" / "RG2_JLSL.dcm",
            study=jls_study,
            series=jls,
            SeriesNumber=1,
        )
        ingest(hub, "clinic-a", jls_data, _uncompressed_copy(jls_data, jls_raw, 2))
        uids.update(j2k_study=j2k_study, j2k=j2k, j2k_raw=j2k_raw)
        uids.update(jls_study=jls_study, jls=jls, jls_raw=jls_raw)

        # A projection image with Imager Pixel Spacing only.
        ds = pydicom.dcmread(BUNDLED / "CT_small.dcm")
        del ds.PixelSpacing
        ds.ImagerPixelSpacing = [DETECTOR_SPACING, DETECTOR_SPACING]
        ds.Modality = "DX"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image, for presentation
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        uids["detector"] = ingest(hub, "clinic-a", _part10(ds))

        # One patient, two CT studies a year apart (different Frames of Reference, the prior
        # 100 mm higher on the table); another patient's CT study.
        patient = {
            "PatientName": "张^三",
            "PatientID": "P-77",
            "SpecificCharacterSet": "ISO_IR 192",
        }
        current, current_series = generate_uid(), generate_uid()
        prior, prior_series = generate_uid(), generate_uid()
        other = generate_uid()
        ingest(
            hub,
            "clinic-a",
            *_ct_slices(
                current, current_series, generate_uid(), 0.0, 4, StudyDate="20260105", **patient
            ),
        )
        ingest(
            hub,
            "clinic-a",
            *_ct_slices(
                prior,
                prior_series,
                generate_uid(),
                100.0,
                4,
                StudyDate="20250105",
                StudyDescription="PRIOR CT",
                **patient,
            ),
        )
        ingest(
            hub,
            "clinic-a",
            *_ct_slices(
                other,
                generate_uid(),
                generate_uid(),
                0.0,
                2,
                StudyDate="20240105",
                PatientName="Other^One",
                PatientID="P-78",
            ),
        )
        # The same patient's study at clinic-b: a prior for rad1, outside staff-a's scope.
        elsewhere, elsewhere_series = generate_uid(), generate_uid()
        ingest(
            hub,
            "clinic-b",
            *_ct_slices(
                elsewhere,
                elsewhere_series,
                generate_uid(),
                0.0,
                2,
                StudyDate="20240601",
                StudyDescription="CLINIC B CT",
                **patient,
            ),
        )
        uids.update(current=current, current_series=current_series, prior=prior)
        uids.update(prior_series=prior_series, other=other)
        uids.update(elsewhere=elsewhere, elsewhere_series=elsewhere_series)

        broken_study, broken_series = generate_uid(), generate_uid()
        ingest(hub, "clinic-a", *_corrupt_jpegls_series(broken_study, broken_series))
        uids.update(broken=broken_study)
        yield hub, uids
    finally:
        hub.stop()


def shot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"compare-{name}.png"))


def open_study(page: Page, study: str, query: str = "") -> None:
    expect(page.locator("#worklist-table")).to_be_visible()
    page.goto(f"/#/study/{study}{query}")


@pytest.mark.parametrize("kind", ["j2k", "jls"])
def test_compressed_pixels_equal_the_uncompressed_copy(
    compare_hub: tuple[HubProcess, dict[str, Any]], open_page: OpenPage, tmp_path: Path, kind: str
) -> None:
    hub, uids = compare_hub
    bp = open_page(hub.url)
    page = bp.page
    frames: list[str] = []
    page.on(
        "request",
        lambda r: frames.append(r.headers.get("accept", "")) if "/frames/" in r.url else None,
    )
    login(bp, hub, "rad1")
    open_study(page, uids[f"{kind}_study"], f"?layout=1x2&series={uids[kind]}")
    compressed, raw = CELL.format(n=1), CELL.format(n=2)
    for selector in (compressed, raw):
        wait_drawn(page, selector)
    expect(page.locator(compressed)).to_have_attribute("data-series", uids[kind])
    expect(page.locator(raw)).to_have_attribute("data-series", uids[f"{kind}_raw"])
    # The compressed frame was asked for in its stored syntax (from the metadata's 0008,3002).
    syntax = "1.2.840.10008.1.2.4.90" if kind == "j2k" else "1.2.840.10008.1.2.4.80"
    assert any(f"transfer-syntax={syntax}" in a for a in frames), frames
    # Both at 1:1 (one image pixel per screen pixel) with the same linear window.
    for n in (1, 2):
        page.locator(".vp-cell").nth(n - 1).click()
        page.keyboard.press("o")
        page.fill("#window-center", "500")
        page.fill("#window-width", "1000")
        page.click("#window-form button[type=submit]")
    expect(page.locator(compressed)).to_have_attribute("data-window", "500,1000")
    expect(page.locator(raw)).to_have_attribute("data-window", "500,1000")
    page.wait_for_timeout(400)
    diff = page.evaluate(CANVAS_DIFF, [compressed, raw])
    assert diff is not None
    shot(page, tmp_path, f"{kind}-vs-uncompressed")
    assert diff["lit"] > 0.2 and diff["levels"] > 50, diff
    assert diff["max"] <= 1, diff  # display rounding at most
    assert bp.problems() == []


@pytest.mark.parametrize("renderer", RENDERERS)
def test_length_at_detector_ellipse_in_hu_and_angle(
    compare_hub: tuple[HubProcess, dict[str, Any]],
    open_page: OpenPage,
    tmp_path: Path,
    renderer: str,
) -> None:
    hub, uids = compare_hub
    bp = open_page(hub.url)
    use_renderer(bp, renderer)
    page = bp.page
    login(bp, hub, "rad1")
    open_study(page, uids["detector"])
    wait_drawn(page)
    check_renderer(page, renderer)
    box = page.locator(VIEWPORT).bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    page.click("[data-testid=tool-length]")
    page.mouse.move(x - 100, y - 40)
    page.mouse.down()
    page.mouse.move(x + 90, y + 60, steps=8)
    page.mouse.up()
    item = page.locator("[data-testid=measurements] li.measurement")
    expect(item).to_have_count(1)
    page.wait_for_timeout(300)
    assert item.get_attribute("data-calibration") == "detector"
    expect(item).to_contain_text("探测器平面")
    (i1, j1), (i2, j2) = _points(item.get_attribute("data-points"))
    expected = math.hypot(i2 - i1, j2 - j1) * DETECTOR_SPACING
    value = float(item.get_attribute("data-value") or "nan")
    assert abs(value - expected) <= 0.01 * expected, (value, expected)
    shot(page, tmp_path, "1-at-detector")

    # The CT: an ellipse's mean and SD in HU against the pixels (pydicom, modality LUT).
    page.goto(f"/#/study/{uids['current']}")
    expect(page.locator(VIEWPORT)).to_have_attribute("data-series", uids["current_series"])
    wait_drawn(page)
    expect(page.locator("[data-testid=measurements] li.measurement")).to_have_count(0)
    page.click("[data-testid=tool-ellipse]")
    page.mouse.move(x - 60, y - 50)  # within the image (the ROI's box must be)
    page.mouse.down()
    page.mouse.move(x + 50, y + 40, steps=8)
    page.mouse.up()
    roi = page.locator("[data-testid=measurements] li.measurement[data-tool=EllipticalROI]")
    expect(roi).to_have_count(1)
    page.wait_for_timeout(300)
    assert roi.get_attribute("data-modality-unit") == "HU"
    expect(roi).to_contain_text("HU")
    mean = float(roi.get_attribute("data-mean") or "nan")
    sd = float(roi.get_attribute("data-sd") or "nan")
    ds = pydicom.dcmread(BUNDLED / "CT_small.dcm")
    hu = apply_modality_lut(ds.pixel_array, ds).astype(float)
    points = _points(roi.get_attribute("data-points"))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    a, b = (max(xs) - min(xs)) / 2, (max(ys) - min(ys)) / 2
    rows, cols = np.mgrid[0 : hu.shape[0], 0 : hu.shape[1]]
    inside = ((cols - cx) / a) ** 2 + ((rows - cy) / b) ** 2 <= 1
    want_mean, want_sd = float(hu[inside].mean()), float(hu[inside].std())
    assert abs(mean - want_mean) <= max(2.0, 0.02 * want_sd), (mean, want_mean)
    assert abs(sd - want_sd) <= 0.05 * want_sd, (sd, want_sd)
    shot(page, tmp_path, "2-ellipse-hu")

    # Angle: press-drag the first arm, click the third point.
    page.click("[data-testid=tool-angle]")
    page.mouse.move(x - 120, y + 80)
    page.mouse.down()
    page.mouse.move(x, y, steps=6)
    page.mouse.up()
    page.mouse.move(x + 120, y + 60, steps=6)
    page.mouse.click(x + 120, y + 60)
    angle = page.locator("[data-testid=measurements] li.measurement[data-tool=Angle]")
    expect(angle).to_have_count(1)
    page.wait_for_timeout(300)
    p1, p2, p3 = _points(angle.get_attribute("data-points"))[:3]
    v1, v2 = (p1[0] - p2[0], p1[1] - p2[1]), (p3[0] - p2[0], p3[1] - p2[1])
    want = math.degrees(
        math.acos((v1[0] * v2[0] + v1[1] * v2[1]) / (math.hypot(*v1) * math.hypot(*v2)))
    )
    got = float(angle.get_attribute("data-value") or "nan")
    assert abs(got - want) <= 1.0, (got, want)
    assert angle.get_attribute("data-unit") == "°"
    shot(page, tmp_path, "3-angle")
    assert bp.problems() == []


def _points(text: str | None) -> list[tuple[float, float]]:
    return [(float(p.split(",")[0]), float(p.split(",")[1])) for p in (text or "").split(";") if p]


def test_prior_opens_side_by_side_and_scrolls_in_sync(
    compare_hub: tuple[HubProcess, dict[str, Any]], open_page: OpenPage, tmp_path: Path
) -> None:
    hub, uids = compare_hub
    bp = open_page(hub.url)
    page = bp.page
    login(bp, hub, "rad1")
    open_study(page, uids["current"])
    wait_drawn(page)
    # This patient's two other studies (newest first); the other patient's study is not listed.
    listed = page.locator("[data-testid=prior-study]")
    expect(listed).to_have_count(2)
    assert [listed.nth(i).get_attribute("data-study-uid") for i in (0, 1)] == [
        uids["prior"],
        uids["elsewhere"],
    ]
    priors = listed.nth(0)
    expect(priors).to_contain_text("PRIOR CT")
    priors.locator("[data-testid=prior-open]").click()
    left, right = CELL.format(n=1), CELL.format(n=2)
    expect(page.locator(".vp-cell")).to_have_count(2)
    expect(page.locator(right)).to_have_attribute("data-series", uids["prior_series"])
    wait_drawn(page, right)
    expect(page.locator(".vp-cell:nth-child(2) .vp-tr")).to_contain_text("既往检查")
    expect(page.locator(".vp-cell:nth-child(2) .vp-tl")).to_contain_text("张三")
    expect(page.locator("[data-testid=sync-scroll]")).to_have_attribute("aria-pressed", "true")
    # The current study stays the active viewport; scrolling it moves the prior along.
    page.locator(".vp-cell").nth(0).click()
    expect(page.locator(left)).to_have_attribute("data-testid", "viewport")
    for index in ("2", "3"):
        page.keyboard.press("ArrowDown")
        expect(page.locator(left)).to_have_attribute("data-image-index", index)
        expect(page.locator(right)).to_have_attribute("data-image-index", index)
    wait_drawn(page, right)
    shot(page, tmp_path, "4-prior-side-by-side")

    # Unlinked, the prior stays where it is.
    page.click("[data-testid=sync-scroll]")
    expect(page.locator("[data-testid=sync-scroll]")).to_have_attribute("aria-pressed", "false")
    page.keyboard.press("Home")
    expect(page.locator(left)).to_have_attribute("data-image-index", "1")
    page.wait_for_timeout(300)
    expect(page.locator(right)).to_have_attribute("data-image-index", "3")
    # Linked again at the shown slices (1 against 3): they keep that offset.
    page.click("[data-testid=sync-scroll]")
    page.locator(".vp-cell").nth(0).click()
    page.keyboard.press("ArrowDown")
    expect(page.locator(left)).to_have_attribute("data-image-index", "2")
    expect(page.locator(right)).to_have_attribute("data-image-index", "4")
    assert bp.problems() == []


def test_a_frame_that_fails_to_decode_says_so_and_the_rest_shows(
    compare_hub: tuple[HubProcess, dict[str, Any]], open_page: OpenPage, tmp_path: Path
) -> None:
    hub, uids = compare_hub
    bp = open_page(hub.url)
    page = bp.page
    login(bp, hub, "rad1")
    open_study(page, uids["broken"])
    wait_drawn(page)
    viewport = page.locator(VIEWPORT)
    expect(viewport).to_have_attribute("data-image-index", "1")
    page.keyboard.press("ArrowDown")
    expect(viewport).to_have_attribute("data-image-index", "2")
    error = page.locator(".vp-cell.active .vp-message .message-error")
    expect(error).to_contain_text("此图像无法解码或显示")
    shot(page, tmp_path, "5-broken-frame")
    page.keyboard.press("ArrowDown")
    expect(viewport).to_have_attribute("data-image-index", "3")
    wait_drawn(page)
    expect(error).to_have_count(0)
    assert bp.dialogs == [] and bp.page_errors == []


def test_the_layout_and_an_opened_prior_survive_a_reload_and_a_shared_link(
    compare_hub: tuple[HubProcess, dict[str, Any]], open_page: OpenPage, tmp_path: Path
) -> None:
    hub, uids = compare_hub
    bp = open_page(hub.url)
    page = bp.page
    login(bp, hub, "rad1")
    open_study(page, uids["current"])
    wait_drawn(page)
    page.locator(
        f"[data-testid=prior-study][data-study-uid='{uids['prior']}'] [data-testid=prior-open]"
    ).click()
    left, right = CELL.format(n=1), CELL.format(n=2)
    expect(page.locator(right)).to_have_attribute("data-series", uids["prior_series"])
    wait_drawn(page, right)
    # The prior's viewport made active: the URL names the layout, each viewport's series (the
    # prior's with its study), the active viewport and the listed prior.
    page.locator(".vp-cell").nth(1).click()
    expect(page.locator(right)).to_have_attribute("data-testid", "viewport")
    entry = f"{uids['prior']}/{uids['prior_series']}"
    expect(page).to_have_url(re.compile(r"active=2"))
    url = page.url
    query = parse_qs(urlsplit(url).fragment.split("?", 1)[1])
    assert query["layout"] == ["1x2"], query
    assert query["vp"] == [uids["current_series"], entry], query
    assert query["prior"] == [uids["prior"]], query

    page.reload()
    expect(page.locator(".vp-cell")).to_have_count(2)
    expect(page.locator(left)).to_have_attribute("data-series", uids["current_series"])
    expect(page.locator(right)).to_have_attribute("data-series", uids["prior_series"])
    wait_drawn(page, left)
    wait_drawn(page, right)
    expect(page.locator(right)).to_have_attribute("data-testid", "viewport")
    expect(page.locator(".vp-cell:nth-child(2) .vp-tr")).to_contain_text("既往检查")
    # The prior's series are listed under it again.
    listed = page.locator(f"[data-testid=prior-study][data-study-uid='{uids['prior']}']")
    expect(listed.locator(".series-item")).to_have_count(1)
    shot(page, tmp_path, "6-prior-after-reload")
    assert bp.problems() == []

    # The same link for staff-a (clinic-a): both studies are theirs, so it shows the same.
    staff = open_page(hub.url)
    login(staff, hub, "staff-a")
    expect(staff.page.locator("#clinic-studies")).to_be_visible()
    staff.page.goto(url)
    expect(staff.page.locator(right)).to_have_attribute("data-series", uids["prior_series"])
    wait_drawn(staff.page, right)

    # A link naming the same patient's clinic-b study: outside staff-a's scope, so its viewport
    # says "not found" (nothing of that study is asked for) and the current study shows.
    asked: list[str] = []
    staff.page.on("request", lambda r: asked.append(r.url) if "/dicomweb/" in r.url else None)
    outside = f"{uids['elsewhere']}/{uids['elsewhere_series']}"
    staff.page.goto(
        f"/#/study/{uids['current']}?layout=1x2&vp={uids['current_series']}&vp={outside}"
        f"&prior={uids['elsewhere']}"
    )
    message = staff.page.locator(".vp-cell:nth-child(2) .vp-message .message-error")
    expect(message).to_contain_text("未找到此序列")
    wait_drawn(staff.page, left)
    expect(staff.page.locator(left)).to_have_attribute("data-series", uids["current_series"])
    expect(staff.page.locator("[data-testid=prior-study]")).to_have_count(1)
    assert not any(uids["elsewhere"] in u for u in asked), asked
    # The URL no longer names it.
    expect(staff.page).not_to_have_url(re.compile(re.escape(uids["elsewhere"])))
    shot(staff.page, tmp_path, "7-prior-out-of-scope")

    # Another patient's study, a series of no study and hostile text: "not found" each, the
    # rest shows.
    staff.page.goto(
        f"/#/study/{uids['current']}?layout=2x2&vp=-&vp={uids['other']}/1.2.3"
        f"&vp=9.9.9&vp=%3Cimg%20src%3Dx%3E&active=7"
    )
    for n in (2, 3, 4):
        expect(
            staff.page.locator(f".vp-cell:nth-child({n}) .vp-message .message-error")
        ).to_contain_text("未找到此序列")
    expect(staff.page.locator(".vp-cell:nth-child(1) .vp-message")).to_contain_text(
        "将左侧序列拖到此处"
    )
    assert staff.page.locator(".vp-cell img").count() == 0
    # A series dragged (clicked) into the empty viewport still shows.
    staff.page.locator(".vp-cell").nth(0).click()
    staff.page.locator(f".series-item[data-uid='{uids['current_series']}']").click()
    wait_drawn(staff.page, left)
    assert staff.problems() == []
