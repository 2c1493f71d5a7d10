"""DICOMweb (PS3.18) against a real hub process, driven by dicomweb-client over real HTTP.

One hub for the module; every non-malformed shared sample is stored once through STOW-RS as
clinic-a staff (their original bytes). Samples that share a SOP Instance UID with an earlier
one (the same image in several transfer syntaxes) get fresh UIDs first, since the hub is
idempotent by SOP Instance UID; their pixel data is not touched.
"""

import hashlib
import io
import json
import secrets
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.encaps import get_frame
from pydicom.pixels.utils import pixel_array
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from imaging_hub.dicom.attributes import parse_instance
from imaging_hub.errors import InvalidDicomError
from tests.conftest import SAMPLES, sample_rows
from tests.peers.hub import HubProcess, start_hub_process

# The client side parses real-world samples with pydicom, which warns about their quirks
# (invalid UI values, odd character set names); those warnings are about the samples.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

MAX_REQUEST = 64 << 20
MAX_INSTANCE = 24 << 20
EVRLE = "1.2.840.10008.1.2.1"
VIEWER_ORIGIN = "https://viewer.example.org"
PDF_PARTS = 'multipart/related; type="application/pdf"; boundary=b'
UNCOMPRESSED = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
}


@dataclass
class Sample:
    path: str
    data: bytes
    ts: str
    storable: bool
    study: str = ""
    series: str = ""
    sop: str = ""
    frames: int = 0


@dataclass
class Loaded:
    hub: HubProcess
    tokens: dict[str, str]
    samples: list[Sample]
    stow_answers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def client(self, user: str) -> DICOMwebClient:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.tokens[user]}"
        return DICOMwebClient(url=f"{self.hub.url}/dicomweb", session=session)

    def http(self, user: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.Client(base_url=f"{self.hub.url}/dicomweb", headers=headers, timeout=60)

    @property
    def stored(self) -> list[Sample]:
        return [s for s in self.samples if s.storable]


def _reuid(data: bytes) -> bytes:
    """The same file with a fresh SOP Instance UID (pixel data bytes untouched)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        out = io.BytesIO()
        ds.save_as(out)
    return out.getvalue()


JPEG_XL = "1.2.840.10008.1.2.4.111"


def _labelled_jpeg_xl(data: bytes) -> bytes:
    """A stored syntax the hub has no codec for: an encapsulated JPEG 2000 instance relabelled
    JPEG XL (PS3.5 2024). The only JPEG XL sample is MPL-licensed, so tests/data does not hold
    it; the hub never decodes this file's frames on the paths under test (it serves them as
    stored, or refuses to produce another syntax), so the label is what matters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
    uid = generate_uid()
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = JPEG_XL
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _samples() -> list[Sample]:
    seen: set[str] = set()
    out = []
    for row in sample_rows():
        if row["category"] == "malformed":
            continue
        data = (SAMPLES / row["path"]).read_bytes()
        try:
            info = parse_instance(data)
        except InvalidDicomError:
            out.append(Sample(row["path"], data, row["transfer_syntax_uid"], storable=False))
            continue
        if info.sop_instance_uid in seen:
            data = _reuid(data)
            info = parse_instance(data)
        seen.add(info.sop_instance_uid)
        frames = int(row["frames"]) if row["has_pixel_data"] == "yes" else 0
        out.append(
            Sample(
                row["path"],
                data,
                info.transfer_syntax_uid,
                True,
                info.study_instance_uid,
                info.series_instance_uid,
                info.sop_instance_uid,
                frames,
            )
        )
    source = next(s for s in out if s.storable and s.ts == "1.2.840.10008.1.2.4.90" and s.frames)
    data = _labelled_jpeg_xl(source.data)
    info = parse_instance(data)
    out.append(
        Sample(
            "synthetic/jpeg-xl-labelled.dcm",
            data,
            JPEG_XL,
            True,
            info.study_instance_uid,
            info.series_instance_uid,
            info.sop_instance_uid,
            source.frames,
        )
    )
    return out


