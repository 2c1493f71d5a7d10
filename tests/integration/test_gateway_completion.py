"""The completion triggers of the gateway's forwarder against the real hub (docs/clinic-return.md,
"The flow" 4): MPPS COMPLETED with every referenced instance at the hub, the order done, the
order's expected image count reached (matched by StudyInstanceUID, else accession number), else
the stability window; never while an association carrying the study is open. The order cache is
a provider the test passes (``OrderHint`` as ``mwl.OrderCache.hints()`` gives them); the spool
and the forwarder run in this process, the hub is a real one.
"""

import io
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from imaging_hub.dicom_gateway.forwarder import Forwarder
from imaging_hub.dicom_gateway.hub_client import HubClient
from imaging_hub.dicom_gateway.mpps import MppsSteps
from imaging_hub.dicom_gateway.spool import Spool
from imaging_hub.worklist.db.models import Study, StudyStatus
from tests.peers.hub import HubProcess, start_hub_process
from tests.peers.mpps import Instance, create_attributes, ct_instances, final_attributes, referenced


@dataclass(frozen=True)
class Hint:
    study_instance_uid: str
    accession_number: str
    expected_images: int
    done: bool


class Hints:
    def __init__(self) -> None:
        self.items: list[Hint] = []
        self.broken = False

    def hints(self) -> list[Hint]:
        if self.broken:
            raise OSError("orders.sqlite is unreadable")
        return list(self.items)


@dataclass
class Site:
    hub: HubProcess
    spool: Spool
    hints: Hints
    forwarder: Forwarder
    steps: MppsSteps

    def put(self, images: list[Instance], study: str, accession: str = "") -> None:
        for image in images:
            ds = pydicom.dcmread(io.BytesIO(image.data))
            self.spool.put(
                image.data,
                sop_instance_uid=image.sop_instance_uid,
                study_instance_uid=study,
                series_instance_uid=image.series_instance_uid,
                sop_class_uid=image.sop_class_uid,
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                accession_number=accession,
            )

    def status(self, study: str) -> tuple[StudyStatus, int] | None:
        with self.hub.sessions() as session:
            row = session.scalar(select(Study).where(Study.study_instance_uid == study))
            return (row.status, row.num_instances) if row is not None else None

    def turn(self, seconds: float = 0.0) -> None:
        """Forwarder turns (uploads, then the completion step) for about *seconds*."""
        end = time.monotonic() + seconds
        self.forwarder.run_once()
        while time.monotonic() < end:
            time.sleep(0.1)
            self.forwarder.run_once()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub for the module (each test uses studies of its own)."""
    process = start_hub_process(tmp_path_factory.mktemp("completion") / "hub")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def site(hub: HubProcess, tmp_path: Path) -> Iterator[Site]:
    spool = Spool(tmp_path / "spool")
    client = HubClient(hub.url, hub.gateway_tokens["clinic-a"])
    hints = Hints()
    forwarder = Forwarder(
        spool=spool,
        client=client,
        stability_seconds=600,  # never within a test unless it says otherwise
        retry_initial_seconds=0.1,
        retry_max_seconds=0.5,
        order_hints=hints,
    )
    try:
        yield Site(hub, spool, hints, forwarder, MppsSteps(spool.index))
    finally:
        forwarder._pool.shutdown(wait=True)  # its thread never started: the test drives it
        client.close()
        spool.close()


def test_order_done_completes_at_once_and_nothing_else_does(site: Site) -> None:
    done, other = generate_uid(), generate_uid()
    site.put(ct_instances(done, 2), done)
    site.put(ct_instances(other, 2), other)
    site.hints.items = [Hint(done, "", 0, True), Hint(other, "", 5, False)]
    site.turn()
    assert site.status(done) == (StudyStatus.unread, 2)
    assert site.status(other) == (StudyStatus.receiving, 2)  # 2 of 5 expected, not done


def test_expected_images_by_accession_number(site: Site) -> None:
    study = generate_uid()
    images = ct_instances(study, 3, accession="ACC-3")
    # The order knows the study by another UID (a modality that made its own): accession.
    site.hints.items = [Hint(generate_uid(), "ACC-3", 3, False)]
    site.put(images[:2], study, "ACC-3")
    site.turn()
    assert site.status(study) == (StudyStatus.receiving, 2)
    site.put(images[2:], study, "ACC-3")
    site.turn()
    assert site.status(study) == (StudyStatus.unread, 3)


def test_an_open_association_holds_back_every_trigger(site: Site) -> None:
    study = generate_uid()
    site.spool.association_opened("test:1", study, "CT1")
    site.put(ct_instances(study, 2), study)
    site.hints.items = [Hint(study, "", 2, True)]
    site.turn(0.5)
    assert site.status(study) == (StudyStatus.receiving, 2)
    assert site.spool.association_closed("test:1") == [study]
    site.turn()
    assert site.status(study) == (StudyStatus.unread, 2)


def test_mpps_completed_waits_for_every_referenced_instance(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    study, uid = generate_uid(), generate_uid()
    images = ct_instances(study, 3)
    assert site.steps.create(uid, create_attributes(study)).ok
    assert site.steps.update(uid, final_attributes(referenced(images))).ok
    # The order is done (its MPPS COMPLETED reached the hub) and expects more than arrived:
    # the step exists, so MPPS decides, not the order.
    site.hints.items = [Hint(study, "", 5, True)]
    site.put(images[:2], study)
    site.turn(0.3)
    assert site.status(study) == (StudyStatus.receiving, 2)
    site.put(images[2:], study)
    with caplog.at_level(logging.INFO, logger="imaging_hub.dicom_gateway.forwarder"):
        site.turn()
    assert site.status(study) == (StudyStatus.unread, 3)
    assert f"study {study} forwarded (mpps)" in caplog.text


def test_expected_images_also_complete_a_study_with_mpps(site: Site) -> None:
    """A machine that sends IN PROGRESS and never N-SET: the order's image count still works."""
    study, uid = generate_uid(), generate_uid()
    assert site.steps.create(uid, create_attributes(study)).ok
    site.hints.items = [Hint(study, "", 2, False)]
    site.put(ct_instances(study, 2), study)
    site.turn()
    assert site.status(study) == (StudyStatus.unread, 2)


