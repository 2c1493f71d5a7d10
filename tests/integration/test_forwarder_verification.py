"""The forwarder's transcoding with the verification overlapped with the upload.

A transcoded upload holds back its last piece until the verification (in a transcoding
process) passed; if it fails, the upload stops short, the hub stores nothing of it, and the
original goes instead. A real hub process; the failing verification is forced by a subclass
(no codec here produces a wrong file on demand), and said so.
"""

import io
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import JPEGLSLossless, generate_uid

from imaging_hub.dicom_gateway.forwarder import Forwarder, WanTranscoder
from imaging_hub.dicom_gateway.hub_client import HubClient
from imaging_hub.dicom_gateway.spool import Spool
from imaging_hub.storage.base import instance_key
from tests.conftest import SAMPLES
from tests.peers.hub import HubProcess
from tests.peers.net import wait_until

CT = SAMPLES / "by-modality" / "CT" / "CT_small.dcm"  # native, Explicit VR Little Endian


@dataclass(frozen=True)
class RefusingTranscoder(WanTranscoder):
    """Encodes for real; its verification always refuses (stands in for a codec bug)."""

    def verify(self, original: bytes, encoded: bytes) -> str | None:
        return "Verification failed: forced by the test."


def _forward(hub: HubProcess, tmp_path: Path, transcoder: WanTranscoder) -> tuple[bytes, bytes]:
    """Spool one fresh CT, forward it through *transcoder*; (original, bytes the hub holds)."""
    ds = pydicom.dcmread(CT)
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
