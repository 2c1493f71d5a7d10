"""The viewer's two drawing paths show the same pixels (Debian chromium, a real hub).

Where WebGL is a software rasteriser (this headless chromium: SwiftShader) the viewer draws with
Cornerstone's CPU path; a workstation with a GPU draws with WebGL (docs/browser-app.md). Each
sample below — RGB, YBR_FULL and YBR_FULL_422 (JPEG baseline, the latter multi-frame), PALETTE
COLOR with 8-bit (RLE) and 16-bit tables (the tables come as bulk data), signed 16-bit
MONOCHROME2 CT — is shown at 1:1 with its own window on both paths, and the
two canvases are compared pixel by pixel; the RGB and palette samples' centres are compared with
pydicom's RGB (palettes applied). Screenshots: ``paths-<sample>-<path>.png``.
"""

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from playwright.sync_api import Page, expect
from pydicom.pixels.processing import apply_color_lut
from pydicom.uid import generate_uid

from tests.conftest import SAMPLES
from tests.e2e.support import BUNDLED, ingest, login, make_instance
from tests.e2e.test_viewer import VIEWPORT, check_renderer, use_renderer, wait_drawn
from tests.peers.browser import OpenPage
from tests.peers.hub import HubProcess, start_hub_process

pytestmark = pytest.mark.e2e

CASES = {
    "rgb": SAMPLES / "by-modality" / "SC" / "SC_rgb.dcm",
    "ybr-full": SAMPLES / "by-transfer-syntax" / "jpeg-baseline" / "GH538-jpeg1.dcm",
    "ybr-422-multiframe": SAMPLES / "by-modality" / "US" / "examples_ybr_color.dcm",
    "palette-8-rle": SAMPLES / "by-transfer-syntax" / "rle" / "OBXXXX1A_rle.dcm",
    "palette-16": SAMPLES / "by-modality" / "US" / "gdcm-US-ALOKA-16.dcm",
    "ct-signed-16": BUNDLED / "CT_small.dcm",
}


@pytest.fixture(scope="module")
def paths_hub(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[HubProcess, dict[str, str]]]:
    hub = start_hub_process(tmp_path_factory.mktemp("viewer-paths") / "hub")
    try:
        studies = {}
        for name, source in CASES.items():
            study = generate_uid()
            studies[name] = ingest(
                hub,
                "clinic-a",
                make_instance(source, study=study, PatientID=f"PATHS-{name}", SeriesNumber=1),
            )
        yield hub, studies
    finally:
        hub.stop()


def canvas_pixels(page: Page) -> np.ndarray:
    url = page.evaluate(
        "(sel) => document.querySelector(sel + ' canvas').toDataURL('image/png')", VIEWPORT
    )
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def shown_at_one_to_one(page: Page, study: str) -> np.ndarray:
    page.goto(f"/#/study/{study}")
    wait_drawn(page)
    page.keyboard.press("o")  # one image pixel per screen pixel: no interpolation on either path
    page.wait_for_timeout(400)
    zoom = page.locator(".vp-cell.active .vp-br").inner_text()
    assert "%" not in zoom or "100%" in zoom, zoom
    return canvas_pixels(page)


def expected_rgb(source: Path) -> np.ndarray:
    """The sample's first frame in RGB as pydicom gives it (palettes applied, 8 bits)."""
    ds = pydicom.dcmread(source)
    pixels = ds.pixel_array
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        return (rgb >> 8 if rgb.max() > 255 else rgb).astype(int)
    return pixels.astype(int)


def centre_difference(shown: np.ndarray, want: np.ndarray, half: int = 24) -> float:
    """Mean difference of the image's centre and the canvas's (1:1, centred), best of ±2 px.

    At 1:1 the viewer puts image pixels on device pixels (no blending of neighbours), so the
    canvas holds the image's own pixels.
    """
    ch, cw = shown.shape[0] // 2, shown.shape[1] // 2
    ih, iw = want.shape[0] // 2, want.shape[1] // 2
    patch = want[ih - half : ih + half, iw - half : iw + half]
    best = 255.0
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            y, x = ch - half + dy, cw - half + dx
            window = shown[y : y + 2 * half, x : x + 2 * half]
            best = min(best, float(np.abs(window - patch).mean()))
    return best


def test_cpu_and_webgl_paths_show_the_same_pixels(
    paths_hub: tuple[HubProcess, dict[str, str]], open_page: OpenPage, tmp_path: Path
) -> None:
    hub, studies = paths_hub
    shown: dict[str, dict[str, np.ndarray]] = {}
    for renderer in ("gpu", "cpu"):
        bp = open_page(hub.url)
        use_renderer(bp, renderer)
        page = bp.page
        login(bp, hub, "rad1")
        expect(page.locator("#worklist-table")).to_be_visible()
        for name, study in studies.items():
            pixels = shown_at_one_to_one(page, study)
            check_renderer(page, renderer)
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / f"paths-{name}-{renderer}.png")
            shown.setdefault(name, {})[renderer] = pixels
        assert bp.problems() == []
    for name, by_path in shown.items():
        cpu, gpu = by_path["cpu"], by_path["gpu"]
        assert cpu.shape == gpu.shape, name
        lit = (gpu.max(axis=2) > 8).mean()
        assert lit > 0.01, (name, lit)  # an image, not a black canvas
        diff = np.abs(cpu - gpu).max(axis=2)
        colourful = (np.ptp(gpu, axis=2) > 16).mean()
        report = {
            "lit": round(float(lit), 4),
            "colour": round(float(colourful), 4),
            "over2": round(float((diff > 2).mean()), 4),
            "over16": round(float((diff > 16).mean()), 4),
            "max": int(diff.max()),
        }
        print(name, report)
        if name in ("rgb", "palette-8-rle", "palette-16"):  # and the colours are the sample's
            for path, pixels in by_path.items():
                centre = centre_difference(pixels, expected_rgb(CASES[name]))
                print(name, path, "centre difference from pydicom:", round(centre, 3))
                assert centre < 0.5, (name, path, centre)
        # Shown in colour, not grey (the palette samples are grey ultrasound with coloured marks).
        if not name.startswith("ct"):
            assert report["colour"] > 0.0003, (name, report)
        assert report["over16"] <= 0.0005 and report["over2"] <= 0.002, (name, report)
