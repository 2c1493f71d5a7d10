"""Domain pieces of DICOMweb, tested without HTTP: QIDO parameters, DICOM JSON, frames,
multipart parsing and the rendering lookup-table fast path."""

import hashlib
import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import get_frame

from imaging_hub.dicom import render
from imaging_hub.dicom.attributes import InstanceInfo, parse_instance
from imaging_hub.dicom.dicomjson import attributes_to_json, dataset_to_json, store_response
from imaging_hub.dicom.frames import FrameLayoutCache, can_convert, convert_instance, read_frames
from imaging_hub.dicom.from_json import BulkData, part10_from_json
from imaging_hub.dicom.qido import DateRange, Text, UidList, ValueList, like_pattern, parse_query
from imaging_hub.dicom.transcode import (
    encode_codestream_for_wan,
    encode_head_for_wan,
    join_streamed,
)
from imaging_hub.errors import InvalidDicomError, InvalidRequest, NotAcceptable, NotFound
from imaging_hub.storage.filesystem import FilesystemStore
from imaging_hub.worklist.dicomweb import retrieve
from imaging_hub.worklist.dicomweb.multipart import (
    MultipartReader,
    multipart_pieces,
    parse_accept,
    stow_boundary,
)
from imaging_hub.worklist.dicomweb.search import InstanceRef
from tests.conftest import SAMPLES, sample_rows
from tests.image_support import radiograph

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_parse_query_types_every_match() -> None:
    query = parse_query(
        [
            ("PatientName", "张*"),
            ("00100020", "P1"),
            ("StudyDate", "20240101-"),
            ("ModalitiesInStudy", "ct,MR"),
            ("StudyInstanceUID", "1.2.3\\1.2.4,1.2.5"),
            ("limit", "5000"),
            ("offset", "10"),
            ("includefield", "all,00081030,StudyDescription"),
            ("fuzzymatching", "true"),
        ],
        level="study",
    )
    assert query.matches["PatientName"] == Text("张*")
    assert query.matches["PatientID"] == Text("P1")
    assert query.matches["StudyDate"] == DateRange("20240101", None)
    assert query.matches["ModalitiesInStudy"] == ValueList(("CT", "MR"))
    assert query.matches["StudyInstanceUID"] == UidList(("1.2.3", "1.2.4", "1.2.5"))
    assert (query.limit, query.offset, query.include_all) == (1000, 10, True)
    assert query.includefields == {"StudyDescription"}


@pytest.mark.parametrize(
    "params",
    [
        [("Bogus", "1")],
        [("SOPInstanceUID", "1.2")],  # instance key in a study search
        [("StudyDate", "2024-01-01")],
        [("StudyDate", "20240102-20240101")],
        [("StudyInstanceUID", "1.2.x")],
        [("ModalitiesInStudy", "C;T")],
        [("limit", "ten")],
        [("fuzzymatching", "maybe")],
        [("includefield", "NoSuchKeyword")],
        [("PatientID", "a"), ("PatientID", "b")],
    ],
)
def test_parse_query_refuses_bad_parameters(params: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidRequest):
        parse_query(params, level="study")


def test_like_pattern_escapes_sql_wildcards() -> None:
    assert like_pattern("a%b_c!*?") == "a!%b!_c!!%_"


def test_attributes_to_json_uses_dicom_json_value_types() -> None:
    out = attributes_to_json(
        {
            "PatientName": "Wang^XiaoDong=王^小东",
            "ModalitiesInStudy": "CT\\SR",
            "NumberOfStudyRelatedSeries": 2,
            "StudyDate": "",
        }
    )
    assert list(out) == ["00080020", "00080061", "00100010", "00201206"]
    assert out["00080020"] == {"vr": "DA"}
    assert out["00080061"]["Value"] == ["CT", "SR"]
    assert out["00100010"]["Value"] == [{"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小东"}]
    assert out["00201206"]["Value"] == [2]


def test_store_response_lists_references_and_failures() -> None:
    out = store_response(
        retrieve_url="http://h/dicomweb/studies/1.2",
        referenced=[("1.2.840.10008.5.1.4.1.1.2", "1.2.3", "http://h/x")],
        failed=[("", "", 0xC000)],
    )
    ds = pydicom.Dataset.from_json(out)
    assert ds.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "1.2.3"
    assert ds.FailedSOPSequence[0].FailureReason == 0xC000


