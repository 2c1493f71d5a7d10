"""dicom.checks: what the gateway refuses before it says Success, on real samples."""

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid

from imaging_hub.dicom.attributes import (
    PRIORITY_ROUTINE,
    PRIORITY_STAT,
    PRIORITY_URGENT,
    parse_instance,
    read_dataset,
)
from imaging_hub.dicom.checks import check_received_dataset, check_received_instance
from imaging_hub.errors import InvalidDicomError
from tests.conftest import SAMPLES

JLS = SAMPLES / "by-modality" / "CR" / "RG2_JLSL.dcm"
MALFORMED = SAMPLES / "malformed"


def _bytes(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize(
    "name",
    [
        "MR_truncated.dcm",  # native Pixel Data cut short (8130 of 8192 bytes)
        "GH1339_missing_seq_delimiter.dcm",  # encapsulated, no Sequence Delimitation Item
        "emri_small_jpeg_2k_lossless_too_short.dcm",
        "GH1146_private_UN_empty_pixeldata.dcm",  # Rows x Columns but an empty Pixel Data
        "rtplan_truncated.dcm",  # a non-image data set cut in the middle
    ],
)
def test_truncated_samples_are_refused(name: str) -> None:
    with pytest.raises(InvalidDicomError, match=r"truncated|ends|holds"):
        check_received_instance((MALFORMED / name).read_bytes())


@pytest.mark.parametrize("cut", [3, 8, 1000])
def test_encapsulated_stream_cut_at_the_end_is_refused(cut: int) -> None:
    data = JLS.read_bytes()
    check_received_instance(data)  # the whole file is fine
    with pytest.raises(InvalidDicomError):
        check_received_instance(data[:-cut])


def test_codestream_without_end_marker_is_refused() -> None:
    """Well-formed items and delimiter, but the JPEG-LS codestream itself stops early."""
    ds = pydicom.dcmread(JLS)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 2]])
    with pytest.raises(InvalidDicomError, match="end-of-image"):
        check_received_instance(_bytes(ds))


def test_fewer_fragments_than_frames_is_refused() -> None:
    ds = pydicom.dcmread(JLS)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame])  # one fragment holding the one frame
    check_received_instance(_bytes(ds))
    ds.NumberOfFrames = 2
    with pytest.raises(InvalidDicomError, match="1 fragments for 2 frames"):
        check_received_instance(_bytes(ds))


def test_native_short_by_one_frame_is_refused() -> None:
    ds = pydicom.dcmread(SAMPLES / "by-modality" / "MR" / "MR_small.dcm")
    ds.NumberOfFrames = 2
    with pytest.raises(InvalidDicomError, match="needs 16"):
        check_received_instance(_bytes(ds))


def test_stray_delimiter_after_pixels_is_accepted() -> None:
    """A real US machine's file with a second delimiter after the Pixel Data is complete."""
    # as fo-dicom's DIRW0007 (a US machine's multi-frame JPEG, too big to keep in tests/data)
    path = SAMPLES / "by-transfer-syntax" / "jpeg-baseline" / "GH538-jpeg1.dcm"
    data = path.read_bytes() + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    checked = check_received_instance(data)
    assert checked.identity.sop_instance_uid == str(pydicom.dcmread(path).SOPInstanceUID)


GH364 = SAMPLES / "by-transfer-syntax" / "jpeg-ls-lossless" / "GH364_US.dcm"
STRAY_ITEM = b"\xfe\xff\x00\xe0\x84\x00\x00\x00"  # (FFFE,E000), length 132


def test_stray_item_before_pixels_is_accepted_on_both_sides() -> None:
    """A Philips US file whose Sequence of Ultrasound Regions item lacks its sequence header
    (fo-dicom #364): the item has a length, so every element after it reads normally."""
    data = GH364.read_bytes()
    assert STRAY_ITEM in data[: data.index(b"\xe0\x7f\x10\x00")]  # before Pixel Data
    checked = check_received_instance(data)
    info = parse_instance(data)
    assert checked.identity.sop_instance_uid == info.sop_instance_uid
    assert checked.identity.study_instance_uid == info.study_instance_uid
    assert info.study_instance_uid.startswith("1.2.124.113532")
    assert (info.rows, info.columns) == (768, 1024)
    ds = read_dataset(data, stop_before_pixels=False)
    assert not [tag for tag in ds.keys() if tag.group == 0xFFFE]  # noqa: SIM118
    assert ds.pixel_array.shape == (768, 1024)


def test_stray_item_of_undefined_length_is_refused_on_both_sides() -> None:
    data = GH364.read_bytes()
    at = data.index(STRAY_ITEM)
    broken = data[: at + 4] + b"\xff\xff\xff\xff" + data[at + 8 :]
    with pytest.raises(InvalidDicomError, match="not a readable"):
        check_received_instance(broken)
    with pytest.raises(InvalidDicomError, match="not a readable"):
        parse_instance(broken)


@pytest.mark.parametrize(
    "row",
    [
        "by-modality/CR/RG2_JLSL.dcm",
        "by-modality/MR/MR_small.dcm",
        "malformed/MR_small_trailing_padding.dcm",
        "malformed/dx_image_odd_length_pixeldata.dcm",
    ],
)
def test_complete_instances_pass(row: str) -> None:
    checked = check_received_instance((SAMPLES / row).read_bytes())
    assert checked.priority == PRIORITY_ROUTINE
    assert checked.identity.sop_instance_uid


