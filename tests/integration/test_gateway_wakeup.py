"""The forwarder's wake-up across processes (``dicom_gateway/wakeup.py``).

- The socket on its own: a sender with nobody listening, a removed socket file, a full queue
  and many senders (threads and processes) never raise nor block; the listener binds again
  once its file was removed, reads a bounded number of datagrams per wake-up, removes only
  its own file; a spool path too long for ``sun_path`` works.
- A real gateway (``GatewayService`` in this process, ``scp_workers`` = 2: every association
  is taken by a worker process) and a real hub: with the forwarder's fallback poll set to 30 s,
  an instance received by a worker is at the hub within seconds and a late MPPS COMPLETED
  makes the study ``unread`` within seconds — only the socket can have woken the forwarder,
  and the test counts those wake-ups. An instance spooled while an upload is in flight is
  leased at once (free upload slots). The socket file removed while the gateway runs: the
  C-STOREs still succeed.
"""

import multiprocessing
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from imaging_hub.config import GatewaySettings
from imaging_hub.dicom_gateway.forwarder import TokenBucket
from imaging_hub.dicom_gateway.service import GatewayService
from imaging_hub.dicom_gateway.wakeup import (
    DRAIN_MAX,
    MPPS,
    SOCKET_NAME,
    STORED,
    Alarm,
    WakeListener,
    Waker,
)
from imaging_hub.worklist.db.models import Order, OrderStatus, Study, StudyStatus
from tests.peers.hub import HubProcess, _association_answered, start_hub_process
from tests.peers.mpps import create_attributes, ct_instances, final_attributes, modality, referenced
from tests.peers.net import free_port, wait_until

# --- the socket on its own ---------------------------------------------------------------------


def test_sending_with_nobody_listening_never_fails(tmp_path: Path) -> None:
    waker = Waker(tmp_path)
    started = time.monotonic()
    for _ in range(100):
        waker.stored()
        waker.mpps()
    assert time.monotonic() - started < 2
    assert waker.sent == 0 and waker.failed == 200
    # A regular file where the socket should be: refused, not raised.
    (tmp_path / SOCKET_NAME).write_bytes(b"not a socket")
    waker.stored()
    assert waker.failed == 201
    waker.close()
    waker.stored()  # closed: nothing, no error
    # A directory that does not exist.
    gone = Waker(tmp_path / "missing")
    gone.stored()
    assert gone.failed == 1
    gone.close()


def test_listener_receives_kinds_and_binds_again_after_its_file_was_removed(
    tmp_path: Path,
) -> None:
    listener = WakeListener(tmp_path)
    assert listener.open()
    path = tmp_path / SOCKET_NAME
    assert path.is_socket()
    alarm = Alarm(listener)
    waker = Waker(tmp_path)
    try:
        waker.stored()
        waker.mpps()
        assert alarm.wait(5) == MPPS + STORED
        assert alarm.socket_wakeups == 1
        assert alarm.wait(0.05) == b""  # drained
        # The file removed: the senders cannot reach it, and do not fail.
        path.unlink()
        waker.stored()
        assert waker.failed == 1
        assert alarm.wait(0.05) == b""
        listener.check()  # the forwarder's idle poll
        assert path.is_socket()
        waker.stored()
        assert alarm.wait(5) == STORED
        assert listener.received[STORED] == 2 and listener.received[MPPS] == 1
        # A wake-up of this process ends the wait too, without a datagram.
        threading.Timer(0.05, alarm.set).start()
        started = time.monotonic()
        assert alarm.wait(10) == b""
        assert time.monotonic() - started < 5
    finally:
        waker.close()
        alarm.close()
    assert not path.exists()  # removed on close


def test_listener_removes_only_its_own_file_and_replaces_a_stale_one(tmp_path: Path) -> None:
    path = tmp_path / SOCKET_NAME
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(path))  # a crashed run's socket
    stale.close()
    first = WakeListener(tmp_path)
    assert first.open()
    second = WakeListener(tmp_path)  # e.g. a second gateway started by mistake on this spool
    assert second.open()
    first.check()  # not its file any more, but there: left alone (no tug of war)
    first.close()
    assert path.is_socket()  # the second one's file stays
    waker = Waker(tmp_path)
    waker.stored()
    assert second.drain() == STORED
    second.close()
    assert not path.exists()
    waker.close()


def test_listener_cannot_bind_then_the_forwarder_only_polls(tmp_path: Path) -> None:
    listener = WakeListener(tmp_path / "missing")
    assert not listener.open()
    assert not listener.is_open and listener.drain() == b""
    alarm = Alarm(listener)
    started = time.monotonic()
    assert alarm.wait(0.1) == b""  # a plain timeout
    assert time.monotonic() - started >= 0.09
    alarm.close()


