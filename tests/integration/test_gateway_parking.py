"""Issue 12, defect 1, with a real hub and a real gateway: a StudyInstanceUID the hub refuses for
good (already registered for another clinic: 409 ``uid_conflict``) is parked with its reason,
not retried in a loop; it is listed by ``gateway status --json``, the heartbeat and the hub's
gateways view; the clinic's next study is forwarded normally; ``gateway retry`` tries it again at
once.
"""

import hashlib
import io
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pydicom.uid import generate_uid
from sqlalchemy import select

from imaging_hub.dicom.samples import __file__ as samples_init
from imaging_hub.worklist.db.models import Study, StudyStatus
from tests.peers.dcmtk import storescu
from tests.peers.hub import CLI, GatewayFactory, HubProcess
from tests.peers.net import wait_until

CT = Path(samples_init).parent / "CT_small.dcm"
WINDOW_SECONDS = 60
MAX_ATTEMPTS = 8


def _instance(study: str) -> tuple[str, bytes]:
    ds = pydicom.dcmread(CT)
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return str(ds.SOPInstanceUID), out.getvalue()


def _files(directory: Path, study: str, n: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for _ in range(n):
        sop, data = _instance(study)
        path = directory / f"{sop}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _attempts(hub: HubProcess, study: str, sop_uids: list[str]) -> int:
    """Requests of the gateway for *study* in the hub's access log: uploads and completions."""
    log = hub.log_path.read_text(errors="replace")
    uploads = sum(log.count(f'/api/v1/ingest/instances/{sop}"') for sop in sop_uids)
    completions = log.count(f'/api/v1/ingest/studies/{study}/complete"')
    return uploads + completions


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "gateway", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _gateway_json(env: dict[str, str]) -> dict[str, Any]:
    out = _cli(env, "status", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def _hub_status(hub: HubProcess, study: str) -> StudyStatus | None:
    with hub.sessions() as session:
        found = session.scalar(select(Study).where(Study.study_instance_uid == study))
        return found.status if found else None


def test_a_study_refused_for_good_is_parked_not_looped(
    hub: HubProcess, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    # The hub already holds this StudyInstanceUID for clinic-a.
    taken = generate_uid()
    sop, data = _instance(taken)
    first = httpx.put(
        f"{hub.url}/api/v1/ingest/instances/{sop}",
        content=data,
        headers={
            "Authorization": f"Bearer {hub.gateway_tokens['clinic-a']}",
            "Content-Type": "application/dicom",
            "X-Content-SHA256": hashlib.sha256(data).hexdigest(),
        },
        timeout=30,
    )
    assert first.status_code == 201, first.text

    gateway = start_gateway(hub, "clinic-b", "CLINIC_B", heartbeat_seconds=0.5)
    refused = _files(tmp_path / "refused", taken, 2)
    refused_sops = [p.stem for p in refused]
    sent = storescu(gateway.port, refused, called_ae="CLINIC_B")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    started = time.monotonic()

    # The clinic's next study goes through normally.
    normal = generate_uid()
    sent = storescu(gateway.port, _files(tmp_path / "normal", normal, 2), called_ae="CLINIC_B")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    wait_until(lambda: _hub_status(hub, normal) == StudyStatus.unread, timeout=45)

    # The refused study is parked with the hub's code and detail, listed by gateway status.
    def parked_in_status() -> dict[str, Any] | None:
        report = _gateway_json(gateway.env)
        return next((p for p in report["parked"] if p["study_instance_uid"] == taken), None)

    parked = wait_until(parked_in_status, timeout=30, interval=0.5)
    assert isinstance(parked, dict)
    assert parked["code"] == "uid_conflict"
    assert "already registered for another clinic" in parked["reason"]
    assert parked["instances"] == 2
    report = _gateway_json(gateway.env)
    assert report["parked_studies"] == 1 and report["failed"] == 2
    studies = {s["study_instance_uid"]: s for s in report["studies"]}
    assert studies[taken]["state"] == "parked" and studies[taken]["code"] == "uid_conflict"
    assert studies[normal]["state"] == "done"
    text = _cli({**gateway.env, "COLUMNS": "300"}, "status").stdout
    assert taken in text and "uid_conflict" in text

    # ... by the heartbeat, in the hub's gateways view.
    with hub.client("admin") as admin:

        def parked_at_hub() -> dict[str, Any] | None:
            view = admin.get("/api/v1/admin/gateways").json()
            for g in view["gateways"]:
                for p in g["status"].get("parked", []):
                    if g["clinic"] == "clinic-b" and p["study_instance_uid"] == taken:
                        return {"gateway": g, "parked": p, "view": view}
            return None

        seen = wait_until(parked_at_hub, timeout=30, interval=0.5)
        assert isinstance(seen, dict)
        assert seen["parked"]["code"] == "uid_conflict"
        assert "another clinic" in seen["parked"]["reason"]
        assert seen["gateway"]["status"]["parked_studies"] == 1
        clinic_b = next(c for c in seen["view"]["clinics"] if c["clinic"] == "clinic-b")
        assert clinic_b["parked_studies"] == 1

    # Not in a loop: at most 8 attempts for that study in (almost) 60 s. Counted a few seconds
    # before the minute, so the operator's retry below is not raced by the parking schedule's
    # own first retry (one minute after the park).
    time.sleep(max(0.0, WINDOW_SECONDS - 5 - (time.monotonic() - started)))
    attempts = _attempts(hub, taken, refused_sops)
    assert 1 <= attempts <= MAX_ATTEMPTS, attempts
    log = gateway.log_path.read_text(errors="replace")
    assert len(re.findall(rf"study {re.escape(taken)}: .*parked", log)) <= 2

    # The operator's retry tries it again at once (refused again, parked again).
    retried = _cli(gateway.env, "retry", taken)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    wait_until(lambda: _attempts(hub, taken, refused_sops) > attempts, timeout=30, interval=0.5)
    parked = wait_until(parked_in_status, timeout=30, interval=0.5)
    assert isinstance(parked, dict) and parked["code"] == "uid_conflict"
    assert _hub_status(hub, taken) is not None  # clinic-a's study, untouched
