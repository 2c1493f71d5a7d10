"""The diagnostic viewer (Cornerstone3D bundle, viewer_static/viewer/) in Debian chromium against a
real hub: frames from WADO-RS decoded in the browser, drawn on the viewport's canvas.

Checked through the stable test hooks (``viewport`` with ``data-image-index``/``data-frame``,
``tool-*``, ``measurements``) and the canvas pixels themselves; screenshots of each step are kept
in the test's temporary directory (``viewer-*.png``).
"""

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect
from pydicom.uid import generate_uid

from tests.conftest import SAMPLES
from tests.e2e.support import BUNDLED, ingest, login, make_instance
from tests.peers.browser import BrowserPage, OpenPage
from tests.peers.hub import HubProcess, start_hub_process

pytestmark = pytest.mark.e2e

HOSTILE_NAME = "<img src=x onerror=alert(1)>"
VIEWPORT = "[data-testid=viewport]"
CT_SPACING = 0.661468  # PixelSpacing of CT_small.dcm (row and column)

# The active viewport's canvas: a 48x48 grid of grey levels (red channel), the mean and the share
# of pixels that are not black.
CANVAS_SAMPLE = """
(selector) => {
  const canvas = document.querySelector(selector + ' canvas');
  if (!canvas || !canvas.width || !canvas.height) return null;
  const ctx = canvas.getContext('2d');
  const { width, height } = canvas;
  const data = ctx.getImageData(0, 0, width, height).data;
  const grid = [];
  for (let gy = 0; gy < 48; gy++) {
    for (let gx = 0; gx < 48; gx++) {
      const x = Math.floor(((gx + 0.5) * width) / 48);
      const y = Math.floor(((gy + 0.5) * height) / 48);
      grid.push(data[(y * width + x) * 4]);
    }
  }
  let sum = 0, lit = 0;
  for (let i = 0; i < data.length; i += 4) {
    sum += data[i];
    if (data[i] > 8 || data[i + 1] > 8 || data[i + 2] > 8) lit += 1;
  }
  return { grid, mean: sum / (data.length / 4), lit: lit / (data.length / 4), width, height };
}
"""


@pytest.fixture(scope="module")
def viewer_hub(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[HubProcess, dict[str, str]]]:
    hub = start_hub_process(tmp_path_factory.mktemp("viewer3d") / "hub")
    try:
        study, ct_series, mr_series = generate_uid(), generate_uid(), generate_uid()
        patient = {
            "SpecificCharacterSet": "ISO_IR 192",
            "PatientName": "钱^学森",
            "PatientID": "V-1",
        }
        ct = [
            make_instance(
                BUNDLED / "CT_small.dcm",
                study=study,
                series=ct_series,
                SeriesNumber=1,
                InstanceNumber=n,
                **patient,
            )
            for n in (3, 1, 2)
        ]
        mr = make_instance(
            SAMPLES / "by-modality" / "MR" / "emri_small.dcm",
            study=study,
            series=mr_series,
            SeriesNumber=2,
            **patient,
        )
        # Ingested first: the oldest unread study, so "take next" opens it.
        ingest(hub, "clinic-a", *ct, mr)

        # The same pixels as MONOCHROME2 and as MONOCHROME1, two series of one study.
        mono, mono2, mono1 = generate_uid(), generate_uid(), generate_uid()
        window = {"WindowCenter": 100, "WindowWidth": 600}
        ingest(
            hub,
            "clinic-a",
            make_instance(
                BUNDLED / "CT_small.dcm",
                study=mono,
                series=mono2,
                SeriesNumber=1,
                PhotometricInterpretation="MONOCHROME2",
                PatientName="Mono^Two",
                **window,
            ),
            make_instance(
                BUNDLED / "CT_small.dcm",
                study=mono,
                series=mono1,
                SeriesNumber=2,
                PhotometricInterpretation="MONOCHROME1",
                PatientName="Mono^Two",
                **window,
            ),
        )
        j2k = ingest(hub, "clinic-a", make_instance(BUNDLED / "RG3_J2KR.dcm"))
        hostile = ingest(
            hub,
            "clinic-a",
            make_instance(
                BUNDLED / "CT_small.dcm",
                SpecificCharacterSet="ISO_IR 192",
                PatientName=HOSTILE_NAME,
                PatientID=HOSTILE_NAME,
                StudyDescription=HOSTILE_NAME,
                SeriesDescription=HOSTILE_NAME,
            ),
        )
        yield (
            hub,
            {
                "study": study,
                "ct": ct_series,
                "mr": mr_series,
                "mono": mono,
                "mono2": mono2,
                "mono1": mono1,
                "hostile": hostile,
                "j2k": j2k,
            },
        )
    finally:
        hub.stop()


