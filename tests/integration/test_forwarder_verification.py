"""The forwarder's transcoding with the verification overlapped with the upload.

A transcoded upload holds back its last piece until the verification (in a transcoding
process) passed; if it fails, the upload stops short, the hub stores nothing of it, and the
original goes instead. A large radiograph is streamed (its first lines' JPEG-LS codestream goes
out while the whole image is encoded, the SHA-256 trails the body): the hub keeps the joined file
only once it is verified; a refused verification, or a whole codestream that does not continue
the head already sent, sends the original. A real hub process; the failures are forced by
subclasses (no codec here produces a wrong file on demand), and said so.
"""

import io
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.encaps import get_frame
from pydicom.uid import JPEGLSLossless, generate_uid

from imaging_hub.dicom_gateway.forwarder import STREAM_MIN_BYTES, Forwarder, WanTranscoder
from imaging_hub.dicom_gateway.hub_client import HubClient
from imaging_hub.dicom_gateway.spool import Spool
from imaging_hub.storage.base import instance_key
from tests.conftest import SAMPLES
from tests.image_support import radiograph
from tests.peers.hub import HubProcess
from tests.peers.net import wait_until

CT = SAMPLES / "by-modality" / "CT" / "CT_small.dcm"  # native, Explicit VR Little Endian


@dataclass(frozen=True)
class RefusingTranscoder(WanTranscoder):
    """Encodes for real; its verification always refuses (stands in for a codec bug)."""

    def verify(self, original: bytes, encoded: bytes) -> str | None:
        return "Verification failed: forced by the test."


@dataclass(frozen=True)
class WrongContinuation(WanTranscoder):
    """Its whole codestream is another image's, so it does not continue the head sent."""

    def codestream(self, source: Path) -> bytes | None:
        other = source.with_name("other.dcm")
        other.write_bytes(radiograph(2200, 1000, seed=99))
        return super().codestream(other)


def _forward(
    hub: HubProcess, tmp_path: Path, transcoder: WanTranscoder, source: Path = CT
) -> tuple[bytes, bytes]:
    """Spool one fresh copy of *source*, forward it through *transcoder*; (original, bytes the
    hub holds)."""
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "ct.dcm"
    ds.save_as(path)
    data = path.read_bytes()
    spool = Spool(tmp_path / "spool")
    spool.put(
        data,
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
    )
    client = HubClient(hub.url, hub.gateway_tokens["clinic-a"], timeout=30)
    forwarder = Forwarder(
        spool=spool, client=client, prepare=transcoder, prepare_processes=1, stability_seconds=0
    )
    forwarder.start()
    try:
        wait_until(lambda: spool.stats().sent == 1 or None, timeout=60)
    finally:
        forwarder.stop()
        client.close()
        spool.close()
    key = instance_key(
        "clinic-a", str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    )
    return data, (hub.data_dir / "objects" / key).read_bytes()


def test_a_verified_transcoded_file_reaches_the_hub(hub: HubProcess, tmp_path: Path) -> None:
    original, held = _forward(hub, tmp_path, WanTranscoder(str(JPEGLSLossless)))
    stored = pydicom.dcmread(io.BytesIO(held))
    assert stored.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert len(held) < len(original)
    reference = pydicom.dcmread(io.BytesIO(original))
    assert (stored.pixel_array == reference.pixel_array).all()


def test_a_refused_verification_sends_the_original(hub: HubProcess, tmp_path: Path) -> None:
    original, held = _forward(hub, tmp_path, RefusingTranscoder(str(JPEGLSLossless)))
    assert held == original


def _large_radiograph(tmp_path: Path) -> Path:
    path = tmp_path / "dx.dcm"
    path.write_bytes(radiograph(2200, 1000, seed=3))  # 4.4 MB, 16-bit
    assert path.stat().st_size >= STREAM_MIN_BYTES
    return path


def test_a_large_radiograph_is_streamed_and_the_hub_keeps_the_verified_file(
    hub: HubProcess, tmp_path: Path
) -> None:
    source = _large_radiograph(tmp_path)
    original, held = _forward(hub, tmp_path, WanTranscoder(str(JPEGLSLossless)), source)
    stored = pydicom.dcmread(io.BytesIO(held))
    assert stored.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert len(held) < len(original) / 2
    # Streamed: one frame in two fragments (after the empty Basic Offset Table).
    assert len(list(pydicom.encaps.generate_fragments(stored.PixelData))) == 3
    reference = pydicom.dcmread(io.BytesIO(original))
    assert (stored.pixel_array == reference.pixel_array).all()
    assert stored.PatientName == reference.PatientName

    # DICOMweb serves the frame whole: the codestream of both fragments, and its pixels.
    base = (
        f"{hub.url}/dicomweb/studies/{reference.StudyInstanceUID}/series/"
        f"{reference.SeriesInstanceUID}/instances/{reference.SOPInstanceUID}/frames/1"
    )
    auth = {"Authorization": f"Bearer {hub.token('admin')}"}
    jls = httpx.get(
        base, headers={**auth, "Accept": 'multipart/related; type="image/jls"'}, timeout=30
    )
    assert jls.status_code == 200, jls.text[:300]
    assert get_frame(stored.PixelData, 0, number_of_frames=1) in jls.content
    native = httpx.get(
        base, headers={**auth, "Accept": "multipart/related; type=application/octet-stream"}
    )
    assert native.status_code == 200, native.text[:300]
    assert reference.PixelData in native.content


@pytest.mark.parametrize(
    "transcoder",
    [RefusingTranscoder(str(JPEGLSLossless)), WrongContinuation(str(JPEGLSLossless))],
    ids=["verification-refused", "codestream-does-not-continue-the-head"],
)
def test_a_failed_stream_sends_the_original(
    hub: HubProcess, tmp_path: Path, transcoder: WanTranscoder
) -> None:
    source = _large_radiograph(tmp_path)
    original, held = _forward(hub, tmp_path, transcoder, source)
    assert held == original
