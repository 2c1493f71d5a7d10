"""Spool retention over the whole path: with ``retention_hours = 0`` the gateway deletes its
copies once the hub confirmed the study, and a study still being forwarded keeps them."""

from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from tests.conftest import SAMPLES
from tests.peers.dcmtk import storescu
from tests.peers.hub import GatewayFactory, HubProcess
from tests.peers.net import wait_until

CR = SAMPLES / "by-modality" / "MR" / "MR_small.dcm"


def test_forwarded_copies_are_deleted_after_the_hub_confirmed_the_study(
    hub: HubProcess, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    study = generate_uid()
    files = []
    for index in range(2):
        ds = pydicom.dcmread(CR)
        ds.StudyInstanceUID = study
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        files.append(tmp_path / f"{index}.dcm")
        ds.save_as(files[-1])
    gateway = start_gateway(hub, retention_hours=0)
    sent = storescu(gateway.port, files, called_ae=gateway.ae_title)
    assert sent.returncode == 0, sent.stderr
    objects = gateway.spool_dir / "objects"
    assert len(list(objects.rglob("*.dcm"))) == 2  # spooled before anything is confirmed

    def confirmed_and_purged() -> bool | None:
        with hub.client("rad1") as client:
            listed = client.get("/api/v1/worklist").json()["items"]
        at_hub = any(item["study_instance_uid"] == study for item in listed)
        return (at_hub and not (objects / study).exists()) or None

    wait_until(confirmed_and_purged, timeout=30)
    with hub.client("rad1") as client:
        detail = client.get(f"/api/v1/studies/{study}").json()
    assert detail["study"]["num_instances"] == 2
    assert "deleted 2 forwarded instances" in gateway.log_path.read_text()
