"""Lossless WAN transcoding over the real files of the shared corpus.

Selection (from INDEX.csv): every non-malformed file whose transfer syntax is native
(Implicit/Explicit VR LE, Explicit VR BE) and has Pixel Data is transcoded to both JPEG-LS
and JPEG 2000 lossless; one file per encapsulated transfer syntax (every one in the corpus)
checks that compressed originals come back untouched; every malformed file checks that bad
input gives InvalidDicomError or a verified result, never a crash.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from imaging_hub.dicom.transcode import (
    CHANGED_BY_TRANSCODING,
    JPEG2000_LOSSLESS,
    JPEG_LS_LOSSLESS,
    decode_frame,
    pixels_equal,
    read_part10,
    tolerant_reading,
    transcode_for_wan,
)
from imaging_hub.errors import InvalidDicomError
from tests.conftest import SAMPLES

NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def _rows() -> list[dict[str, str]]:
    assert (SAMPLES / "INDEX.csv").is_file(), f"shared samples missing at {SAMPLES}"
    text = (SAMPLES / "INDEX.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


ROWS = _rows()
GOOD = [r for r in ROWS if r["category"] != "malformed"]
NATIVE_IMAGES = [
    r["path"] for r in GOOD if r["transfer_syntax_uid"] in NATIVE and r["has_pixel_data"] == "yes"
]
_first_per_syntax: dict[str, str] = {}
for _row in GOOD:
    if (
        _row["transfer_syntax_uid"] not in NATIVE | {"1.2.840.10008.1.2.1.99"}
        and _row["has_pixel_data"] == "yes"
    ):
        _first_per_syntax.setdefault(_row["transfer_syntax_uid"], _row["path"])
ENCAPSULATED = sorted(_first_per_syntax.values())
NO_PIXELS = [r["path"] for r in GOOD if r["has_pixel_data"] != "yes"]
MALFORMED = [r["path"] for r in ROWS if r["category"] == "malformed"]

# Files that must transcode (signed, multi-frame, RGB planar 0 and 1, palette, big/implicit).
MUST_TRANSCODE = [
    "by-modality/CT/CT_small.dcm",  # signed 16-bit
    "by-modality/MR/emri_small.dcm",  # 10 frames
    "by-modality/CT/eCT_Supplemental.dcm",  # enhanced multi-frame
    "by-modality/SC/SC_rgb.dcm",  # RGB planar configuration 0
    "by-transfer-syntax/explicit-vr-be/MR_small_bigendian.dcm",  # big endian
    "by-modality/US/gdcm-US-ALOKA-16.dcm",  # 16-bit PALETTE COLOR
    "by-transfer-syntax/implicit-vr-le/MR_small_implicit.dcm",
    "by-modality/SC/vlut_04.dcm",  # 8-bit
    "charset/chrX2_GB18030_Chinese.dcm",  # GB18030 text preserved
]


def _read(path: str) -> bytes:
    return (SAMPLES / path).read_bytes()


def _comparable(ds: Dataset) -> dict[Any, Any]:
    """Data set element values outside Pixel Data, group 0002, group lengths and the
    elements transcoding may legitimately change."""
    with tolerant_reading():
        return {
            tag: ds[tag].value
            for tag in ds.keys()  # noqa: SIM118 - Dataset iterates elements
            if tag not in CHANGED_BY_TRANSCODING and tag.element != 0 and tag.group != 2
        }


@pytest.mark.parametrize("syntax", [JPEG_LS_LOSSLESS, JPEG2000_LOSSLESS], ids=["jls", "j2k"])
@pytest.mark.parametrize("path", NATIVE_IMAGES)
def test_native_images_transcode_losslessly_or_stay_untouched(path: str, syntax: UID) -> None:
    data = _read(path)
    result = transcode_for_wan(data, syntax=syntax)
    assert result.original_size == len(data)
    assert result.size == len(result.data)
    if not result.transcoded:
        assert result.data == data
        assert result.reason
        assert path not in MUST_TRANSCODE, result.reason
        return
    assert result.reason is None
    assert result.transfer_syntax_uid == syntax
    assert result.size < result.original_size
    before = read_part10(data)
    after = pydicom.dcmread(io.BytesIO(result.data))  # plain pydicom re-reads it
    assert after.preamble is not None
    assert after.file_meta.TransferSyntaxUID == syntax
    assert after.SOPInstanceUID == before.SOPInstanceUID
    assert after.file_meta.MediaStorageSOPInstanceUID == before.SOPInstanceUID
    assert pixels_equal(data, result.data)
    original = pydicom.pixels.pixel_array(before, raw=True)
    assert np.array_equal(pydicom.pixels.pixel_array(read_part10(result.data), raw=True), original)
    assert _comparable(read_part10(result.data)) == _comparable(before)


@pytest.mark.parametrize("path", MUST_TRANSCODE)
def test_representative_cases_do_transcode(path: str) -> None:
    for syntax in (JPEG_LS_LOSSLESS, JPEG2000_LOSSLESS):
        result = transcode_for_wan(_read(path), syntax=syntax)
        assert result.transcoded, f"{syntax.name}: {result.reason}"
        assert result.ratio > 1.0


@pytest.mark.parametrize("path", ENCAPSULATED)
def test_compressed_originals_are_returned_byte_for_byte(path: str) -> None:
    data = _read(path)
    result = transcode_for_wan(data)
    assert not result.transcoded
    assert result.data == data
    assert result.size == result.original_size == len(data)
    assert result.reason


def test_every_encapsulated_syntax_of_the_corpus_is_covered() -> None:
    syntaxes = {r["transfer_syntax_uid"] for r in GOOD if r["has_pixel_data"] == "yes"}
    covered = {r["transfer_syntax_uid"] for r in GOOD if r["path"] in ENCAPSULATED}
    assert covered == syntaxes - NATIVE - {"1.2.840.10008.1.2.1.99"}
    assert len(covered) >= 11  # all but JPEG XL (its only sample is MPL-licensed)


@pytest.mark.parametrize("path", NO_PIXELS)
def test_instances_without_pixel_data_are_untouched(path: str) -> None:
    data = _read(path)
    result = transcode_for_wan(data)
    assert not result.transcoded
    assert result.data == data


@pytest.mark.parametrize("path", MALFORMED)
def test_malformed_input_gives_invalid_dicom_error_or_a_verified_result(path: str) -> None:
    data = _read(path)
    try:
        result = transcode_for_wan(data)
    except InvalidDicomError as exc:
        assert str(exc).endswith(".")
        return
    if result.transcoded:
        assert pixels_equal(data, result.data)
    else:
        assert result.data == data


def test_garbage_bytes_raise_invalid_dicom_error() -> None:
    with pytest.raises(InvalidDicomError, match="not a DICOM"):
        transcode_for_wan(b"this is not DICOM at all" * 10)


def _modified(path: str, change: Any) -> bytes:
    ds = read_part10(_read(path))
    change(ds)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_32_bit_pixels_are_untouched_with_a_reason() -> None:
    def to_32_bit(ds: Dataset) -> None:
        arr = ds.pixel_array.astype(np.int32)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
        ds.PixelData = arr.tobytes()

    data = _modified("by-modality/CT/CT_small.dcm", to_32_bit)
    result = transcode_for_wan(data)
    assert not result.transcoded
    assert result.data == data
    assert result.reason is not None and "Bits Allocated" in result.reason


def test_values_beyond_bits_stored_are_not_silently_dropped() -> None:
    def lie_about_bits(ds: Dataset) -> None:
        ds.BitsStored, ds.HighBit = 8, 7  # the values need 12 bits

    data = _modified("by-modality/MR/emri_small.dcm", lie_about_bits)
    result = transcode_for_wan(data)
    assert not result.transcoded
    assert result.data == data
    assert result.reason is not None and "above Bits Stored" in result.reason


def test_unsupported_photometric_is_untouched_with_a_reason() -> None:
    def say_ybr_422(ds: Dataset) -> None:
        ds.PhotometricInterpretation = "YBR_FULL_422"

    result = transcode_for_wan(_modified("by-modality/SC/SC_rgb.dcm", say_ybr_422))
    assert not result.transcoded
    assert result.reason is not None and "YBR_FULL_422" in result.reason


def test_unsupported_target_syntax_is_refused() -> None:
    with pytest.raises(ValueError, match="not supported"):
        transcode_for_wan(_read("by-modality/CT/CT_small.dcm"), syntax=ExplicitVRLittleEndian)


def test_pixels_equal_detects_a_changed_pixel() -> None:
    data = _read("by-modality/CT/CT_small.dcm")

    def bump(ds: Dataset) -> None:
        arr = ds.pixel_array.copy()
        arr[0, 0] += 1
        ds.PixelData = arr.tobytes()

    assert pixels_equal(data, data)
    assert not pixels_equal(data, _modified("by-modality/CT/CT_small.dcm", bump))


def test_decode_frame_returns_one_frame_and_checks_the_range() -> None:
    data = _read("by-modality/MR/emri_small.dcm")
    full = pydicom.dcmread(SAMPLES / "by-modality/MR/emri_small.dcm").pixel_array
    assert np.array_equal(decode_frame(data, 9), full[9])
    with pytest.raises(InvalidDicomError, match="out of range"):
        decode_frame(data, 10)
    with pytest.raises(InvalidDicomError, match="no Pixel Data"):
        decode_frame(_read("by-modality/SR/reportsi.dcm"))
