"""Issue 2: one study from an X-ray machine (dcmtk storescu) to the hub worklist, for real.

dcmtk storescu -> gateway process (C-STORE SCP, spool, forwarder) -> hub process (HTTP ingest,
SQLite, filesystem object store) -> GET /api/v1/worklist with a radiologist's token.
"""

import struct
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from tests.conftest import SAMPLES
from tests.peers.dcmtk import echoscu, storescp, storescu
from tests.peers.hub import GatewayFactory, HubProcess
from tests.peers.net import wait_until

# Real X-ray plates (NEMA WG-04, MIT): one compressed with JPEG Extended, one with JPEG 2000.
CR_JPEG = SAMPLES / "by-modality" / "CR" / "RG2_JPLY_fixed.dcm"
CR_J2K = SAMPLES / "by-modality" / "CR" / "RG1_J2KI.dcm"


def make_study(source: Path, out: Path, *, name: str, charset: str, patient_id: str) -> Path:
    """A copy of a real CR with a fresh study and a Chinese patient name in *charset*."""
    ds = pydicom.dcmread(source)
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(out, enforce_file_format=True)
    return out


def dataset_bytes(data: bytes) -> bytes:
    """The data set that travels in C-STORE: a Part-10 file without preamble and File Meta."""
    assert data[128:132] == b"DICM"
    # (0002,0000) File Meta Information Group Length, explicit VR UL, first element of group 2.
    assert data[132:136] == b"\x02\x00\x00\x00"
    (group_length,) = struct.unpack("<I", data[140:144])
    return data[144 + group_length :]


def worklist(hub: HubProcess, username: str = "rad1") -> list[dict[str, object]]:
    with hub.client(username) as client:
        response = client.get("/api/v1/worklist", params={"limit": 500})
        response.raise_for_status()
        items: list[dict[str, object]] = response.json()["items"]
        return items


def test_storescu_to_worklist_gb18030_and_utf8(
    hub: HubProcess, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gb = make_study(
        CR_JPEG, tmp_path / "gb.dcm", name="王^小东", charset="GB18030", patient_id="GB-1"
    )
    utf = make_study(
        CR_J2K, tmp_path / "utf8.dcm", name="李^华", charset="ISO_IR 192", patient_id="U8-1"
    )
    assert b"\xcd\xf5" in gb.read_bytes()  # 王 in GB18030, so the file really is GB18030
    assert "王".encode() not in gb.read_bytes()
    assert "李".encode() in utf.read_bytes()
    gateway = start_gateway(hub)

    run = storescu(gateway.port, [gb, utf], called_ae=gateway.ae_title)
    assert run.returncode == 0, run.stderr

    wanted = {
        str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID): f for f in (gb, utf)
    }

    def complete() -> list[dict[str, object]] | None:
        items = [i for i in worklist(hub) if i["study_instance_uid"] in wanted]
        done = [i for i in items if i["status"] == "unread"]
        return items if len(done) == len(wanted) else None

    items = wait_until(complete, timeout=20)
    assert isinstance(items, list)
    by_uid = {i["study_instance_uid"]: i for i in items}
    gb_item = by_uid[str(pydicom.dcmread(gb, stop_before_pixels=True).StudyInstanceUID)]
    utf_item = by_uid[str(pydicom.dcmread(utf, stop_before_pixels=True).StudyInstanceUID)]
    assert gb_item["patient_name"] == "王^小东"
    assert gb_item["patient_id"] == "GB-1"
    assert utf_item["patient_name"] == "李^华"
    for item in (gb_item, utf_item):
        assert item["modalities"] == "CR"
        assert item["num_instances"] == 1
        assert item["clinic"] == "clinic-a"
        assert item["received_at"]

    # The stored object carries exactly the data set that storescu sent: dcmtk's storescp in
    # bit-preserving mode receiving the same files is the oracle for the bytes on the wire.
    oracle_dir = tmp_path / "storescp"
    with storescp(oracle_dir) as port:
        assert storescu(port, [gb, utf], called_ae="STORESCP").returncode == 0
    received = {
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f.read_bytes()
        for f in oracle_dir.iterdir()
    }
    assert len(received) == 2
    for study_uid, source in wanted.items():
        ds = pydicom.dcmread(source, stop_before_pixels=True)
        key = f"clinic-a/{study_uid}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        stored = (hub.data_dir / "objects" / key).read_bytes()
        assert dataset_bytes(stored) == dataset_bytes(received[str(ds.SOPInstanceUID)])


def test_echo_and_a_non_dicom_file_then_service_goes_on(
    hub: HubProcess, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gateway = start_gateway(hub)
    echo = echoscu(gateway.port, called_ae=gateway.ae_title)
    assert echo.returncode == 0, echo.stderr

    # Plain bytes: storescu itself refuses to send them (nothing reaches the gateway).
    text = tmp_path / "notes.dcm"
    text.write_bytes(b"this is a clinic's shopping list, not an image\n")
    refused = storescu(gateway.port, [text], called_ae=gateway.ae_title)
    assert "E:" in refused.stderr  # dcmtk reports the unreadable file and sends nothing

    # A data set that dcmtk can send (it has SOP Class/Instance UIDs) but that is not an
    # image of anything: no study, series or patient. The gateway answers a failure status.
    junk = pydicom.Dataset()
    junk.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    junk.SOPInstanceUID = generate_uid()
    junk.ContentLabel = "GARBAGE"
    junk.file_meta = pydicom.dataset.FileMetaDataset()
    junk.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    junk.file_meta.MediaStorageSOPClassUID = junk.SOPClassUID
    junk.file_meta.MediaStorageSOPInstanceUID = junk.SOPInstanceUID
    junk_path = tmp_path / "junk.dcm"
    junk.save_as(junk_path, enforce_file_format=True)
    bad = storescu(gateway.port, [junk_path], called_ae=gateway.ae_title)
    assert "Received Store Response (Error: CannotUnderstand)" in bad.stderr
    assert list((gateway.spool_dir / "objects").rglob("*.dcm")) == []

    # Nothing from the junk reached the spool's queue, and the gateway keeps serving.
    assert gateway.proc is not None and gateway.proc.poll() is None
    assert echoscu(gateway.port, called_ae=gateway.ae_title).returncode == 0
    valid = make_study(
        CR_JPEG, tmp_path / "ok.dcm", name="Test^Patient", charset="ISO_IR 100", patient_id="OK-1"
    )
    ok = storescu(gateway.port, [valid], called_ae=gateway.ae_title)
    assert ok.returncode == 0, ok.stderr
    study_uid = str(pydicom.dcmread(valid, stop_before_pixels=True).StudyInstanceUID)
    wait_until(lambda: any(i["study_instance_uid"] == study_uid for i in worklist(hub)), timeout=20)