def canvas(page: Page, selector: str = VIEWPORT) -> dict[str, Any]:
    sample: dict[str, Any] | None = page.evaluate(CANVAS_SAMPLE, selector)
    assert sample is not None, f"no canvas under {selector}"
    return sample


def wait_drawn(page: Page, selector: str = VIEWPORT) -> None:
    """Until the viewport shows an image of its own series (not blanked) on a sized canvas."""
    page.wait_for_function(
        """(selector) => {
            const el = document.querySelector(selector);
            const c = el && el.querySelector('canvas');
            return el && c && c.width > 0 && el.dataset.imageIndex
                && !el.classList.contains('vp-blank');
        }""",
        arg=selector,
    )
    page.wait_for_timeout(200)  # let the render loop draw the last change


def differs(a: dict[str, Any], b: dict[str, Any]) -> int:
    return sum(1 for x, y in zip(a["grid"], b["grid"], strict=True) if abs(x - y) > 4)


# How the viewer draws (docs/browser-app.md): "auto" is what ships (WebGL on a GPU, Cornerstone's
# CPU path where WebGL is a software rasteriser, as in this headless chromium); "gpu" forces
# WebGL (what a workstation with a GPU runs), so both paths stay tested.
RENDERERS = ["auto", "gpu"]


def use_renderer(bp: BrowserPage, renderer: str) -> None:
    """Force the viewer's drawing path for this browser context (before the app loads)."""
    if renderer != "auto":
        bp.context.add_init_script(
            f"localStorage.setItem('imaging-hub.viewer.renderer', '{renderer}')"
        )


def check_renderer(page: Page, renderer: str) -> None:
    """The viewer draws on the path asked for (auto: CPU exactly when WebGL is software)."""
    grid = page.locator("#viewer-grid")
    webgl = grid.get_attribute("data-webgl") or ""
    software = re.search(r"swiftshader|llvmpipe|softpipe|software", webgl, re.I) is not None
    want = "gpu" if renderer == "gpu" or (renderer == "auto" and not software) else "cpu"
    expect(grid).to_have_attribute("data-renderer", want)


def centre(page: Page, selector: str = VIEWPORT) -> tuple[float, float]:
    box = page.locator(selector).bounding_box()
    assert box is not None
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def shot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"viewer-{name}.png"))


