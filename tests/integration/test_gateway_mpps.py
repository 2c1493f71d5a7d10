"""MPPS at the clinic gateway (PS3.4 F.7, docs/clinic-return.md "The flow" 3-4), with pynetdicom
as the modality.

- Against the gateway's SCP in this process (fast): N-CREATE / N-SET accepted and kept in the
  spool index with their outbox row; every bad request (unknown instance, finished step,
  duplicate create, missing or invalid attributes, an undecodable data set) answers its PS3.4
  failure status, changes nothing, and the SCP keeps serving.
- Against a running gateway and a real hub: N-CREATE, C-STORE, N-SET COMPLETED makes the study
  ``unread`` at the hub at once (the stability window is a minute), and moves the clinic's order
  to ``in_progress`` then ``completed`` through ``POST /api/v1/gateway/mpps/{uid}``; with the
  hub unreachable the modality is still answered and the states reach the hub once it is back.
"""

import sqlite3
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pydicom.uid import generate_uid
from pynetdicom import association as pynetdicom_association
from sqlalchemy import select

from imaging_hub.dicom_gateway.mpps import MppsSteps
from imaging_hub.dicom_gateway.scp import StoreHandler, make_ae, start_scp
from imaging_hub.dicom_gateway.spool import Spool
from imaging_hub.worklist.db.models import Order, OrderStatus, Study, StudyStatus
from tests.peers.hub import GatewayFactory, HubProcess
from tests.peers.mpps import (
    CT_IMAGE,
    create_attributes,
    ct_instances,
    final_attributes,
    modality,
    referenced,
)
from tests.peers.net import free_port, wait_until
from tests.peers.proxy import TcpProxy

# --- against the SCP in this process --------------------------------------------------------