def test_metadata_makes_pixel_data_bulk_and_survives_stray_delimiters(tmp_path: Path) -> None:
    # as fo-dicom's DIRW0007 (UTF-8, a second delimiter after the Pixel Data; too big to keep)
    ds = pydicom.dcmread(SAMPLES / "by-transfer-syntax/jpeg-baseline/GH538-jpeg1.dcm")
    ds.SpecificCharacterSet = "ISO_IR 192"
    path = tmp_path / "stray.dcm"
    ds.save_as(path, enforce_file_format=True)
    path.write_bytes(path.read_bytes() + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    with path.open("rb") as f:
        from imaging_hub.dicom.frames import read_header

        out = dataset_to_json(read_header(f), bulk_data_uri=lambda tag: f"bulk/{tag}")
    assert out["7FE00010"]["BulkDataURI"] == "bulk/7FE00010"
    assert out["00080005"]["Value"] == ["ISO_IR 192"]
    assert "FFFEE0DD" not in out


def test_read_frames_reads_native_frames_at_their_offset() -> None:
    path = SAMPLES / "by-modality/MR/emri_small.dcm"  # 10 native frames
    ds = pydicom.dcmread(path)
    with path.open("rb") as f:
        frames = read_frames(f, [10, 1], decode=False)
    assert frames.frames[0] == ds.pixel_array[9].astype("<u2").tobytes()
    assert frames.frames[1] == ds.pixel_array[0].astype("<u2").tobytes()
    with path.open("rb") as f, pytest.raises(NotFound, match="Frame 14 does not exist"):
        read_frames(f, [14], decode=False)


def test_convert_instance_decompresses_and_refuses_what_it_cannot() -> None:
    data = (SAMPLES / "by-modality/CT/CT_small.dcm").read_bytes()
    assert convert_instance(data, "1.2.840.10008.1.2.1") == data
    assert can_convert("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.1")
    assert not can_convert("1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.1")
    assert not can_convert("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.80")
    with pytest.raises(NotAcceptable):
        convert_instance(data, "1.2.840.10008.1.2.4.80")


def test_accept_header_parsing() -> None:
    ranges = parse_accept(
        'multipart/related; type="application/dicom"; transfer-syntax=*, '
        "multipart/related; type=application/octet-stream; q=0.5, image/png;q=0"
    )
    assert [(r.media_type, r.transfer_syntax, r.multipart) for r in ranges] == [
        ("application/dicom", "*", True),
        ("application/octet-stream", None, True),
    ]
    assert parse_accept(None)[0].media_type == "*/*"


def test_multipart_round_trip_split_across_chunks() -> None:
    parts = [("application/dicom", [b"first", b" part"]), ("text/plain", [b"--not-a-boundary"])]
    body = b"".join(multipart_pieces(iter(parts), "XyZ"))  # type: ignore[arg-type]
    boundary, _ = stow_boundary('multipart/related; type="application/dicom"; boundary=XyZ')
    reader = MultipartReader(boundary=boundary, max_part=1000)
    for i in range(0, len(body), 3):
        reader.feed(body[i : i + 3])
    got = reader.finish()
    assert [(p.content_type, p.body.read()) for p in got] == [
        ("application/dicom", b"first part"),
        ("text/plain", b"--not-a-boundary"),
    ]
    truncated = MultipartReader(boundary=boundary, max_part=1000)
    truncated.feed(body[:-10])
    with pytest.raises(InvalidRequest):
        truncated.finish()


def test_render_lookup_table_path_equals_per_pixel_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        r
        for r in sample_rows()
        if r["category"] != "malformed"
        and r["samples_per_pixel"] == "1"
        and r["photometric_interpretation"] in ("MONOCHROME1", "MONOCHROME2")
        and r["pixel_decode"].startswith("ok")
        and r["bits_allocated"] in ("8", "16")
    ]
    assert len(rows) > 20
    for row in rows:
        data = (SAMPLES / row["path"]).read_bytes()
        ds = pydicom.dcmread(io.BytesIO(data))
        monkeypatch.setattr(render, "LUT_MIN_PIXELS", 1)
        fast = render.render_frame(ds, 0, fmt="png")
        fast_windowed = render.render_frame(ds, 0, window_center=100, window_width=300, fmt="png")
        monkeypatch.setattr(render, "LUT_MIN_PIXELS", 1 << 40)
        assert fast == render.render_frame(ds, 0, fmt="png"), row["path"]
        slow = render.render_frame(ds, 0, window_center=100, window_width=300, fmt="png")
        assert fast_windowed == slow, row["path"]