def multipart_body(parts: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = secrets.token_hex(8)
    body = io.BytesIO()
    for content_type, data in parts:
        body.write(f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode())
        body.write(data)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(
    http: httpx.Client, parts: list[tuple[str, bytes]], path: str = "/studies"
) -> httpx.Response:
    body, content_type = multipart_body(parts)
    return http.post(
        path,
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
    )


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    hub = start_hub_process(
        tmp_path_factory.mktemp("dicomweb") / "hub",
        extra_env={
            "IMAGING_HUB_DICOMWEB_MAX_REQUEST_BYTES": str(MAX_REQUEST),
            "IMAGING_HUB_MAX_INSTANCE_BYTES": str(MAX_INSTANCE),
            "IMAGING_HUB_CORS_ORIGINS": f'["{VIEWER_ORIGIN}"]',
        },
    )
    try:
        tokens = {u: hub.token(u) for u in ("staff-a", "staff-b", "rad1", "admin", "consult1")}
        result = Loaded(hub, tokens, _samples())
        with result.http("staff-a") as http:
            batch: list[tuple[str, bytes]] = []
            size = 0
            for sample in result.samples:
                batch.append(("application/dicom", sample.data))
                size += len(sample.data)
                if size > 16 << 20:
                    response = stow(http, batch)
                    result.stow_answers.append((response.status_code, response.json()))
                    batch, size = [], 0
            if batch:
                response = stow(http, batch)
                result.stow_answers.append((response.status_code, response.json()))
        yield result
    finally:
        hub.stop()


def _seq(answer: dict[str, Any], keyword_tag: str) -> list[dict[str, Any]]:
    return list(answer.get(keyword_tag, {}).get("Value", []))


REFERENCED_SOP_SEQ = "00081199"
FAILED_SOP_SEQ = "00081198"
REF_SOP_UID = "00081155"
FAILURE_REASON = "00081197"


def test_stow_stores_every_valid_sample_and_refuses_the_rest(loaded: Loaded) -> None:
    stored_uids: list[str] = []
    failures: list[int] = []
    for status, answer in loaded.stow_answers:
        assert status in (200, 202)
        stored_uids += [i[REF_SOP_UID]["Value"][0] for i in _seq(answer, REFERENCED_SOP_SEQ)]
        failures += [i[FAILURE_REASON]["Value"][0] for i in _seq(answer, FAILED_SOP_SEQ)]
    assert sorted(stored_uids) == sorted(s.sop for s in loaded.stored)
    refused = [s for s in loaded.samples if not s.storable]
    assert len(failures) == len(refused) > 0
    # Refused: only samples without valid identifying UIDs. A quirky but readable file (a
    # stray item before its Pixel Data) is stored like any other.
    assert not [s for s in refused if s.path.endswith("GH364_US.dcm")]
    assert set(failures) == {0xC000}
    with loaded.hub.sessions() as session:
        from imaging_hub.worklist.db.models import Instance

        assert session.query(Instance).count() == len(loaded.stored)


def test_search_finds_every_study_series_and_instance(loaded: Loaded) -> None:
    client = loaded.client("staff-a")
    studies = {s.study for s in loaded.stored}
    found = client.search_for_studies()
    assert {r["0020000D"]["Value"][0] for r in found} == studies
    for study in studies:
        series = client.search_for_series(study_instance_uid=study)
        expected_series = {s.series for s in loaded.stored if s.study == study}
        assert {r["0020000E"]["Value"][0] for r in series} == expected_series
        instances = client.search_for_instances(study_instance_uid=study)
        expected = {s.sop for s in loaded.stored if s.study == study}
        assert {r["00080018"]["Value"][0] for r in instances} == expected
    all_instances = client.search_for_instances(search_filters={"limit": "1000"})
    assert len(all_instances) == len(loaded.stored)
    assert len(client.search_for_series()) == len({s.series for s in loaded.stored})


def test_search_matching(loaded: Loaded) -> None:
    client = loaded.client("rad1")
    sample = next(
        s
        for s in loaded.stored
        if s.path.endswith("chrX2_GB18030_Chinese.dcm") or "GB18030" in s.path
    )
    ds = pydicom.dcmread(io.BytesIO(sample.data), stop_before_pixels=True)
    name = str(ds.PatientName)
    ideographic = name.split("=")[1] if "=" in name else name
    # Chinese ideographic group, prefix wildcard
    hits = client.search_for_studies(search_filters={"PatientName": ideographic[:1] + "*"})
    assert sample.study in {r["0020000D"]["Value"][0] for r in hits}
    # case-insensitive wildcard on the alphabetic group, '?' wildcard
    alpha = name.split("=")[0]
    if alpha:
        pattern = alpha.lower()[:-1] + "?"
        hits = client.search_for_studies(search_filters={"PatientName": pattern})
        assert sample.study in {r["0020000D"]["Value"][0] for r in hits}
    # StudyInstanceUID lists, comma and backslash separated
    two = sorted({s.study for s in loaded.stored})[:2]
    for sep in (",", "\\"):
        hits = client.search_for_studies(search_filters={"StudyInstanceUID": sep.join(two)})
        assert {r["0020000D"]["Value"][0] for r in hits} == set(two)
    # date ranges
    all_studies = client.search_for_studies()
    dated = [r for r in all_studies if r.get("00080020", {}).get("Value")]
    assert dated
    date = dated[0]["00080020"]["Value"][0]
    for value in (date, f"{date}-", f"-{date}", f"{date}-{date}"):
        hits = client.search_for_studies(search_filters={"StudyDate": value})
        assert dated[0]["0020000D"]["Value"][0] in {r["0020000D"]["Value"][0] for r in hits}
        for r in hits:
            d = r["00080020"]["Value"][0]
            assert (
                (value.startswith("-") and d <= date)
                or (value.endswith("-") and d >= date)
                or d == date
            )
    # modalities, patient id, accession, fuzzymatching ignored
    ct = client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"}, fuzzymatching=True)
    assert ct and all("CT" in r["00080061"]["Value"] for r in ct)
    pid = dated[0]["00100020"]["Value"][0]
    hits = client.search_for_studies(search_filters={"PatientID": pid})
    assert hits and all(r["00100020"]["Value"][0] == pid for r in hits)
    # limit / offset page through everything once
    total = len(all_studies)
    pages = [client.search_for_studies(limit=10, offset=o) for o in range(0, total, 10)]
    assert sum(len(p) for p in pages) == total
    assert len({r["0020000D"]["Value"][0] for p in pages for r in p}) == total


def test_includefield_all_reads_instance_headers(loaded: Loaded) -> None:
    client = loaded.client("staff-a")
    sample = next(s for s in loaded.stored if s.path.endswith("CT_small.dcm"))
    [row] = client.search_for_instances(
        study_instance_uid=sample.study,
        search_filters={"SOPInstanceUID": sample.sop},
        fields=["all"],
    )
    assert row["00080018"]["Value"] == [sample.sop]
    assert "00180050" in row  # SliceThickness: only in the stored header
    assert "BulkDataURI" in row["7FE00010"] or "7FE00010" not in row
    [row] = client.search_for_instances(
        study_instance_uid=sample.study,
        search_filters={"SOPInstanceUID": sample.sop},
        fields=["00180050"],
    )
    assert "00180050" in row


def test_retrieve_study_as_stored_returns_the_original_bytes(loaded: Loaded) -> None:
    client = loaded.client("staff-a")
    by_sop = {s.sop: s for s in loaded.stored}
    for study in sorted({s.study for s in loaded.stored}):
        datasets = client.retrieve_study(study, media_types=(("application/dicom", "*"),))
        assert {str(ds.SOPInstanceUID) for ds in datasets} == {
            s.sop for s in loaded.stored if s.study == study
        }
    # byte for byte, over plain HTTP
    with loaded.http("staff-a") as http:
        sample = next(s for s in loaded.stored if s.ts == "1.2.840.10008.1.2.4.80")
        response = http.get(
            f"/studies/{sample.study}/series/{sample.series}/instances/{sample.sop}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        assert response.status_code == 200
        assert sample.data in response.content
        assert by_sop[sample.sop] is sample


def test_retrieve_default_syntax_decompresses(loaded: Loaded) -> None:
    client = loaded.client("rad1")
    done: set[str] = set()
    for sample in loaded.stored:
        if sample.ts in UNCOMPRESSED or sample.ts in done or not sample.frames:
            continue
        if sample.ts == "1.2.840.10008.1.2.4.111":  # JPEG XL: no decoder, see the 406 test
            continue
        done.add(sample.ts)
        ds = client.retrieve_instance(
            sample.study, sample.series, sample.sop, media_types=(("application/dicom", EVRLE),)
        )
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        original = pydicom.dcmread(io.BytesIO(sample.data))
        assert np.array_equal(ds.pixel_array, original.pixel_array), sample.path
    assert len(done) >= 9


def test_transfer_syntax_that_cannot_be_produced_is_406(loaded: Loaded) -> None:
    sample = next(s for s in loaded.stored if s.ts == "1.2.840.10008.1.2.4.111")
    with loaded.http("rad1") as http:
        url = f"/studies/{sample.study}/series/{sample.series}/instances/{sample.sop}"
        response = http.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
        assert response.status_code == 406
        assert "transfer-syntax=*" in response.json()["detail"]
        response = http.get(
            url,
            headers={
                "Accept": 'multipart/related; type="application/dicom"; '
                "transfer-syntax=1.2.840.10008.1.2.4.80"
            },
        )
        assert response.status_code == 406


def test_metadata_of_every_instance(loaded: Loaded) -> None:
    client = loaded.client("staff-a")
    for sample in loaded.stored:
        meta = client.retrieve_instance_metadata(sample.study, sample.series, sample.sop)
        assert meta["00080018"]["Value"] == [sample.sop]
        if sample.frames:
            assert meta["7FE00010"]["BulkDataURI"].endswith(f"{sample.sop}/bulkdata/7FE00010")
    study = loaded.stored[0].study
    metas = client.retrieve_study_metadata(study)
    assert len(metas) == sum(1 for s in loaded.stored if s.study == study)


def _expected_frame(sample: Sample, index: int) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(sample.data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = pixel_array(ds, index=index, raw=True)
    return bytes(arr.astype(arr.dtype.newbyteorder("<")).tobytes())


def test_frames_decoded_from_every_compressed_syntax_equal_pydicom(loaded: Loaded) -> None:
    client = loaded.client("staff-a")
    syntaxes = set()
    for sample in loaded.stored:
        if not sample.frames or sample.ts in UNCOMPRESSED or sample.ts.endswith(".111"):
            continue
        numbers = sorted({1, sample.frames})
        frames = client.retrieve_instance_frames(
            sample.study,
            sample.series,
            sample.sop,
            frame_numbers=numbers,
            media_types=("application/octet-stream",),
        )
        assert len(frames) == len(numbers)
        for number, frame in zip(numbers, frames, strict=True):
            assert frame == _expected_frame(sample, number - 1), (sample.path, number)
        syntaxes.add(sample.ts)
    assert len(syntaxes) >= 9


def test_frames_in_the_stored_compressed_syntax(loaded: Loaded) -> None:
    client = loaded.client("staff-a")
    media = {
        "1.2.840.10008.1.2.4.80": "image/jls",
        "1.2.840.10008.1.2.4.90": "image/jp2",
        "1.2.840.10008.1.2.4.50": "image/jpeg",
        "1.2.840.10008.1.2.4.111": "image/jxl",
    }
    for ts, media_type in media.items():
        sample = next(s for s in loaded.stored if s.ts == ts and s.frames)
        ds = pydicom.dcmread(io.BytesIO(sample.data))
        with loaded.http("staff-a") as http:
            response = http.get(
                f"/studies/{sample.study}/series/{sample.series}/instances/{sample.sop}/frames/1",
                headers={"Accept": f'multipart/related; type="{media_type}"'},
            )
        assert response.status_code == 200, response.text
        assert f"transfer-syntax={ts}" in response.text[:300] or ts in response.content[
            :300
        ].decode("latin-1")
        expected = get_frame(ds.PixelData, 0, number_of_frames=sample.frames)
        assert expected in response.content
    sample = next(s for s in loaded.stored if s.ts == "1.2.840.10008.1.2.4.80")
    [frame] = client.retrieve_instance_frames(
        sample.study,
        sample.series,
        sample.sop,
        frame_numbers=[1],
        media_types=(("image/jls", "1.2.840.10008.1.2.4.80"),),
    )
    ds = pydicom.dcmread(io.BytesIO(sample.data))
    assert frame == get_frame(ds.PixelData, 0, number_of_frames=1)


def test_native_frames(loaded: Loaded) -> None:
    client = loaded.client("admin")
    for sample in loaded.stored:
        if not sample.frames or sample.ts not in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"):
            continue
        ds = pydicom.dcmread(io.BytesIO(sample.data))
        if int(ds.BitsAllocated) == 1 or "422" in str(ds.PhotometricInterpretation):
            continue
        [frame] = client.retrieve_instance_frames(
            sample.study, sample.series, sample.sop, frame_numbers=[sample.frames]
        )
        assert frame == _expected_frame(sample, sample.frames - 1), sample.path


def test_rendered_and_thumbnail_of_every_image(loaded: Loaded) -> None:
    client = loaded.client("staff-a")
    rendered = 0
    for sample in loaded.stored:
        if not sample.frames or sample.ts.endswith(".111"):
            continue
        jpeg = client.retrieve_instance_rendered(sample.study, sample.series, sample.sop)
        image = Image.open(io.BytesIO(jpeg))
        assert image.format == "JPEG", sample.path
        rendered += 1
    assert rendered > 50  # every image of the corpus with pixels (58 in tests/data today)
    sample = next(s for s in loaded.stored if s.path.endswith("CT_small.dcm"))
    png = client.retrieve_instance_rendered(
        sample.study,
        sample.series,
        sample.sop,
        media_types=("image/png",),
        params={"window": "40,400,linear", "viewport": "32,32"},
    )
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and max(image.size) == 32
    with loaded.http("staff-a") as http:
        base = f"/studies/{sample.study}/series/{sample.series}/instances/{sample.sop}"
        for path in (
            f"{base}/thumbnail",
            f"{base}/frames/1/thumbnail",
            f"{base}/frames/1/rendered",
            f"/studies/{sample.study}/series/{sample.series}/thumbnail",
            f"/studies/{sample.study}/thumbnail",
        ):
            response = http.get(path, headers={"Accept": "image/jpeg"})
            assert response.status_code == 200, path
            assert response.headers["content-type"] == "image/jpeg"
        narrow = http.get(f"{base}/rendered", params={"window": "40,1"})
        wide = http.get(f"{base}/rendered", params={"window": "40,4000,sigmoid"})
        assert narrow.status_code == wide.status_code == 200
        assert narrow.content != wide.content
        for bad in (
            {"window": "40"},
            {"window": "a,b"},
            {"window": "40,0"},
            {"viewport": "0,5"},
            {"quality": "101"},
            {"window": "40,400,cubic"},
        ):
            response = http.get(f"{base}/rendered", params=bad)
            assert response.status_code == 400, bad
            assert response.headers["content-type"] == "application/problem+json"
        assert http.get(f"{base}/rendered", headers={"Accept": "image/gif"}).status_code == 406


def _parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related answer."""
    boundary = response.headers["content-type"].split("boundary=")[1].strip('"')
    out = []
    for chunk in response.content.split(f"--{boundary}".encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk.partition(b"\r\n\r\n")
        content_type = head.decode().split("Content-Type:")[1].strip()
        out.append((content_type, body[:-2]))  # each body ends with CRLF
    return out


def test_rendered_viewport_region_flips_and_bad_viewports(loaded: Loaded) -> None:
    sample = next(s for s in loaded.stored if s.path.endswith("CT_small.dcm"))
    base = f"/studies/{sample.study}/series/{sample.series}/instances/{sample.sop}/rendered"
    png = {"Accept": "image/png"}

    def pixels(response: httpx.Response) -> np.ndarray:
        assert response.status_code == 200, response.text
        return np.asarray(Image.open(io.BytesIO(response.content)))

    with loaded.http("staff-a") as http:
        full = pixels(http.get(base, headers=png))
        assert full.shape == (128, 128)
        region = pixels(http.get(base, headers=png, params={"viewport": "64,64,32,16,64,64"}))
        assert np.array_equal(region, full[16:80, 32:96])
        flipped = pixels(http.get(base, headers=png, params={"viewport": "64,64,32,16,-64,-64"}))
        assert np.array_equal(flipped, full[16:80, 32:96][::-1, ::-1])
        # empty sx, sy and sh take their defaults; fit inside 128x128, never enlarged
        left = pixels(http.get(base, headers=png, params={"viewport": "128,128,,,64,"}))
        assert np.array_equal(left, full[:, :64])
        half = pixels(http.get(base, headers=png, params={"viewport": "32,32,0,0,64,64"}))
        assert half.shape == (32, 32)
        for bad in (
            "64",
            "1,2,3",
            "64,64,0,0,0,10",  # empty region
            "64,64,100,100,64,64",  # reaches outside the 128x128 image
            "64,64,a,0,1,1",
            "64,64,-1,0,10,10",
            "64,64,0,0,99999999,1",
        ):
            response = http.get(base, params={"viewport": bad})
            assert response.status_code == 400, bad
            assert response.headers["content-type"] == "application/problem+json"
            assert "viewport" in response.json()["detail"], bad


def test_rendered_study_and_series(loaded: Loaded) -> None:
    images: dict[str, list[Sample]] = {}
    for s in loaded.stored:
        if s.frames and s.path.startswith("by-modality/CT/"):
            images.setdefault(s.study, []).append(s)
    study, members = max(images.items(), key=lambda item: len(item[1]))
    sample = members[0]
    # dicomweb-client asks for a single image/jpeg: the first image of the series
    jpeg = loaded.client("staff-a").retrieve_series_rendered(
        sample.study, sample.series, media_types=("image/jpeg",)
    )
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    with loaded.http("staff-a") as http:
        many = http.get(
            f"/studies/{study}/rendered",
            headers={"Accept": 'multipart/related; type="image/png"'},
            params={"viewport": "64,64"},
        )
        assert many.status_code == 200
        assert many.headers["content-type"].startswith('multipart/related; type="image/png"')
        parts = _parts(many)
        assert len(parts) == len(members) >= 1
        for content_type, body in parts:
            image = Image.open(io.BytesIO(body))
            assert content_type == "image/png" and image.format == "PNG"
            assert max(image.size) <= 64
        bad = http.get(f"/studies/{study}/rendered", params={"viewport": "64,64,0,0,0,0"})
        assert bad.status_code == 400
    with loaded.http("staff-b") as http:  # another clinic: as if it did not exist
        assert http.get(f"/studies/{study}/rendered").status_code == 404
        assert http.get(f"/studies/{study}/series/{sample.series}/rendered").status_code == 404


def test_store_instances_with_dicomweb_client(loaded: Loaded) -> None:
    client = loaded.client("staff-b")
    ds = pydicom.dcmread(SAMPLES / "by-modality/CT/CT_small.dcm")
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    answer = client.store_instances([ds])
    [item] = answer.ReferencedSOPSequence
    assert item.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    # into a named study: a mismatching instance fails with 0xA900, nothing stored
    other = pydicom.dcmread(SAMPLES / "by-modality/CT/CT_small.dcm")
    other.SOPInstanceUID = generate_uid()
    other.file_meta.MediaStorageSOPInstanceUID = other.SOPInstanceUID
    with loaded.http("staff-b") as http:
        out = io.BytesIO()
        other.save_as(out)
        response = stow(
            http, [("application/dicom", out.getvalue())], f"/studies/{ds.StudyInstanceUID}"
        )
        assert response.status_code == 409
        [failed] = _seq(response.json(), FAILED_SOP_SEQ)
        assert failed[FAILURE_REASON]["Value"] == [0xA900]
    [found] = client.search_for_studies(search_filters={"StudyInstanceUID": ds.StudyInstanceUID})
    assert found["00201208"]["Value"] == [1]
    # only clinic staff store
    with loaded.http("rad1") as http:
        assert stow(http, [("application/dicom", out.getvalue())]).status_code == 403


def test_clinic_b_cannot_find_or_fetch_clinic_a(loaded: Loaded) -> None:
    client = loaded.client("staff-b")
    a_studies = {s.study for s in loaded.stored}
    assert not {r["0020000D"]["Value"][0] for r in client.search_for_studies()} & a_studies
    assert not {r["0020000D"]["Value"][0] for r in client.search_for_series()} & a_studies
    assert not {r["0020000D"]["Value"][0] for r in client.search_for_instances()} & a_studies
    sample = next(s for s in loaded.stored if s.frames and s.ts == "1.2.840.10008.1.2.1")
    assert client.search_for_studies(search_filters={"StudyInstanceUID": sample.study}) == []
    calls = [
        lambda: client.search_for_series(study_instance_uid=sample.study),
        lambda: client.search_for_instances(study_instance_uid=sample.study),
        lambda: client.retrieve_study(sample.study),
        lambda: client.retrieve_series(sample.study, sample.series),
        lambda: client.retrieve_instance(sample.study, sample.series, sample.sop),
        lambda: client.retrieve_study_metadata(sample.study),
        lambda: client.retrieve_instance_metadata(sample.study, sample.series, sample.sop),
        lambda: client.retrieve_instance_frames(sample.study, sample.series, sample.sop, [1]),
        lambda: client.retrieve_instance_rendered(sample.study, sample.series, sample.sop),
    ]
    for call in calls:
        with pytest.raises(requests.HTTPError) as exc:
            call()
        assert exc.value.response.status_code == 404
    # storing into clinic-a's study from clinic-b fails, and changes nothing
    with loaded.http("staff-b") as http:
        response = stow(http, [("application/dicom", sample.data)])
        assert response.status_code == 409
        [failed] = _seq(response.json(), FAILED_SOP_SEQ)
        assert failed[FAILURE_REASON]["Value"] == [0x0110]
    a_client = loaded.client("staff-a")
    meta = a_client.retrieve_instance_metadata(sample.study, sample.series, sample.sop)
    assert meta["00080018"]["Value"] == [sample.sop]
    # radiologists and admins see clinic-a; consultants only escalated studies (policy)
    consultant = loaded.client("consult1")
    assert consultant.search_for_studies(search_filters={"StudyInstanceUID": sample.study}) == []
    for user in ("rad1", "admin"):
        hits = loaded.client(user).search_for_studies(
            search_filters={"StudyInstanceUID": sample.study}
        )
        assert len(hits) == 1


def test_bad_input_gets_4xx_problems_and_stores_nothing(loaded: Loaded) -> None:
    sample = next(s for s in loaded.stored if s.frames)
    instance = f"/studies/{sample.study}/series/{sample.series}/instances/{sample.sop}"
    with loaded.http(None) as anonymous:
        for path in ("/studies", instance, f"{instance}/frames/1", f"{instance}/rendered"):
            assert anonymous.get(path).status_code == 401
        assert stow(anonymous, [("application/dicom", sample.data)]).status_code == 401
    with loaded.http("staff-a") as http:
        with loaded.hub.sessions() as session:
            from imaging_hub.worklist.db.models import Instance

            before = session.query(Instance).count()
        pdf_parts = http.post("/studies", content=b"x", headers={"Content-Type": PDF_PARTS})
        assert "application/dicom parts" in pdf_parts.json()["detail"]
        checks: list[tuple[httpx.Response, int]] = [
            (http.get("/studies", params={"Nonsense": "1"}), 400),
            (http.get("/studies", params={"StudyDate": "2020-13"}), 400),
            (http.get("/studies", params={"StudyDate": "20200102-20200101"}), 400),
            (http.get("/studies", params={"limit": "-1"}), 400),
            (http.get("/studies", params={"StudyInstanceUID": "1.2.abc"}), 400),
            (http.get("/studies", params={"SOPInstanceUID": "1.2"}), 400),
            (http.get("/studies", params={"includefield": "NotAKeyword"}), 400),
            (http.get("/studies/1.2.3.999"), 404),
            (http.get("/studies/1.2.3.999/metadata"), 404),
            (http.get("/studies/not-a-uid"), 422),
            (http.get(f"{instance}/frames/0"), 400),
            (http.get(f"{instance}/frames/a,b"), 400),
            (http.get(f"{instance}/frames/99999"), 404),  # no such frame
            (http.get(f"{instance}/frames/1", headers={"Accept": "image/png"}), 406),
            (http.get(f"{instance}/bulkdata/zz"), 400),
            (
                http.post("/studies", content=b"x", headers={"Content-Type": "application/json"}),
                415,
            ),
            (pdf_parts, 415),
            (
                http.post(
                    "/studies",
                    content=b"garbage",
                    headers={"Content-Type": 'multipart/related; type="application/dicom"'},
                ),
                400,
            ),
            (
                http.post(
                    "/studies",
                    content=b"--b\r\nContent-Type: application/dicom\r\n\r\nabc",
                    headers={
                        "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'
                    },
                ),
                400,
            ),
            (
                http.post(
                    "/studies",
                    content=b"no boundary at all",
                    headers={
                        "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'
                    },
                ),
                400,
            ),
        ]
        for response, status in checks:
            assert response.status_code == status, (response.request.url, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["detail"]
        # non-DICOM and oversized parts: per-instance failure reasons, nothing stored
        big = b"\0" * (MAX_INSTANCE + 1)
        response = stow(
            http,
            [
                ("application/dicom", b"not dicom at all" * 10),
                ("text/plain", b"hello"),
                ("application/dicom", big),
            ],
        )
        assert response.status_code == 409
        reasons = [i[FAILURE_REASON]["Value"][0] for i in _seq(response.json(), FAILED_SOP_SEQ)]
        assert reasons == [0xC000, 0xC000, 0xA700]
        # a mix: the good part is stored, the request is 202
        fresh = _reuid(sample.data)
        response = stow(http, [("application/dicom", fresh), ("application/dicom", b"junk" * 100)])
        assert response.status_code == 202

        # the whole request too large: 413 without reading it all
        def chunks() -> Iterator[bytes]:
            yield b"--b\r\nContent-Type: application/dicom\r\n\r\n"
            for _ in range(MAX_REQUEST // (1 << 20) + 2):
                yield b"\0" * (1 << 20)

        response = http.post(
            "/studies",
            content=chunks(),
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
        )
        assert response.status_code == 413
        with loaded.hub.sessions() as session:
            assert session.query(Instance).count() == before + 1


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_whole_study_retrieve_streams_with_flat_memory(loaded: Loaded) -> None:
    """A 300-slice CT (157 MB) goes out while the hub's RSS grows by far less than that."""
    from imaging_hub.storage.filesystem import FilesystemStore
    from imaging_hub.worklist.db.models import Institution
    from imaging_hub.worklist.studies.registration import register_instance

    store = FilesystemStore(loaded.hub.data_dir / "objects")
    study = generate_uid()
    series = generate_uid()
    template = pydicom.dcmread(SAMPLES / "by-modality/CT/CT_small.dcm")
    template.Rows = template.Columns = 512
    template.PixelData = np.random.default_rng(1).integers(0, 2000, (512, 512), np.int16).tobytes()
    template.StudyInstanceUID = study
    template.SeriesInstanceUID = series
    with loaded.hub.sessions() as session:
        clinic = session.query(Institution).filter_by(code="clinic-a").one()
        for n in range(300):
            template.SOPInstanceUID = generate_uid()
            template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
            template.InstanceNumber = n + 1
            out = io.BytesIO()
            template.save_as(out)
            data = out.getvalue()
            register_instance(
                session,
                store=store,
                clinic=clinic,
                body=io.BytesIO(data),
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
    pid = loaded.hub.proc.pid if loaded.hub.proc else 0
    baseline = _rss_kib(pid)
    peak = [baseline]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_kib(pid))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    received = 0
    try:
        with (
            loaded.http("rad1") as http,
            http.stream(
                "GET",
                f"/studies/{study}",
                headers={
                    "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'
                },
            ) as response,
        ):
            assert response.status_code == 200
            for chunk in response.iter_bytes(1 << 16):
                received += len(chunk)
    finally:
        stop.set()
        watcher.join()
    assert received > 300 * 512 * 512 * 2
    growth_mib = (peak[0] - baseline) / 1024
    assert growth_mib < 40, f"the hub grew by {growth_mib:.0f} MiB while streaming 157 MB"


def test_cors_admits_the_configured_viewer_origin_only(loaded: Loaded) -> None:
    preflight = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, accept",
    }
    with loaded.http(None) as anonymous:
        allowed = anonymous.options("/studies", headers={"Origin": VIEWER_ORIGIN, **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == VIEWER_ORIGIN
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        other = anonymous.options(
            "/studies", headers={"Origin": "https://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers
    with loaded.http("staff-a") as http:
        response = http.get("/studies", headers={"Origin": VIEWER_ORIGIN})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == VIEWER_ORIGIN


def _metadata_body(
    datasets: list[dict[str, Any]], bulk: dict[str, tuple[str, bytes]]
) -> tuple[bytes, str]:
    """A STOW-RS body of DICOM JSON metadata plus bulk data parts (PS3.18 10.5.1.2)."""
    boundary = secrets.token_hex(8)
    body = io.BytesIO()
    body.write(f"--{boundary}\r\nContent-Type: application/dicom+json\r\n\r\n".encode())
    body.write(json.dumps(datasets).encode() + b"\r\n")
    for location, (content_type, data) in bulk.items():
        head = f"--{boundary}\r\nContent-Type: {content_type}\r\nContent-Location: {location}\r\n"
        body.write(head.encode() + b"\r\n" + data + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="application/dicom+json"; boundary={boundary}'
    return body.getvalue(), content_type


def _with_bulk_uri(ds: pydicom.Dataset, uri: str) -> dict[str, Any]:
    """The DICOM JSON of *ds* with its Pixel Data as a BulkDataURI (the rest inline)."""
    out = ds.to_json_dict(bulk_data_threshold=1 << 30)
    out["7FE00010"] = {"vr": ds["PixelData"].VR, "BulkDataURI": uri}
    return out


def test_store_metadata_with_bulk_data(loaded: Loaded) -> None:
    native = pydicom.dcmread(SAMPLES / "by-modality/CT/CT_small.dcm")
    native.SOPInstanceUID = generate_uid()
    native.PatientName = "Zhang^San=张^三"
    compressed = pydicom.dcmread(SAMPLES / "by-modality/CR/RG2_JLSL.dcm")
    compressed.SOPInstanceUID = generate_uid()
    frame = get_frame(compressed.PixelData, 0, number_of_frames=1)
    body, content_type = _metadata_body(
        [_with_bulk_uri(native, "bulk/ct"), _with_bulk_uri(compressed, "bulk/cr")],
        {
            "bulk/ct": ("application/octet-stream", native.PixelData),
            "bulk/cr": ("image/jls; transfer-syntax=1.2.840.10008.1.2.4.80", frame),
        },
    )
    with loaded.http("staff-a") as http:
        response = http.post("/studies", content=body, headers={"Content-Type": content_type})
        assert response.status_code == 200, response.text
        stored = [i[REF_SOP_UID]["Value"][0] for i in _seq(response.json(), REFERENCED_SOP_SEQ)]
        assert stored == [native.SOPInstanceUID, compressed.SOPInstanceUID]
    client = loaded.client("staff-a")
    (ct_frame,) = client.retrieve_instance_frames(
        native.StudyInstanceUID, native.SeriesInstanceUID, native.SOPInstanceUID, [1]
    )
    assert ct_frame == native.PixelData
    meta = client.retrieve_instance_metadata(
        native.StudyInstanceUID, native.SeriesInstanceUID, native.SOPInstanceUID
    )
    assert meta["00100010"]["Value"][0]["Ideographic"] == "张^三"
    (cr_frame,) = client.retrieve_instance_frames(
        compressed.StudyInstanceUID,
        compressed.SeriesInstanceUID,
        compressed.SOPInstanceUID,
        [1],
        media_types=(("image/jls", "1.2.840.10008.1.2.4.80"),),
    )
    assert cr_frame == frame
    (decoded,) = client.retrieve_instance_frames(
        compressed.StudyInstanceUID,
        compressed.SeriesInstanceUID,
        compressed.SOPInstanceUID,
        [1],
        media_types=("application/octet-stream",),
    )
    assert decoded == compressed.pixel_array.astype("<u2").tobytes()


def test_store_metadata_with_bulk_data_refuses_what_it_cannot_build(loaded: Loaded) -> None:
    ds = pydicom.dcmread(SAMPLES / "by-modality/CT/CT_small.dcm")
    ds.SOPInstanceUID = generate_uid()
    with loaded.hub.sessions() as session:
        from imaging_hub.worklist.db.models import Instance

        before = session.query(Instance).count()
    cases = [
        {},  # the Pixel Data part is missing
        {"bulk/ct": ("application/octet-stream", ds.PixelData[:-2])},  # short pixel data
        {"bulk/ct": ("image/jp2", ds.PixelData)},  # a media type without a matching syntax
    ]
    with loaded.http("staff-a") as http:
        for bulk in cases:
            body, content_type = _metadata_body([_with_bulk_uri(ds, "bulk/ct")], bulk)
            response = http.post("/studies", content=body, headers={"Content-Type": content_type})
            assert response.status_code == 409, bulk
            (failure,) = _seq(response.json(), FAILED_SOP_SEQ)
            assert failure[FAILURE_REASON]["Value"] == [0xC000]
            assert failure[REF_SOP_UID]["Value"] == [ds.SOPInstanceUID]
        boundary = "b0"
        not_json = (
            f"--{boundary}\r\nContent-Type: application/dicom+json\r\n\r\nnot json\r\n"
            f"--{boundary}--\r\n"
        )
        response = http.post(
            "/studies",
            content=not_json.encode(),
            headers={
                "Content-Type": f'multipart/related; type="application/dicom+json"; '
                f"boundary={boundary}"
            },
        )
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
    with loaded.hub.sessions() as session:
        assert session.query(Instance).count() == before