class Scp:
    def __init__(self, port: int, spool: Spool, steps: MppsSteps) -> None:
        self.port = port
        self.spool = spool
        self.steps = steps

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every MPPS row of the spool index (to show that a refusal changed nothing)."""
        db = sqlite3.connect(self.spool.root / "index.sqlite3")
        try:
            return {
                table: sorted(db.execute(f"SELECT * FROM {table}").fetchall())
                for table in ("mpps_steps", "mpps_instances", "mpps_outbox")
            }
        finally:
            db.close()


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[Scp]:
    spool = Spool(tmp_path / "spool")
    handler = StoreHandler(spool, max_instance_bytes=1 << 30)
    port = free_port()
    server = start_scp(make_ae("CLINIC_A"), handler, "127.0.0.1", port, use_lean=False)
    try:
        yield Scp(port, spool, handler.mpps)
    finally:
        server.shutdown()
        spool.close()


def test_create_store_complete_is_kept_with_its_outbox(scp: Scp) -> None:
    study, uid = generate_uid(), generate_uid()
    images = ct_instances(study, 2, accession="A100")
    with modality(scp.port) as mod:
        assert mod.create(uid, create_attributes(study, accession="A100"))[0] == 0x0000
        step = scp.steps.step(uid)
        assert step is not None and step["state"] == "IN PROGRESS"
        assert step["study_instance_uid"] == study and step["accession_number"] == "A100"
        assert [item.body["status"] for item in scp.steps.outbox_due()] == ["IN PROGRESS"]
        assert [mod.store(image) for image in images] == [0x0000, 0x0000]
        status, _ = mod.set(uid, final_attributes(referenced(images)))
        assert status == 0x0000
    step = scp.steps.step(uid)
    assert step is not None and step["state"] == "COMPLETED" and step["ended_at"]
    assert step["referenced"] == sorted(image.sop_instance_uid for image in images)
    # One outbox row per step: only its last state matters.
    (item,) = scp.steps.outbox_due()
    assert item.mpps_uid == uid and item.version == 2
    assert item.body["status"] == "COMPLETED" and item.body["images"] == 2
    assert item.body["study_instance_uid"] == study and item.body["accession_number"] == "A100"
    assert item.body["performed_at"]  # ISO 8601 with the gateway's zone
    assert scp.steps.in_progress() == []
    # The study's accession number was recorded with its instances (order matching).
    db = sqlite3.connect(scp.spool.root / "index.sqlite3")
    try:
        (accession,) = db.execute(
            "SELECT accession_number FROM studies WHERE study_instance_uid = ?", (study,)
        ).fetchone()
    finally:
        db.close()
    assert accession == "A100"


def test_updates_while_in_progress_and_discontinued(scp: Scp) -> None:
    study, uid = generate_uid(), generate_uid()
    with modality(scp.port) as mod:
        assert mod.create(uid, create_attributes(study))[0] == 0x0000
        update = final_attributes({})
        del update.PerformedProcedureStepStatus  # an attribute update, still IN PROGRESS
        update.PerformedProcedureStepDescription = "CT chest, contrast"
        assert mod.set(uid, update)[0] == 0x0000
        step = scp.steps.step(uid)
        assert step is not None and step["state"] == "IN PROGRESS"
        assert step["description"] == "CT chest, contrast"
        ended = final_attributes({}, status="DISCONTINUED", reason="Patient refused")
        assert mod.set(uid, ended)[0] == 0x0000
    step = scp.steps.step(uid)
    assert step is not None and step["state"] == "DISCONTINUED"
    (item,) = scp.steps.outbox_due()
    assert item.body["status"] == "DISCONTINUED" and item.body["reason"] == "Patient refused"


def test_create_without_an_instance_uid_gets_one(scp: Scp) -> None:
    with modality(scp.port) as mod:
        status, answer = mod.create(None, create_attributes(generate_uid()))
    assert status == 0x0000
    assert answer is not None
    (row,) = scp.snapshot()["mpps_steps"]
    assert row[0].startswith("2.25.")


@contextmanager
def quietly() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _refusal(scp: Scp, send: Any, expected: int, *, error_id: int | None = None) -> None:
    """*send* (on a fresh association) answers *expected*, nothing changes, C-ECHO still works."""
    before = scp.snapshot()
    with modality(scp.port) as mod:
        with quietly():  # pydicom warns of the invalid values it is asked to send
            status, answer = send(mod)
        assert status == expected, hex(status)
        if error_id is not None:
            assert answer is not None and answer.get("ErrorID") == error_id
        assert mod.echo() == 0x0000  # the same association goes on
    assert scp.snapshot() == before
    with modality(scp.port) as mod:  # and the SCP serves the next one
        assert mod.echo() == 0x0000


def test_bad_requests_answer_their_status_and_change_nothing(scp: Scp) -> None:
    study, uid, done, stopped = generate_uid(), generate_uid(), generate_uid(), generate_uid()
    with modality(scp.port) as mod:
        assert mod.create(uid, create_attributes(study))[0] == 0x0000
        assert mod.create(done, create_attributes(study))[0] == 0x0000
        assert mod.set(done, final_attributes({generate_uid(): []}))[0] == 0x0000
        assert mod.create(stopped, create_attributes(study))[0] == 0x0000
        assert mod.set(stopped, final_attributes({}, status="DISCONTINUED"))[0] == 0x0000

    # N-SET of an instance the gateway does not know: 0x0112 No Such Object Instance.
    _refusal(scp, lambda m: m.set(generate_uid(), final_attributes({})), 0x0112)
    # A finished step may no longer be updated: 0x0110 with Error ID 0xA710 (F.7.2.2.4).
    _refusal(scp, lambda m: m.set(done, final_attributes({})), 0x0110, error_id=0xA710)
    _refusal(
        scp,
        lambda m: m.set(stopped, final_attributes({generate_uid(): []})),
        0x0110,
        error_id=0xA710,
    )
    # Duplicate N-CREATE: 0x0111.
    _refusal(scp, lambda m: m.create(uid, create_attributes(study)), 0x0111)

    def without(keyword: str) -> Any:
        ds = create_attributes(study)
        delattr(ds, keyword)
        return lambda m: m.create(generate_uid(), ds)

    def with_value(keyword: str, value: Any) -> Any:
        ds = create_attributes(study)
        with quietly():
            setattr(ds, keyword, value)
        return lambda m: m.create(generate_uid(), ds)

    # A missing Type 1 attribute: 0x0120; present without a value: 0x0121.
    _refusal(scp, without("ScheduledStepAttributesSequence"), 0x0120)
    _refusal(scp, without("PerformedProcedureStepStatus"), 0x0120)
    _refusal(scp, with_value("Modality", ""), 0x0121)
    _refusal(scp, with_value("PerformedStationAETitle", ""), 0x0121)
    # Invalid values: 0x0106 (a new step that is not IN PROGRESS, a bad UID, a bad date).
    _refusal(scp, with_value("PerformedProcedureStepStatus", "COMPLETED"), 0x0106)
    _refusal(scp, with_value("PerformedProcedureStepStartDate", "20241345"), 0x0106)
    with quietly():
        bad_uid = create_attributes("1.2.abc")
    _refusal(scp, lambda m: m.create(generate_uid(), bad_uid), 0x0106)
    _refusal(scp, lambda m: m.create("1.2.3.x", create_attributes(study)), 0x0106)

    # N-SET: an unknown status, a COMPLETED step without its end time or performed series.
    bad_status = final_attributes({})
    bad_status.PerformedProcedureStepStatus = "DONE"
    _refusal(scp, lambda m: m.set(uid, bad_status), 0x0106)
    _refusal(scp, lambda m: m.set(generate_uid(), bad_status), 0x0112)  # unknown comes first
    no_end = final_attributes({generate_uid(): []})
    no_end.PerformedProcedureStepEndDate = ""
    no_end.PerformedProcedureStepEndTime = ""
    _refusal(scp, lambda m: m.set(uid, no_end), 0x0121)
    _refusal(scp, lambda m: m.set(uid, final_attributes({})), 0x0120)
    with quietly():
        bad_reference = final_attributes({generate_uid(): [(CT_IMAGE, "1.2.03.x")]})
    _refusal(scp, lambda m: m.set(uid, bad_reference), 0x0106)
    step = scp.steps.step(uid)
    assert step is not None and step["state"] == "IN PROGRESS"


def test_an_undecodable_data_set_is_refused(scp: Scp, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes that are no data set at all: a failure status, nothing stored, serving goes on."""
    garbage = b"\x40\x00\x70\x02SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\x10\x00\x00\x00junk"
    monkeypatch.setattr(pynetdicom_association, "encode", lambda *args: garbage)
    before = scp.snapshot()
    with modality(scp.port) as mod:
        status, _ = mod.create(generate_uid(), create_attributes(generate_uid()))
        assert status == 0x0110, hex(status)  # Processing Failure: nothing to read
        status, _ = mod.set(generate_uid(), final_attributes({}))
        assert status == 0x0110, hex(status)
        # Three bytes: nothing pydicom can make an element of, so nothing at all is there.
        monkeypatch.setattr(pynetdicom_association, "encode", lambda *args: b"\x01\x02\x03")
        status, _ = mod.create(generate_uid(), create_attributes(generate_uid()))
        assert status in (0x0110, 0x0120), hex(status)
        assert mod.echo() == 0x0000
    monkeypatch.undo()
    assert scp.snapshot() == before
    with modality(scp.port) as mod:
        assert mod.echo() == 0x0000


