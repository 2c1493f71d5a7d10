"""Hypothesis fuzzing of the DICOM parsing paths: arbitrary and mutated bytes make
parse_instance, render_frame, decode_frame, transcode_for_wan and the gateway's instance checks
raise InvalidDicomError or succeed, and never raise anything else (a 500 or a dead handler).

pydicom's UserWarnings about invalid values are ignored here: they are warnings (logged by the
hub, never raised in production); the suite's warnings-as-errors would turn them into failures
that production cannot have. The mutations start from real bundled samples (a small CT, UTF-8
and GB18030 Chinese names) so the fuzzer reaches deep into headers and pixel data.
"""

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imaging_hub.dicom.attributes import parse_instance
from imaging_hub.dicom.checks import check_received_instance
from imaging_hub.dicom.render import render_frame
from imaging_hub.dicom.transcode import decode_frame, transcode_for_wan
from imaging_hub.errors import InvalidDicomError

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning:pydicom.*", "ignore::hypothesis.errors.HypothesisWarning"
)

SAMPLES = Path(__file__).resolve().parents[2] / "src" / "imaging_hub" / "dicom" / "samples"
SEEDS = [
    (SAMPLES / name).read_bytes()
    for name in ("CT_small.dcm", "chrX1_UTF8_Chinese.dcm", "chrX2_GB18030_Chinese.dcm")
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "length"]))
        # Mutations concentrate on the header (first 2 KiB), where the parser decides things.
        pos = draw(st.integers(0, min(len(data) - 1, 2048)))
        if kind == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[draw(st.integers(min(132, len(data)), len(data))) :]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        else:  # a huge or odd element length where a length field might be
            data[pos : pos + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\xfe\xff\xff\x7f"]))
        if not data:
            break
    return bytes(data)


ANY_BYTES = st.one_of(
    st.binary(max_size=512),
    st.binary(max_size=256).map(lambda b: b"\0" * 128 + b"DICM" + b),
    mutated(),
)
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


def _only_invalid_dicom(call: object, data: bytes) -> None:
    with contextlib.suppress(InvalidDicomError):
        call(data)  # type: ignore[operator]


@FUZZ
@given(ANY_BYTES)
def test_parse_instance(data: bytes) -> None:
    _only_invalid_dicom(parse_instance, data)


@FUZZ
@given(ANY_BYTES)
def test_check_received_instance(data: bytes) -> None:
    _only_invalid_dicom(check_received_instance, data)


@FUZZ
@given(mutated())
def test_render_frame(data: bytes) -> None:
    _only_invalid_dicom(lambda d: render_frame(d, size=(64, 64)), data)


@FUZZ
@given(mutated())
def test_decode_frame(data: bytes) -> None:
    _only_invalid_dicom(decode_frame, data)


@FUZZ
@given(mutated())
def test_transcode_for_wan(data: bytes) -> None:
    _only_invalid_dicom(transcode_for_wan, data)


@pytest.mark.parametrize("data", [b"", b"DICM", b"\0" * 132, b"\0" * 128 + b"DICM"])
def test_degenerate_inputs(data: bytes) -> None:
    for call in (parse_instance, decode_frame, render_frame):
        with pytest.raises(InvalidDicomError):
            call(data)  # type: ignore[operator]
    # Transcoding refuses, or passes the bytes on untouched with a reason (never "transcoded").
    try:
        result = transcode_for_wan(data)
    except InvalidDicomError:
        return
    assert not result.transcoded and result.data == data and result.reason