@pytest.mark.parametrize("renderer", RENDERERS)
def test_read_a_case_window_zoom_scroll_and_measure(
    viewer_hub: tuple[HubProcess, dict[str, str]],
    open_page: OpenPage,
    tmp_path: Path,
    renderer: str,
) -> None:
    hub, uids = viewer_hub
    bp = open_page(hub.url)
    use_renderer(bp, renderer)
    page = bp.page
    login(bp, hub, "rad1")
    if renderer == "auto":
        page.locator("[data-testid=worklist-next], #next-study").first.click()
    else:  # the case is rad1's already (taken in the first run): opened from its link
        expect(page.locator("#worklist-table")).to_be_visible()
        page.goto(f"/#/study/{uids['study']}")
    expect(page).to_have_url(f"{hub.url}/#/study/{uids['study']}")
    expect(page.locator("[data-testid=report-pane-slot]")).to_have_count(1)
    viewport = page.locator(VIEWPORT)
    expect(viewport).to_have_count(1)
    wait_drawn(page)
    check_renderer(page, renderer)
    # The CT series in Instance Number order; the image is drawn (non-blank pixels).
    expect(viewport).to_have_attribute("data-image-index", "1")
    expect(viewport).to_have_attribute("data-frame", "1")
    first = canvas(page)
    assert first["lit"] > 0.05, first
    assert len(set(first["grid"])) > 10  # an image, not a flat fill
    expect(page.locator(".vp-cell.active .vp-tl")).to_contain_text("钱学森")
    shot(page, tmp_path, "1-first-image")

    # Window/level: a left drag (the default tool) changes the pixels and the window.
    window_before = viewport.get_attribute("data-window")
    x, y = centre(page)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y + 40, steps=6)
    page.mouse.up()
    expect(viewport).not_to_have_attribute("data-window", window_before or "")
    page.wait_for_timeout(200)
    windowed = canvas(page)
    assert differs(first, windowed) > 50
    shot(page, tmp_path, "2-window-drag")

    # Zoom: Ctrl+wheel changes the pixels and the zoom in the overlay.
    zoom_text = page.locator(".vp-cell.active .vp-br").inner_text()
    page.keyboard.down("Control")
    page.mouse.wheel(0, -300)
    page.keyboard.up("Control")
    page.wait_for_timeout(300)
    zoomed = canvas(page)
    assert differs(windowed, zoomed) > 50
    assert page.locator(".vp-cell.active .vp-br").inner_text() != zoom_text
    shot(page, tmp_path, "3-zoom")
    page.click("[data-testid=tool-zoom]")
    expect(page.locator("[data-testid=tool-zoom]")).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("f")  # fit again
    page.click("[data-testid=tool-pan]")
    expect(page.locator("[data-testid=tool-pan]")).to_have_attribute("aria-pressed", "true")

    # The wheel moves through the CT series.
    page.mouse.move(x, y)
    window_dragged = viewport.get_attribute("data-window") or ""
    page.mouse.wheel(0, 120)
    expect(viewport).to_have_attribute("data-image-index", "2")
    # The dragged window stays on the next slice (what the window/level tool starts from).
    expect(viewport).to_have_attribute("data-window", window_dragged)
    page.keyboard.press("ArrowDown")
    expect(viewport).to_have_attribute("data-image-index", "3")
    page.keyboard.press("Home")
    expect(viewport).to_have_attribute("data-image-index", "1")

    # Length on a CT image with PixelSpacing: mm as the spacing gives (±1 %).
    page.keyboard.press("Escape")
    wait_drawn(page)
    page.click("[data-testid=tool-length]")
    page.mouse.move(x - 120, y - 30)
    page.mouse.down()
    page.mouse.move(x + 100, y + 50, steps=8)
    page.mouse.up()
    item = page.locator("[data-testid=measurements] li.measurement")
    expect(item).to_have_count(1)
    page.wait_for_timeout(300)  # the list follows the last drawn statistics
    unit = item.get_attribute("data-unit")
    value = float(item.get_attribute("data-value") or "nan")
    points = [
        tuple(float(v) for v in p.split(","))
        for p in (item.get_attribute("data-points") or "").split(";")
    ]
    assert unit == "mm" and item.get_attribute("data-calibration") == "patient"
    assert len(points) == 2
    (i1, j1), (i2, j2) = points
    expected = math.hypot((i2 - i1) * CT_SPACING, (j2 - j1) * CT_SPACING)
    assert expected > 10
    assert abs(value - expected) <= 0.01 * expected, (value, expected, points)
    expect(item).to_contain_text("mm")
    shot(page, tmp_path, "4-length")

    # Angle tool: three clicks give a value in degrees.
    page.click("[data-testid=tool-angle]")
    expect(page.locator("[data-testid=tool-angle]")).to_have_attribute("aria-pressed", "true")
    page.click("[data-testid=tool-wl]")

    # The multi-frame MR: the wheel moves through its frames.
    page.locator("#series-list .series-item").nth(1).click()
    expect(viewport).to_have_attribute("data-series", uids["mr"])
    wait_drawn(page)
    expect(viewport).to_have_attribute("data-frame", "1")
    x, y = centre(page)
    page.mouse.move(x, y)
    page.mouse.wheel(0, 120)
    expect(viewport).to_have_attribute("data-frame", "2")
    page.mouse.wheel(0, 120)
    expect(viewport).to_have_attribute("data-frame", "3")
    expect(page.locator("#viewer-frame")).to_have_text("帧 3 / 10")
    wait_drawn(page)
    assert canvas(page)["lit"] > 0.05
    shot(page, tmp_path, "5-multiframe")

    # Cine plays the frames at the chosen rate, and stops.
    page.fill("#cine-fps", "20")
    page.click("#cine-toggle")
    expect(page.locator("#cine-toggle")).to_have_attribute("aria-pressed", "true")
    frame_now = viewport.get_attribute("data-frame")
    expect(viewport).not_to_have_attribute("data-frame", frame_now or "")
    page.click("#cine-toggle")
    expect(page.locator("#cine-toggle")).to_have_attribute("aria-pressed", "false")

    # The help overlay lists the shortcuts.
    page.keyboard.press("?")
    expect(page.locator("#viewer-help")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#viewer-help")).to_be_hidden()
    assert bp.problems() == []


@pytest.mark.parametrize("renderer", RENDERERS)
def test_monochrome1_shows_inverted_and_layout(
    viewer_hub: tuple[HubProcess, dict[str, str]],
    open_page: OpenPage,
    tmp_path: Path,
    renderer: str,
) -> None:
    hub, uids = viewer_hub
    bp = open_page(hub.url)
    use_renderer(bp, renderer)
    page = bp.page
    login(bp, hub, "rad2")
    expect(page.locator("#worklist-table")).to_be_visible()
    page.goto(f"/#/study/{uids['mono']}?layout=1x2")
    cells = page.locator(".vp-cell .vp-element")
    expect(cells).to_have_count(2)
    for index in (0, 1):
        wait_drawn(page, f".vp-cell:nth-child({index + 1}) .vp-element")
    expect(page.locator(".vp-cell:nth-child(1) .vp-element")).to_have_attribute(
        "data-series", uids["mono2"]
    )
    expect(page.locator(".vp-cell:nth-child(2) .vp-element")).to_have_attribute(
        "data-series", uids["mono1"]
    )
    check_renderer(page, renderer)
    two = canvas(page, ".vp-cell:nth-child(1) .vp-element")
    one = canvas(page, ".vp-cell:nth-child(2) .vp-element")
    assert (two["width"], two["height"]) == (one["width"], one["height"])
    # Same pixels, same window: MONOCHROME1 is the grey-level negative of MONOCHROME2 (the
    # black background around the image excluded).
    pairs = [(a, b) for a, b in zip(two["grid"], one["grid"], strict=True) if a > 8 or b > 8]
    assert len(pairs) > 200
    inverted = sum(1 for a, b in pairs if abs((a + b) - 255) <= 12)
    assert inverted / len(pairs) > 0.9, pairs[:20]
    shot(page, tmp_path, "6-monochrome1-vs-2")

    # 2x2: four viewports, the active one carries the test hook.
    page.click("button.layout[data-layout='2x2']")
    expect(cells).to_have_count(4)
    expect(page.locator(VIEWPORT)).to_have_count(1)
    page.locator(".vp-cell").nth(1).click()
    expect(page.locator(".vp-cell").nth(1).locator(VIEWPORT)).to_have_count(1)
    assert bp.problems() == []


def test_hostile_text_in_dicom_renders_as_text(
    viewer_hub: tuple[HubProcess, dict[str, str]], open_page: OpenPage, tmp_path: Path
) -> None:
    hub, uids = viewer_hub
    bp = open_page(hub.url)
    page = bp.page
    login(bp, hub, "rad1")
    expect(page.locator("#worklist-table")).to_be_visible()
    page.goto(f"/#/study/{uids['hostile']}")
    wait_drawn(page)
    expect(page.locator("#study-patient")).to_have_attribute("title", HOSTILE_NAME)
    expect(page.locator(".vp-cell.active .vp-tl")).to_contain_text(HOSTILE_NAME)
    expect(page.locator(".vp-cell.active .vp-tr")).to_contain_text(HOSTILE_NAME)
    assert page.locator(".study-page img:not(.thumb)").count() == 0
    assert page.evaluate("window.__xss") is None
    shot(page, tmp_path, "7-hostile")
    assert bp.dialogs == [] and bp.problems() == []


def test_viewer_bundle_is_served_by_the_hub_only(
    viewer_hub: tuple[HubProcess, dict[str, str]], open_page: OpenPage
) -> None:
    """Every request of the study page goes to the hub; frames are WADO-RS frames."""
    hub, uids = viewer_hub
    bp: BrowserPage = open_page(hub.url)
    page = bp.page
    urls: list[str] = []
    accepts: list[str] = []

    def seen(request: Any) -> None:
        urls.append(request.url)
        if "/frames/" in request.url:
            accepts.append(request.headers.get("accept", ""))

    page.on("request", seen)
    login(bp, hub, "rad1")
    expect(page.locator("#worklist-table")).to_be_visible()
    page.goto(f"/#/study/{uids['study']}")
    wait_drawn(page)
    assert all(u.startswith(hub.url) or u.startswith(("blob:", "data:")) for u in urls), urls
    assert any(u.endswith("/viewer/viewer.js") for u in urls)
    assert any(u.endswith(f"/series/{uids['ct']}/metadata") for u in urls)
    assert accepts and all("transfer-syntax=" in a for a in accepts), accepts
    assert not any("/rendered" in u for u in urls)
    assert bp.problems() == []


def test_jpeg2000_decoded_in_the_browser_or_a_clear_error(
    viewer_hub: tuple[HubProcess, dict[str, str]], open_page: OpenPage, tmp_path: Path
) -> None:
    """A JPEG 2000 CR (MONOCHROME1) travels compressed and is decoded by the WASM codec in the
    worker. Under a policy without 'wasm-unsafe-eval' the codec cannot compile: the viewport then
    says so clearly (the decode-failure path) instead of showing nothing."""
    hub, uids = viewer_hub
    bp = open_page(hub.url)
    page = bp.page
    login(bp, hub, "rad1")
    expect(page.locator("#worklist-table")).to_be_visible()
    policy = httpx.get(f"{hub.url}/", timeout=10).headers.get("content-security-policy", "")
    page.goto(f"/#/study/{uids['j2k']}")
    if "'wasm-unsafe-eval'" in policy:
        wait_drawn(page)
        drawn = canvas(page)
        assert drawn["lit"] > 0.05
        expect(page.locator(VIEWPORT)).to_have_attribute("data-invert", "true")
        shot(page, tmp_path, "8-jpeg2000")
        assert bp.problems() == []
    else:
        error = page.locator(".vp-cell.active .vp-message .message-error")
        expect(error).to_contain_text("此图像无法解码或显示")
        expect(page.locator(VIEWPORT)).to_have_class(re.compile(r"vp-blank"))
        shot(page, tmp_path, "8-jpeg2000-blocked")
