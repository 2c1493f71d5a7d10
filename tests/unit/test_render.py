"""Rendering real frames of the shared corpus to 8-bit JPEG / PNG.

Selection (from INDEX.csv): every non-malformed file with Pixel Data that pydicom decodes
(one frame each, thumbnail size), plus targeted checks per modality, MONOCHROME1, colour,
palette, windowing, multi-frame and malformed input.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from imaging_hub.dicom.render import render_frame
from imaging_hub.dicom.transcode import read_part10
from imaging_hub.errors import InvalidDicomError
from tests.conftest import SAMPLES


def _rows() -> list[dict[str, str]]:
    assert (SAMPLES / "INDEX.csv").is_file(), f"shared samples missing at {SAMPLES}"
    text = (SAMPLES / "INDEX.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


ROWS = _rows()
DECODABLE = [
    r for r in ROWS if r["category"] != "malformed" and r["pixel_decode"].startswith("ok (")
]
MALFORMED = [r["path"] for r in ROWS if r["category"] == "malformed"]


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _expected_size(columns: int, rows: int, box: tuple[int, int]) -> tuple[int, int]:
    scale = min(box[0] / columns, box[1] / rows, 1.0)
    return max(1, round(columns * scale)), max(1, round(rows * scale))


@pytest.mark.parametrize("row", DECODABLE, ids=[r["path"] for r in DECODABLE])
def test_every_decodable_file_renders_a_thumbnail(row: dict[str, str]) -> None:
    ds = read_part10((SAMPLES / row["path"]).read_bytes())
    image = _open(render_frame(ds, size=(128, 128)))
    assert image.format == "JPEG"
    assert image.size == _expected_size(int(row["columns"]), int(row["rows"]), (128, 128))
    colour = row["samples_per_pixel"] == "3" or row["photometric_interpretation"] == "PALETTE COLOR"
    assert image.mode == ("RGB" if colour else "L")


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        ("by-modality/CR/RG2_JLSL.dcm", "L"),
        ("by-modality/CR/RG1_J2KI.dcm", "L"),
        ("by-modality/MR/emri_small.dcm", "L"),
        ("by-modality/CT/CT_small.dcm", "L"),
        ("by-modality/US/examples_ybr_color.dcm", "RGB"),
        ("by-modality/SC/SC_rgb.dcm", "RGB"),
        ("by-transfer-syntax/rle/OBXXXX1A_rle.dcm", "RGB"),
        ("by-modality/US/gdcm-US-ALOKA-16.dcm", "RGB"),
    ],
)
def test_png_at_full_size_has_content(path: str, mode: str) -> None:
    ds = read_part10((SAMPLES / path).read_bytes())
    image = _open(render_frame(ds, fmt="png"))
    assert image.format == "PNG"
    assert image.mode == mode
    assert image.size == (int(ds.Columns), int(ds.Rows))
    pixels = np.asarray(image)
    assert pixels.max() > pixels.min()  # not a blank image


def test_monochrome1_renders_inverted() -> None:
    ds = read_part10((SAMPLES / "by-modality/CR/RG3_J2KR.dcm").read_bytes())
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    inverted = np.asarray(_open(render_frame(ds, fmt="png", window_center=2048, window_width=4096)))
    ds.PhotometricInterpretation = "MONOCHROME2"
    plain = np.asarray(_open(render_frame(ds, fmt="png", window_center=2048, window_width=4096)))
    assert np.array_equal(inverted.astype(np.int16) + plain, np.full(plain.shape, 255))
    # and the brightest stored values (bone on a MONOCHROME1 plate) are dark on screen
    raw = ds.pixel_array
    assert inverted[raw == raw.max()].mean() < inverted[raw == raw.min()].mean()


def test_explicit_window_overrides_the_dataset_window() -> None:
    ds = read_part10((SAMPLES / "by-modality/CT/CT_small.dcm").read_bytes())
    default = np.asarray(_open(render_frame(ds, fmt="png")))
    narrow = np.asarray(_open(render_frame(ds, fmt="png", window_center=40, window_width=80)))
    above_all = np.asarray(
        _open(render_frame(ds, fmt="png", window_center=100000, window_width=10))
    )
    assert not np.array_equal(default, narrow)
    assert above_all.max() == 0  # everything below the window is black


def test_one_frame_of_a_multiframe_is_rendered() -> None:
    ds = read_part10((SAMPLES / "by-modality/US/examples_ybr_color.dcm").read_bytes())
    first = np.asarray(_open(render_frame(ds, 0, fmt="png")))
    last = np.asarray(_open(render_frame(ds, 29, fmt="png")))
    assert first.shape == last.shape == (240, 320, 3)
    assert not np.array_equal(first, last)
    with pytest.raises(InvalidDicomError, match="out of range"):
        render_frame(ds, 30)


def test_bytes_are_accepted_and_quality_changes_jpeg_size() -> None:
    data = (SAMPLES / "by-modality/CT/CT_small.dcm").read_bytes()
    low, high = render_frame(data, quality=20), render_frame(data, quality=95)
    assert len(low) < len(high)


def test_instance_without_pixel_data_is_refused_with_a_sentence() -> None:
    ds = read_part10((SAMPLES / "by-modality/SR/reportsi.dcm").read_bytes())
    with pytest.raises(InvalidDicomError, match=r"^The instance has no Pixel Data to render\.$"):
        render_frame(ds)


@pytest.mark.parametrize("path", MALFORMED)
def test_malformed_input_gives_invalid_dicom_error_not_a_crash(path: str) -> None:
    data = (SAMPLES / path).read_bytes()
    try:
        image = _open(render_frame(data, size=(64, 64)))
    except InvalidDicomError as exc:
        assert str(exc)[0].isupper() and str(exc).endswith(".")
    else:
        assert image.size[0] <= 64 and image.size[1] <= 64


def test_a_big_cr_renders_within_the_requested_size() -> None:
    ds = read_part10((SAMPLES / "by-modality/CR/RG2_JLSL.dcm").read_bytes())
    image = _open(render_frame(ds, size=(1024, 1024)))
    assert image.size == _expected_size(1760, 2140, (1024, 1024))