def test_discontinued_and_in_progress_complete_by_the_stability_window(site: Site) -> None:
    stopped, running = generate_uid(), generate_uid()
    for study, state in ((stopped, "DISCONTINUED"), (running, "IN PROGRESS")):
        uid = generate_uid()
        images = ct_instances(study, 2)
        assert site.steps.create(uid, create_attributes(study)).ok
        if state == "DISCONTINUED":
            ended = final_attributes(referenced(images), status="DISCONTINUED", reason="Moved")
            assert site.steps.update(uid, ended).ok
        site.put(images, study)
        site.hints.items.append(Hint(study, "", 3, True))  # done, 3 expected, 2 arrived
    site.turn(0.3)
    assert site.status(stopped) == (StudyStatus.receiving, 2)
    assert site.status(running) == (StudyStatus.receiving, 2)
    site.forwarder.stability_seconds = 0.5  # the images that arrived still make a study
    site.turn(0.8)
    assert site.status(stopped) == (StudyStatus.unread, 2)
    assert site.status(running) == (StudyStatus.unread, 2)


def test_an_unreadable_order_cache_leaves_the_stability_window(site: Site) -> None:
    study = generate_uid()
    site.put(ct_instances(study, 1), study)
    site.hints.broken = True
    site.turn(0.2)
    assert site.status(study) == (StudyStatus.receiving, 1)
    site.forwarder.stability_seconds = 0.2
    site.turn(0.5)
    assert site.status(study) == (StudyStatus.unread, 1)


def test_finished_steps_the_hub_has_are_forgotten_with_the_retention(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    steps = MppsSteps(spool.index)
    try:
        delivered, waiting, running, abandoned = (generate_uid() for _ in range(4))
        for uid in (delivered, waiting, running, abandoned):
            assert steps.create(uid, create_attributes(generate_uid())).ok
        for uid in (delivered, waiting):
            done = final_attributes(referenced(ct_instances(generate_uid(), 1)))
            assert steps.update(uid, done).ok
        for item in steps.outbox_due():
            if item.mpps_uid != waiting:
                assert steps.outbox_sent(item)
        with spool.index.tx() as db:
            db.execute("UPDATE mpps_steps SET updated_at = updated_at - 3600")
            db.execute(
                "UPDATE mpps_steps SET updated_at = updated_at - 8 * 86400 WHERE mpps_uid = ?",
                (abandoned,),
            )
        spool.purge_forwarded(older_than_seconds=60)
        assert steps.step(delivered) is None  # ended, at the hub, past the retention
        assert steps.step(abandoned) is None  # IN PROGRESS for more than a week
        assert steps.step(waiting) is not None  # its last state is not at the hub yet
        assert steps.step(running) is not None  # IN PROGRESS for an hour
        with spool.index.lock:
            left = spool.index.db.execute("SELECT DISTINCT mpps_uid FROM mpps_instances").fetchall()
        assert left == [(waiting,)]
    finally:
        spool.close()