def test_a_spool_path_too_long_for_sun_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(os.fsencode(deep / SOCKET_NAME)) > 108
    listener = WakeListener(deep)
    assert listener.open()
    assert (deep / SOCKET_NAME).is_socket()
    waker = Waker(deep)
    waker.mpps()
    assert listener.drain() == MPPS
    waker.close()
    listener.close()
    assert not (deep / SOCKET_NAME).exists()


def _send_many(spool: str, count: int) -> None:
    waker = Waker(Path(spool))
    for _ in range(count):
        waker.stored()
    waker.close()


def test_many_senders_never_block_and_the_queue_is_bounded(tmp_path: Path) -> None:
    listener = WakeListener(tmp_path)
    assert listener.open()
    try:
        wakers = [Waker(tmp_path) for _ in range(8)]
        started = time.monotonic()
        threads = [
            threading.Thread(target=lambda w=w: [w.stored() for _ in range(2000)]) for w in wakers
        ]
        processes = [
            multiprocessing.get_context("spawn").Process(
                target=_send_many, args=(str(tmp_path), 2000)
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for process in processes:
            process.start()
        for thread in threads:
            thread.join(10)
        for process in processes:
            process.join(30)
            assert process.exitcode == 0
        # Nobody read meanwhile: the kernel's queue filled, the sends went on (no blocking).
        assert time.monotonic() - started < 30
        sent = sum(w.sent for w in wakers)
        failed = sum(w.failed for w in wakers)
        assert sent + failed == 16000
        assert failed > 0 and sent < 16000
        # One wake-up reads at most DRAIN_MAX of what queued; the rest wakes the next wait.
        assert listener.drain() == STORED
        assert 0 < listener.received[STORED] <= DRAIN_MAX
        while listener.drain():
            pass
        assert listener.received[STORED] <= sent + 4000
        for waker in wakers:
            waker.close()
    finally:
        listener.close()


# --- a real gateway with two SCP worker processes and a real hub -------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = start_hub_process(tmp_path_factory.mktemp("wakeup") / "hub")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def service(hub: HubProcess, tmp_path: Path) -> Iterator[GatewayService]:
    port = free_port()
    settings = GatewaySettings(
        clinic="clinic-a",
        ae_title="CLINIC_A",
        host="127.0.0.1",
        dicom_port=port,
        spool_dir=tmp_path / "spool",
        hub_url=hub.url,
        hub_token=hub.gateway_tokens["clinic-a"],
        stability_seconds=600,
        scp_workers=2,
        transcode="none",
        pull_reports=False,
        order_sync_seconds=0,
        heartbeat_seconds=600,
        retry_initial_seconds=0.2,
        retry_max_seconds=1,
    )
    gateway = GatewayService(settings)
    # Without a wake-up the forwarder and the MPPS outbox would look only every 30 s.
    gateway.forwarder.idle_poll_seconds = 30
    gateway.mpps_pusher.poll_seconds = 30
    gateway.start()
    try:
        wait_until(lambda: _association_answered(port, "CLINIC_A"), timeout=60, interval=0.2)
        yield gateway
    finally:
        gateway.stop()
    assert not (tmp_path / "spool" / SOCKET_NAME).exists()  # cleaned up


def _study(hub: HubProcess, study_uid: str) -> tuple[StudyStatus, int] | None:
    with hub.sessions() as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        return (study.status, study.num_instances) if study is not None else None


def _order(hub: HubProcess) -> dict[str, Any]:
    with hub.client("staff-a") as staff:
        response = staff.post(
            "/api/v1/orders",
            json={
                "patient_id": "WAKE-1",
                "patient_name": "Test^Wake",
                "patient_sex": "F",
                "patient_birth_date": "19800101",
                "modality": "CT",
                "reason_for_procedure": "cough",
            },
        )
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


def _order_status(hub: HubProcess, order_id: int) -> OrderStatus:
    with hub.sessions() as session:
        order = session.get(Order, order_id)
        assert order is not None
        return order.status


def test_worker_instances_and_a_late_mpps_wake_the_forwarder(
    hub: HubProcess, service: GatewayService
) -> None:
    forwarder = service.forwarder
    assert forwarder.wakeups is not None and forwarder.wakeups.is_open
    order = _order(hub)
    study, accession = order["study_instance_uid"], order["accession_number"]
    uid = generate_uid()
    images = ct_instances(study, 2, accession=accession)
    before = forwarder.socket_wakeups
    sent = time.monotonic()
    with modality(service.settings.dicom_port) as mod:
        assert mod.create(uid, create_attributes(study, accession=accession))[0] == 0
        assert [mod.store(image) for image in images] == [0, 0]
    # At the hub well before the 30 s poll: the worker's datagram woke the forwarder.
    wait_until(lambda: forwarder.forwarded == 2, timeout=10, interval=0.02)
    assert time.monotonic() - sent < 10
    assert forwarder.socket_wakeups > before
    assert forwarder.wakeups.received[STORED] >= 2 and forwarder.wakeups.received[MPPS] >= 1
    # The N-CREATE (taken by a worker) reached the hub through the woken outbox.
    wait_until(lambda: _order_status(hub, order["id"]) == OrderStatus.in_progress, timeout=10)
    # A late MPPS COMPLETED (every instance already at the hub, the forwarder idle).
    woken = forwarder.socket_wakeups
    with modality(service.settings.dicom_port) as mod:
        assert mod.set(uid, final_attributes(referenced(images)))[0] == 0
    set_at = time.monotonic()
    wait_until(lambda: _study(hub, study) == (StudyStatus.unread, 2), timeout=10, interval=0.02)
    assert time.monotonic() - set_at < 10
    assert forwarder.socket_wakeups > woken
    wait_until(lambda: _order_status(hub, order["id"]) == OrderStatus.completed, timeout=10)


def test_socket_file_removed_while_running_the_c_stores_still_succeed(
    hub: HubProcess, service: GatewayService
) -> None:
    path = service.settings.spool_dir / SOCKET_NAME
    assert path.is_socket()
    path.unlink()
    study = generate_uid()
    images = ct_instances(study, 3)
    with modality(service.settings.dicom_port) as mod:
        assert [mod.store(image) for image in images] == [0, 0, 0]
    # Nobody woke the forwarder; its poll (shortened now) finds the instances and binds again.
    service.forwarder.idle_poll_seconds = 0.2
    service.forwarder.wake()
    wait_until(lambda: service.forwarder.forwarded == 3, timeout=15, interval=0.05)
    wait_until(path.is_socket, timeout=5, interval=0.05)
    service.forwarder.idle_poll_seconds = 30
    woken = service.forwarder.socket_wakeups
    with modality(service.settings.dicom_port) as mod:
        assert mod.store(ct_instances(study, 1)[0]) == 0
    wait_until(lambda: service.forwarder.forwarded == 4, timeout=10, interval=0.02)
    assert service.forwarder.socket_wakeups > woken


def _leases(spool_dir: Path) -> dict[str, tuple[str, bool]]:
    """SOP Instance UID -> (state, leased now) from the spool index."""
    db = sqlite3.connect(spool_dir / "index.sqlite3")
    try:
        now = time.time()
        rows = db.execute("SELECT sop_instance_uid, state, lease_until FROM instances")
        return {uid: (state, lease_until > now) for uid, state, lease_until in rows}
    finally:
        db.close()


def test_an_instance_spooled_during_an_upload_is_leased_at_once(
    hub: HubProcess, service: GatewayService
) -> None:
    """Free upload slots: a wake-up leases the new instance while the first upload still runs
    (before, the forwarder waited for that upload to end)."""
    forwarder = service.forwarder
    # Every upload now waits for its bytes at 8 kB/s: the ~40 kB instance below takes ~5 s.
    bucket = TokenBucket(8_000, burst=1)
    forwarder.bucket = bucket
    study = generate_uid()
    primer, first, second = ct_instances(study, 3)
    with modality(service.settings.dicom_port) as mod:
        assert mod.store(primer) == 0  # goes at once and empties the bucket
    wait_until(lambda: forwarder.forwarded == 1, timeout=10, interval=0.02)
    with modality(service.settings.dicom_port) as mod:
        assert mod.store(first) == 0
    wait_until(lambda: _leases(service.settings.spool_dir)[first.sop_instance_uid][1], timeout=5)
    with modality(service.settings.dicom_port) as mod:
        assert mod.store(second) == 0
    leased = wait_until(
        lambda: (
            (state := _leases(service.settings.spool_dir))[second.sop_instance_uid][1] and state
        ),
        timeout=5,
        interval=0.01,
    )
    assert isinstance(leased, dict)
    # The first upload had not ended when the second instance was leased.
    assert leased[first.sop_instance_uid] == ("pending", True)
    assert forwarder.forwarded == 1
    bucket.rate = 1e9  # let both finish
    wait_until(lambda: forwarder.forwarded == 3, timeout=10, interval=0.02)
