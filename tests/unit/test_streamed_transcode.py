"""Streamed JPEG-LS (imaging_hub.dicom.transcode): the codestream of an image's first lines,
encoded on their own, is the start of the whole image's codestream, so the gateway sends it
before the whole image is encoded; the joined file is ordinary DICOM (one frame in two
fragments, one JPEG-LS scan) that CharLS and dcmtk's dcmdjpls both decode to the original.

Images are synthetic (radiograph-like: smooth anatomy, noise, flat collimated borders, burnt-out
areas), made by the tests; hypothesis varies their size, depth and content.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import JPEGLSLossless

from imaging_hub.dicom.transcode import (
    JPEG2000_LOSSLESS,
    MIN_STREAMED_ROWS,
    encode_codestream_for_wan,
    encode_for_wan,
    encode_head_for_wan,
    join_streamed,
    read_part10,
    verify_for_wan,
)
from tests.image_support import radiograph


def streamed(data: bytes) -> bytes:
    head = encode_head_for_wan(data)
    codestream = encode_codestream_for_wan(data)
    assert head is not None and codestream is not None
    joined = join_streamed(head, codestream)
    assert joined.transcoded and joined.data.startswith(head.data)
    return joined.data


def test_a_large_radiograph_streams_and_decodes_to_its_pixels() -> None:
    data = radiograph(1500, 1200)
    joined = streamed(data)
    assert verify_for_wan(data, joined) is None
    ds = read_part10(joined)
    assert ds.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert ds.PatientName == "Zhao^Jianguo=赵^建国"
    assert np.array_equal(ds.pixel_array, read_part10(data).pixel_array)
    # One frame in two fragments; barely larger than the one-fragment file (an item header).
    fragments = list(pydicom.encaps.generate_fragments(ds.PixelData))
    assert len(fragments) == 3  # the empty Basic Offset Table, then the two fragments
    assert fragments[0] == b""
    whole = encode_for_wan(data)
    assert abs(len(joined) - len(whole.data)) <= 10


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(2 * MIN_STREAMED_ROWS, 700),
    columns=st.integers(1, 600),
    bits_stored=st.sampled_from([2, 8, 10, 12, 15, 16]),
    signed=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_head_is_always_the_start_of_the_whole_codestream(
    rows: int, columns: int, bits_stored: int, signed: bool, seed: int
) -> None:
    data = radiograph(rows, columns, bits_stored=bits_stored, signed=signed, seed=seed)
    joined = streamed(data)  # join_streamed raises if the head is not a prefix
    assert verify_for_wan(data, joined) is None


def test_dcmtk_decodes_a_streamed_file_to_the_same_pixels(tmp_path: Path) -> None:
    tool = shutil.which("dcmdjpls")
    assert tool is not None, "dcmtk's dcmdjpls is not installed (apt-get install dcmtk)"
    data = radiograph(1024, 800, bits_stored=14, seed=7)
    (tmp_path / "streamed.dcm").write_bytes(streamed(data))
    run = subprocess.run(
        [tool, str(tmp_path / "streamed.dcm"), str(tmp_path / "decoded.dcm")],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    decoded = pydicom.dcmread(tmp_path / "decoded.dcm")
    assert np.array_equal(decoded.pixel_array, read_part10(data).pixel_array)


def test_a_codestream_that_does_not_begin_with_the_head_is_refused() -> None:
    data = radiograph(600, 500, seed=1)
    other = radiograph(600, 500, seed=2)
    head = encode_head_for_wan(data)
    codestream = encode_codestream_for_wan(other)
    assert head is not None and codestream is not None
    with pytest.raises(ValueError, match="does not begin with the streamed head"):
        join_streamed(head, codestream)


def _with_trailing_padding(data: bytes) -> bytes:
    ds = read_part10(data)
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 16)  # Data Set Trailing Padding: after Pixel Data
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(radiograph(2 * MIN_STREAMED_ROWS - 1, 300), id="too-few-lines"),
        pytest.param(radiograph(300, 300, frames=2), id="multi-frame"),
        pytest.param(radiograph(300, 300, bits_stored=8, samples=3), id="colour"),
        pytest.param(_with_trailing_padding(radiograph(300, 300)), id="element-after-pixel-data"),
        pytest.param(b"not dicom at all", id="not-dicom"),
    ],
)
def test_images_the_stream_does_not_apply_to_are_left_to_the_one_go_encoding(data: bytes) -> None:
    assert encode_head_for_wan(data) is None
    assert encode_codestream_for_wan(data) is None


def test_an_already_compressed_file_and_jpeg_2000_are_not_streamed() -> None:
    data = radiograph(400, 300)
    compressed = encode_for_wan(data).data
    assert encode_head_for_wan(compressed) is None
    assert encode_head_for_wan(data, syntax=JPEG2000_LOSSLESS) is None
    assert encode_codestream_for_wan(data, syntax=JPEG2000_LOSSLESS) is None
