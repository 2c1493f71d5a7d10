"""Signed reports back to the clinic through the real hub process (``imaging-hub hub serve`` with
two uvicorn workers): a gateway that drops its long-poll leaves no polling behind, a poll waiting
in one worker sees a signature made in either within about a poll interval, and the gateway
downloads the PDF and the Encapsulated PDF and confirms receipt once.

The gateway side is played by plain HTTP calls with the clinic's gateway token; the image is
ingested through the gateway API and the reports are signed through the radiologist's API (the
real signing path: PAdES, timestamp, Encapsulated PDF into the study).
"""

import hashlib
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from imaging_hub.dicom.report_objects import encapsulated_pdf_bytes
from imaging_hub.worklist.db.models import AuditEvent
from tests.conftest import SAMPLES
from tests.peers.hub import HubProcess, start_hub_process

CT = SAMPLES / "by-modality/CT/CT_small.dcm"
FEED = "/api/v1/gateway/reports"


@pytest.fixture
def hub2(tmp_path: Path) -> Iterator[HubProcess]:
    """The hub with two worker processes (a signature and a long-poll may meet in either)."""
    process = start_hub_process(tmp_path / "hub", extra_env={"IMAGING_HUB_WORKERS": "2"})
    try:
        yield process
    finally:
        process.stop()


def gateway_client(hub: HubProcess, clinic: str = "clinic-a", timeout: float = 30) -> httpx.Client:
    return httpx.Client(
        base_url=hub.url,
        headers={"Authorization": f"Bearer {hub.gateway_tokens[clinic]}"},
        timeout=timeout,
    )


def ingest(hub: HubProcess) -> str:
    """One CT instance of clinic-a, sent and completed through the gateway API."""
    ds = pydicom.dcmread(CT)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    with gateway_client(hub) as gateway:
        stored = gateway.put(
            f"/api/v1/ingest/instances/{ds.SOPInstanceUID}",
            content=data,
            headers={
                "Content-Type": "application/dicom",
                "X-Content-SHA256": hashlib.sha256(data).hexdigest(),
            },
        )
        assert stored.status_code in (200, 201), stored.text
        done = gateway.post(
            f"/api/v1/ingest/studies/{ds.StudyInstanceUID}/complete",
            json={"sop_instance_uids": [str(ds.SOPInstanceUID)]},
        )
        assert done.status_code == 200, done.text
    return str(ds.StudyInstanceUID)


def draft(rad1: httpx.Client, uid: str) -> int:
    claimed = rad1.post(f"/api/v1/studies/{uid}/claim")
    assert claimed.status_code == 200, claimed.text
    saved = rad1.put(
        f"/api/v1/studies/{uid}/report",
        json={"findings": "两肺纹理清晰。", "impression": "胸部未见异常。"},
    )
    assert saved.status_code == 200, saved.text
    report_id: int = saved.json()["id"]
    return report_id


def listings(hub: HubProcess) -> int:
    """Audit records of the gateway's feed answering with reports (``study.listed``)."""
    with hub.sessions() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(
                    AuditEvent.action == "study.listed",
                    AuditEvent.object_type == "gateway_reports",
                )
            )
            or 0
        )


def sign(hub: HubProcess, rad1: httpx.Client, report_id: int) -> dict[str, Any]:
    signed = rad1.post(
        f"/api/v1/reports/{report_id}/sign", json={"password": hub.passwords["rad1"]}
    )
    assert signed.status_code == 200, signed.text
    body: dict[str, Any] = signed.json()
    return body


def test_long_poll_across_workers_dropped_polls_and_delivery(hub2: HubProcess) -> None:
    first_uid, second_uid = ingest(hub2), ingest(hub2)
    with hub2.client("rad1") as rad1, gateway_client(hub2) as gateway:
        first_id = draft(rad1, first_uid)

        # 1. The gateway gives up on a 30 s long-poll after 1 s. Had the hub kept polling for
        # it, the report signed next would be found and listed (an audit record, as in 2.).
        with gateway_client(hub2, timeout=1.0) as impatient, pytest.raises(httpx.ReadTimeout):
            impatient.get(FEED, params={"wait": 30})
        first = sign(hub2, rad1, first_id)
        time.sleep(1.5)  # three poll intervals
        assert listings(hub2) == 0

        # 2. A new poll finds it at once (and that is audited: the check above can fail).
        (item,) = gateway.get(FEED, params={"wait": 30}).json()["reports"]
        assert item["id"] == first_id and item["sha256"] == first["sha256"]
        assert listings(hub2) == 1
        pdf = gateway.get(f"{FEED}/{first_id}/pdf")
        assert pdf.status_code == 200 and hashlib.sha256(pdf.content).hexdigest() == item["sha256"]
        dicom = gateway.get(f"{FEED}/{first_id}/dicom")
        assert dicom.status_code == 200 and dicom.headers["content-type"] == "application/dicom"
        ds = pydicom.dcmread(io.BytesIO(dicom.content))
        assert ds.SOPInstanceUID == item["pdf_sop_instance_uid"]
        assert encapsulated_pdf_bytes(ds) == pdf.content
        answers = [
            gateway.post(f"{FEED}/{first_id}/received", json={"sha256": item["sha256"]})
            for _ in range(3)
        ]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert len({a.json()["delivered_at"] for a in answers}) == 1
        chain = rad1.get(f"/api/v1/studies/{first_uid}/report").json()
        assert chain["study_status"] == "delivered"

        # 3. A poll waiting in one worker sees a signature made in either, within about a
        # poll interval.
        second_id = draft(rad1, second_uid)
        result: dict[str, Any] = {}

        def poll() -> None:
            result["response"] = gateway.get(FEED, params={"wait": 20})
            result["at"] = time.monotonic()

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.5)
        waiting = "response" not in result
        try:
            second = sign(hub2, rad1, second_id)
            signed_at = time.monotonic()
        finally:
            poller.join(timeout=25)
        assert not poller.is_alive()
        assert waiting
        assert result["at"] - signed_at < 1.5, result["at"] - signed_at
        (item,) = result["response"].json()["reports"]
        assert item["id"] == second_id and item["sha256"] == second["sha256"]