def test_read_native_frame_equals_pydicom_for_every_native_grayscale_sample() -> None:
    from imaging_hub.dicom.frames import read_native_frame

    checked = 0
    for row in sample_rows():
        if row["category"] == "malformed" or row["has_pixel_data"] != "yes":
            continue
        path = SAMPLES / row["path"]
        frames = int(row["frames"])
        with path.open("rb") as f:
            got = read_native_frame(f, frames - 1)
        native = row["transfer_syntax_uid"] in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
        simple = row["samples_per_pixel"] == "1" and row["bits_allocated"] in ("8", "16")
        if not (native and simple):
            assert got is None, row["path"]
            continue
        assert got is not None, row["path"]
        ds = pydicom.dcmread(path)
        from pydicom.pixels.utils import pixel_array

        expected = pixel_array(ds, index=frames - 1)
        assert got[1].dtype == expected.dtype and (got[1] == expected).all(), row["path"]
        assert "PixelData" not in got[0]
        checked += 1
    assert checked > 20


class CountingStore(FilesystemStore):
    """The filesystem store, counting whole-object opens and ranged reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opens = 0
        self.ranged = 0
        self._in_range = False

    def open(self, key: str) -> BinaryIO:
        self.opens += not self._in_range
        return super().open(key)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        self.ranged += 1
        self._in_range = True
        try:
            return super().read_range(key, offset, length)
        finally:
            self._in_range = False


def _ref(key: str, info: InstanceInfo, sha256: str) -> InstanceRef:
    return InstanceRef(
        study_instance_uid=info.study_instance_uid,
        series_instance_uid=info.series_instance_uid,
        sop_instance_uid=info.sop_instance_uid,
        sop_class_uid=info.sop_class_uid,
        transfer_syntax_uid=info.transfer_syntax_uid,
        object_key=key,
        size=0,
        number_of_frames=info.number_of_frames,
        rows=info.rows,
        sha256=sha256,
    )


def test_frames_by_cached_layout_equal_the_general_read_for_every_sample(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "objects")
    layouts = FrameLayoutCache()
    by_range = 0
    for n, row in enumerate(sample_rows()):
        if row["category"] == "malformed" or row["has_pixel_data"] != "yes":
            continue
        data = (SAMPLES / row["path"]).read_bytes()
        try:
            info = parse_instance(data)
        except InvalidDicomError:
            continue
        key = f"clinic-a/{n}.dcm"
        store.put(key, data)
        ref = _ref(key, info, hashlib.sha256(data).hexdigest())
        count = max(1, info.number_of_frames or 1)
        numbers = sorted({1, count, (count + 1) // 2})
        try:
            with store.open(key) as f:
                expected = read_frames(f, numbers, decode=False)
        except InvalidDicomError:
            with pytest.raises(InvalidDicomError):
                retrieve.read_frames(store, ref, numbers, decode=False, layouts=layouts)
            continue
        got = retrieve.read_frames(store, ref, numbers, decode=False, layouts=layouts)
        assert got == expected, row["path"]
        opens, ranged = store.opens, store.ranged
        again = retrieve.read_frames(store, ref, numbers, decode=False, layouts=layouts)
        assert again == expected
        if store.opens == opens:  # answered from the cached layout: ranged reads only
            assert store.ranged == ranged + len(numbers)
            by_range += 1
    assert by_range > 40  # native and one-fragment-per-frame samples


def test_a_streamed_single_frame_in_two_fragments_is_read_by_range(tmp_path: Path) -> None:
    """What a gateway streams (a radiograph as one frame in two fragments) is served from the
    cached layout by one ranged read, the item header between the fragments cut out."""
    original = radiograph(600, 400, seed=5)
    head, codestream = encode_head_for_wan(original), encode_codestream_for_wan(original)
    assert head is not None and codestream is not None
    data = join_streamed(head, codestream).data
    store = CountingStore(tmp_path / "objects")
    store.put("clinic-a/dx.dcm", data)
    info = parse_instance(data)
    ref = _ref("clinic-a/dx.dcm", info, hashlib.sha256(data).hexdigest())
    layouts = FrameLayoutCache()
    first = retrieve.read_frames(store, ref, [1], decode=False, layouts=layouts)
    opens, ranged = store.opens, store.ranged
    again = retrieve.read_frames(store, ref, [1], decode=False, layouts=layouts)
    assert (store.opens, store.ranged) == (opens, ranged + 1)  # one ranged read, no header
    ds = pydicom.dcmread(io.BytesIO(data))
    expected = get_frame(ds.PixelData, 0, number_of_frames=1)
    assert first.frames == again.frames == [expected]
    assert expected.startswith(head.fragment) and expected.rstrip(b"\x00").endswith(b"\xff\xd9")
    with store.open("clinic-a/dx.dcm") as f:
        assert read_frames(f, [1], decode=False) == again  # the general read agrees


def test_frame_layout_cache_is_bounded_and_keyed_by_content(tmp_path: Path) -> None:
    path = SAMPLES / "by-modality/CT/CT_small.dcm"
    data = path.read_bytes()
    store = CountingStore(tmp_path / "objects")
    store.put("clinic-a/ct.dcm", data)
    info = parse_instance(data)
    layouts = FrameLayoutCache(max_entries=2)
    for version in ("a", "b", "c", "c"):
        retrieve.read_frames(
            store, _ref("clinic-a/ct.dcm", info, version), [1], decode=False, layouts=layouts
        )
    assert store.opens == 3  # one header read per object version, none for the repeat
    assert len(layouts) == 2
    with pytest.raises(NotFound):  # CT_small has one frame
        retrieve.read_frames(
            store, _ref("clinic-a/ct.dcm", info, "c"), [2], decode=False, layouts=layouts
        )


def test_parse_viewport_and_crop() -> None:
    assert retrieve.parse_viewport("512,256") == ((512, 256), None)
    assert retrieve.parse_viewport("64,64,1,2,-30,40") == ((64, 64), (1, 2, -30, 40))
    assert retrieve.parse_viewport("64,64,,,,") == ((64, 64), (None, None, None, None))
    for bad in ("", "1", "1,2,3", "0,1", "1,1,-1,0,1,1", "1,1,0,0,0,1", "1,1,0,0,x,1"):
        with pytest.raises(InvalidRequest, match="viewport"):
            retrieve.parse_viewport(bad)
    image = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4))
    assert np.asarray(render.crop(image, (1, 1, 2, None))).tolist() == [[5, 6], [9, 10]]
    assert np.asarray(render.crop(image, (1, 1, -2, -2))).tolist() == [[10, 9], [6, 5]]
    for region in ((3, 0, 2, 1), (0, 0, 5, None), (0, 3, None, None)):
        with pytest.raises(ValueError, match="not inside"):
            render.crop(image, region)


def test_part10_from_json_round_trips_and_refuses_what_it_cannot_encode() -> None:
    ds = pydicom.dcmread(SAMPLES / "by-modality/CT/CT_small.dcm")
    ds.PatientName = "Wang^XiaoDong=王^小东"
    item = ds.to_json_dict(bulk_data_threshold=1 << 30)
    item["7FE00010"] = {"vr": "OW", "BulkDataURI": "px"}
    data = part10_from_json(
        item, bulk_data={"px": BulkData(ds.PixelData, "application/octet-stream")}
    )
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert str(back.PatientName) == "Wang^XiaoDong=王^小东"
    assert back.PixelData == ds.PixelData
    for bulk, match in (
        ({}, "names no part"),
        ({"px": BulkData(b"\0\0", "application/octet-stream", "1.2.840.10008.1.2")}, "Explicit"),
        ({"px": BulkData(b"\0\0", "image/gif")}, "does not match"),
    ):
        with pytest.raises(InvalidDicomError, match=match):
            part10_from_json(item, bulk_data=bulk)
    item["00280008"] = {"vr": "IS", "Value": [2]}
    with pytest.raises(InvalidDicomError, match="single-frame"):
        part10_from_json(item, bulk_data={"px": BulkData(b"\xff\xd8", "image/jpeg")})
    with pytest.raises(InvalidDicomError, match="not a valid DICOM JSON"):
        part10_from_json({"00100010": {"vr": "PN", "Value": 5}}, bulk_data={})