@pytest.mark.parametrize(
    ("value", "expected"),
    [("STAT", PRIORITY_STAT), ("HIGH", PRIORITY_URGENT), ("ROUTINE", PRIORITY_ROUTINE)],
)
def test_priority_from_request_attributes(value: str, expected: int, tmp_path: Path) -> None:
    ds = pydicom.dcmread(JLS)
    item = pydicom.Dataset()
    item.RequestedProcedurePriority = value
    ds.RequestAttributesSequence = [item]
    ds.SOPInstanceUID = generate_uid()
    assert check_received_instance(_bytes(ds)).priority == expected


def test_study_priority_id_stat_wins() -> None:
    ds = pydicom.dcmread(JLS)
    ds.RequestedProcedurePriority = "LOW"
    ds.StudyPriorityID = "STAT"
    assert check_received_instance(_bytes(ds)).priority == PRIORITY_STAT


@pytest.mark.parametrize("data", [b"", b"not dicom at all, just text" * 10, bytes(range(256)) * 4])
def test_not_dicom_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidDicomError):
        check_received_instance(data)


@pytest.mark.parametrize(
    ("target", "replacement"),
    [
        (b"\x28\x00\x10\x00US", b"\x28\x00\x10\x00U\x27"),  # Rows: a VR no one knows
        (b"\x28\x00\x10\x00US\x02\x00", b"\x28\x00\x10\x00UL\x02\x00"),  # 2 bytes for a UL
        (b"\x02\x00\x02\x00UI", b"\x02\x00\x02\x00U\x27"),  # the meta's SOP class, corrupt VR
    ],
)
def test_corrupt_binary_or_unknown_vrs_are_refused(target: bytes, replacement: bytes) -> None:
    """Only text elements are left unconverted by the check; anything else that cannot be
    converted (unknown VR, a binary value that does not tile its length) is refused, also when
    it sits in the file meta (read when the data set lacks its own SOP Class UID)."""
    ds = pydicom.dcmread(JLS)
    del ds.SOPClassUID
    data = _bytes(ds)
    assert data.count(target) == 1
    with pytest.raises(InvalidDicomError, match="not a readable DICOM"):
        check_received_instance(data.replace(target, replacement))


def _split_part10(data: bytes) -> tuple[bytes, str, str] | None:
    """(data set, transfer syntax, SOP class) of a Part-10 file as C-STORE would deliver it;
    None for files without a DICM prefix. The File Meta Information is walked element by
    element (some files' group lengths are wrong)."""
    if data[128:132] != b"DICM":
        return None
    offset, meta = 132, {}
    while data[offset : offset + 2] == b"\x02\x00":
        element = int.from_bytes(data[offset + 2 : offset + 4], "little")
        vr = data[offset + 4 : offset + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR"):
            length = int.from_bytes(data[offset + 8 : offset + 12], "little")
            offset += 12
        else:
            length = int.from_bytes(data[offset + 6 : offset + 8], "little")
            offset += 8
        meta[element] = data[offset : offset + length].rstrip(b"\x00 ").decode("ascii", "replace")
        offset += length
    if 0x0010 not in meta:
        return None
    return data[offset:], meta[0x0010], meta.get(0x0002, "")


ALL_SAMPLES = sorted(SAMPLES.rglob("*.dcm"))


def _outcome(check: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return check(*args, **kwargs)
    except InvalidDicomError:
        return "refused"


def test_the_data_set_check_agrees_with_the_file_check_on_every_sample() -> None:
    """The C-STORE handler checks the data set as received (no File Meta Information, Pixel
    Data not copied); on every sample, good or malformed, it decides as the Part-10 check."""
    compared = refused = 0
    for path in ALL_SAMPLES:
        data = path.read_bytes()
        split = _split_part10(data)
        if split is None:
            continue
        dataset, syntax, sop_class = split
        whole = _outcome(check_received_instance, data)
        alone = _outcome(
            check_received_dataset, dataset, transfer_syntax_uid=syntax, sop_class_uid=sop_class
        )
        assert alone == whole, path
        compared += 1
        refused += whole == "refused"
    assert compared > 85  # tests/data/dicom/INDEX.csv lists 101 samples
    assert refused >= 5  # the truncated samples above are among them


NATIVE_SYNTAXES = SAMPLES / "by-transfer-syntax"


@pytest.mark.parametrize(
    "row",
    [
        "../by-modality/MR/emri_small.dcm",  # Explicit VR Little Endian
        "../by-modality/US/gdcm-US-ALOKA-16.dcm",  # Implicit VR Little Endian
        "explicit-vr-be/MR_small_bigendian.dcm",
    ],
)
@pytest.mark.parametrize("cut", [1, 7, 5000])
def test_the_data_set_check_refuses_a_cut_native_image(row: str, cut: int) -> None:
    """Native Pixel Data over DEFER_BYTES is measured, not copied: its length still counts."""
    split = _split_part10((NATIVE_SYNTAXES / row).read_bytes())
    assert split is not None
    dataset, syntax, sop_class = split
    checked = check_received_dataset(dataset, transfer_syntax_uid=syntax, sop_class_uid=sop_class)
    assert checked.identity.transfer_syntax_uid == syntax
    with pytest.raises(InvalidDicomError, match="truncated"):
        check_received_dataset(dataset[:-cut], transfer_syntax_uid=syntax, sop_class_uid=sop_class)


def test_the_data_set_check_takes_the_sop_class_of_the_request_when_the_data_set_lacks_one() -> (
    None
):
    ds = pydicom.dcmread(JLS)
    syntax = str(ds.file_meta.TransferSyntaxUID)
    del ds.SOPClassUID
    split = _split_part10(_bytes(ds))
    assert split is not None
    checked = check_received_dataset(
        split[0], transfer_syntax_uid=syntax, sop_class_uid="1.2.840.10008.5.1.4.1.1.1"
    )
    assert checked.identity.sop_class_uid == "1.2.840.10008.5.1.4.1.1.1"
    assert checked.identity.transfer_syntax_uid == syntax