# --- against a running gateway and a real hub ---------------------------------------------------


def _order(hub: HubProcess) -> dict[str, Any]:
    with hub.client("staff-a") as staff:
        response = staff.post(
            "/api/v1/orders",
            json={
                "patient_id": "MPPS-1",
                "patient_name": "Test^Mpps",
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


def _study(hub: HubProcess, study_uid: str) -> tuple[StudyStatus, int] | None:
    with hub.sessions() as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        return (study.status, study.num_instances) if study is not None else None


@pytest.mark.parametrize("workers", [1, 2])
def test_mpps_completed_makes_the_study_unread_at_once(
    hub: HubProcess, start_gateway: GatewayFactory, workers: int
) -> None:
    """With one SCP process the N-SET wakes the forwarder; with two (the N-SET handled in a
    worker process) the forwarder and the outbox find it within half a second."""
    gateway = start_gateway(hub, stability_seconds=60, scp_workers=workers)
    order = _order(hub)
    study, accession = order["study_instance_uid"], order["accession_number"]
    uid = generate_uid()
    images = ct_instances(study, 3, accession=accession)
    with modality(gateway.port) as mod:
        assert mod.create(uid, create_attributes(study, accession=accession))[0] == 0
        wait_until(lambda: _order_status(hub, order["id"]) == OrderStatus.in_progress, timeout=10)
        assert [mod.store(image) for image in images] == [0, 0, 0]
    with modality(gateway.port) as mod:
        assert mod.set(uid, final_attributes(referenced(images)))[0] == 0
    set_at = time.monotonic()
    wait_until(lambda: _study(hub, study) == (StudyStatus.unread, 3), timeout=15)
    # Far sooner than the stability window (60 s): MPPS COMPLETED with its images at the hub.
    assert time.monotonic() - set_at < 10
    wait_until(lambda: _order_status(hub, order["id"]) == OrderStatus.completed, timeout=10)
    # Logged once the hub answered the complete call, which may be after the test saw `unread`.
    wait_until(lambda: "forwarded (mpps)" in gateway.log_path.read_text(), timeout=5)


def test_mpps_is_answered_while_the_hub_is_down_and_delivered_after(
    hub: HubProcess, start_gateway: GatewayFactory
) -> None:
    proxy = TcpProxy(hub.port)
    proxy.start()
    # The gateway reaches the hub through the proxy (what start_gateway reads of a hub).
    gateway_hub = cast(
        HubProcess,
        SimpleNamespace(url=f"http://127.0.0.1:{proxy.port}", gateway_tokens=hub.gateway_tokens),
    )
    try:
        gateway = start_gateway(gateway_hub, stability_seconds=60)
        order = _order(hub)
        study, accession = order["study_instance_uid"], order["accession_number"]
        proxy.cut()  # the WAN is down
        uid = generate_uid()
        images = ct_instances(study, 2, accession=accession)
        with modality(gateway.port) as mod:
            assert mod.create(uid, create_attributes(study, accession=accession))[0] == 0
            assert [mod.store(image) for image in images] == [0, 0]
            assert mod.set(uid, final_attributes(referenced(images)))[0] == 0
        time.sleep(1.0)
        assert _order_status(hub, order["id"]) == OrderStatus.scheduled
        assert _study(hub, study) is None
        proxy = TcpProxy(hub.port, port=proxy.port)
        proxy.start()  # back (the gateway retries within retry_max_seconds = 2 s)
        wait_until(lambda: _order_status(hub, order["id"]) == OrderStatus.completed, timeout=20)
        wait_until(lambda: _study(hub, study) == (StudyStatus.unread, 2), timeout=20)
    finally:
        proxy.cut()
