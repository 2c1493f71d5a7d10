"""A study is never complete while an association carrying it is open.

The defect: a modality that stalled mid-study (longer than the stability window) had its study
reported complete at the hub with 146 of 300 instances while its association was still open.
Now every association records, in the spool index (shared by the SCP worker processes and the
lean C-STORE path), which studies it carries; release, abort or a dropped connection removes
them; rows of a crashed process are removed at start, and an association open past
``max_association_seconds`` no longer blocks.

Real peers: a gateway process (two SCP workers, the lean path on) and the real hub; pynetdicom
as the modality.
"""

import io
import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import generate_uid
from sqlalchemy import select

from imaging_hub.dicom_gateway.spool import Spool
from imaging_hub.worklist.db.models import Study, StudyStatus
from tests.peers.hub import CLI, GatewayFactory, HubProcess
from tests.peers.mpps import Instance, ct_instances, modality
from tests.peers.net import wait_until

STABILITY = 1.0
CAP = 6 * 3600.0


def _study(hub: HubProcess, study_uid: str) -> tuple[StudyStatus, int] | None:
    with hub.sessions() as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        return (study.status, study.num_instances) if study is not None else None


def _status(env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [*CLI, "gateway", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    status: dict[str, Any] = json.loads(out.stdout)
    return status


def test_a_stalled_sender_keeps_its_study_open_until_the_release(
    hub: HubProcess, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(hub, stability_seconds=STABILITY, scp_workers=2)
    study = generate_uid()
    images = ct_instances(study, 6)
    with modality(gateway.port) as mod:
        assert [mod.store(image) for image in images[:3]] == [0, 0, 0]
        # The first instances reach the hub; the sender then stalls far past the window.
        wait_until(lambda: _study(hub, study) == (StudyStatus.receiving, 3), timeout=15)
        time.sleep(STABILITY * 3 + 1.0)
        assert _study(hub, study) == (StudyStatus.receiving, 3)
        carried = _status(gateway.env)["open_associations"]
        assert [row["study_instance_uid"] for row in carried] == [study]
        assert [mod.store(image) for image in images[3:]] == [0, 0, 0]
        wait_until(lambda: _study(hub, study) == (StudyStatus.receiving, 6), timeout=15)
        time.sleep(STABILITY * 2)
        assert _study(hub, study) == (StudyStatus.receiving, 6)  # still open: not complete
    released = time.monotonic()
    wait_until(lambda: _study(hub, study) == (StudyStatus.unread, 6), timeout=15)
    assert time.monotonic() - released >= STABILITY * 0.9  # the window starts at the release
    assert _status(gateway.env)["open_associations"] == []


def test_an_aborted_or_cut_association_frees_its_study(
    hub: HubProcess, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(hub, stability_seconds=STABILITY, scp_workers=2)
    aborted, cut = generate_uid(), generate_uid()
    with modality(gateway.port) as mod:
        assert [mod.store(image) for image in ct_instances(aborted, 2)] == [0, 0]
        mod.assoc.abort()
    with modality(gateway.port) as mod:
        assert [mod.store(image) for image in ct_instances(cut, 2)] == [0, 0]
        raw = mod.assoc.dul.socket.socket if mod.assoc.dul.socket is not None else None
        assert raw is not None
        raw.shutdown(socket.SHUT_RDWR)  # the connection drops without an A-ABORT
        wait_until(lambda: not mod.assoc.is_established, timeout=10)
    wait_until(lambda: _study(hub, aborted) == (StudyStatus.unread, 2), timeout=15)
    wait_until(lambda: _study(hub, cut) == (StudyStatus.unread, 2), timeout=15)
    assert _status(gateway.env)["open_associations"] == []


def test_a_killed_gateway_leaves_no_association_open(
    hub: HubProcess, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(hub, stability_seconds=STABILITY, scp_workers=1)
    study = generate_uid()
    with modality(gateway.port, timeout=5) as mod:
        assert [mod.store(image) for image in ct_instances(study, 2)] == [0, 0]
        assert len(_status(gateway.env)["open_associations"]) == 1
        gateway.kill()  # kill -9 with the association open
        wait_until(lambda: not mod.assoc.is_established, timeout=15)
    gateway.start()
    wait_until(lambda: _study(hub, study) == (StudyStatus.unread, 2), timeout=20)
    assert _status(gateway.env)["open_associations"] == []


# --- the spool's rules, on a spool of its own ---------------------------------------------------


def _sent(spool: Spool, study: str, images: list[Instance]) -> None:
    """*images* spooled and acknowledged by the hub (as the forwarder leaves them)."""
    for image in images:
        ds = pydicom.dcmread(io.BytesIO(image.data))
        spool.put(
            image.data,
            sop_instance_uid=image.sop_instance_uid,
            study_instance_uid=study,
            series_instance_uid=image.series_instance_uid,
            sop_class_uid=image.sop_class_uid,
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        )
    for item in spool.lease(len(images)):
        spool.ack(item.sop_instance_uid, sha256=item.sha256, sent_bytes=item.size)


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


def test_rows_of_a_gone_process_and_past_the_cap_stop_blocking(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    try:
        crashed, old, live = generate_uid(), generate_uid(), generate_uid()
        for study in (crashed, old, live):
            _sent(spool, study, ct_instances(study, 1))
            spool.association_opened(f"x:{study}", study, "CT1")
        db = sqlite3.connect(tmp_path / "spool" / "index.sqlite3")
        with db:
            db.execute(
                "UPDATE open_associations SET pid = ? WHERE study_instance_uid = ?",
                (_dead_pid(), crashed),
            )
            db.execute(
                "UPDATE open_associations SET opened_at = ? WHERE study_instance_uid = ?",
                (time.time() - 7 * 3600, old),
            )
        db.close()
        ready = {
            s.study_instance_uid for s in spool.ready_studies(0, max_association_seconds=21600)
        }
        assert ready == {old}  # past the 6 h cap: no longer blocks, even before the clean-up
        assert spool.drop_stale_associations(CAP) == 2
        ready = {
            s.study_instance_uid for s in spool.ready_studies(0, max_association_seconds=21600)
        }
        assert ready == {crashed, old}
        assert [row["study_instance_uid"] for row in spool.open_association_studies()] == [live]
        assert spool.association_closed(f"x:{live}") == [live]
        ready = {s.study_instance_uid for s in spool.ready_studies(0)}
        assert ready == {crashed, old, live}
    finally:
        spool.close()
    # Opening the spool as the gateway's main process does clears what a past run left.
    spool = Spool(tmp_path / "spool")
    try:
        spool.association_opened("y:1", generate_uid())
    finally:
        spool.close()
    reopened = Spool(tmp_path / "spool")
    try:
        assert reopened.open_association_studies() == []
    finally:
        reopened.close()
