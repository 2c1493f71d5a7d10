"""Spool retention: forwarded copies are deleted once the hub confirmed their study and the
retention passed; nothing pending, failed or unconfirmed is ever deleted."""

import hashlib
import sqlite3
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from imaging_hub.dicom_gateway.spool import Spool
from tests.conftest import SAMPLES

SAMPLE = SAMPLES / "by-modality" / "MR" / "MR_small.dcm"


def _put(spool: Spool, study: str) -> tuple[str, Path]:
    ds = pydicom.dcmread(SAMPLE)
    ds.StudyInstanceUID = study
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = spool.root.parent / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path)
    data = path.read_bytes()
    spool.put(
        data,
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=study,
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
    )
    return str(ds.SOPInstanceUID), spool.objects / study / f"{ds.SOPInstanceUID}.dcm"


def _send(spool: Spool, *sop_uids: str) -> None:
    """Lease what is queued, acknowledge *sop_uids* as the forwarder does, release the rest."""
    items = spool.lease(100)
    for item in items:
        if item.sop_instance_uid in sop_uids:
            spool.ack(item.sop_instance_uid, sha256=item.sha256, sent_bytes=item.size)
    spool.release_leases()
    assert {i.sop_instance_uid for i in items} >= set(sop_uids)


def _confirm(spool: Spool, study: str, *, hours_ago: float) -> None:
    spool.mark_study_done(study)
    with sqlite3.connect(spool.root / "index.sqlite3") as db:
        db.execute(
            "UPDATE studies SET completed_at = ? WHERE study_instance_uid = ?",
            (time.time() - hours_ago * 3600, study),
        )


def test_only_confirmed_forwarded_copies_past_retention_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    try:
        old, recent, unconfirmed = generate_uid(), generate_uid(), generate_uid()
        sent_old, sent_old_path = _put(spool, old)
        sent_old_size = sent_old_path.stat().st_size
        pending_old, pending_old_path = _put(spool, old)  # a late instance, not sent yet
        sent_recent, sent_recent_path = _put(spool, recent)
        sent_unconfirmed, unconfirmed_path = _put(spool, unconfirmed)
        _send(spool, sent_old, sent_recent, sent_unconfirmed)
        _confirm(spool, old, hours_ago=200)
        _confirm(spool, recent, hours_ago=1)

        freed, freed_bytes = spool.purge_forwarded(older_than_seconds=168 * 3600)

        assert (freed, freed_bytes) == (1, sent_old_size)
        assert not sent_old_path.exists()
        assert pending_old_path.exists() and sent_recent_path.exists() and unconfirmed_path.exists()
        assert [i.sop_instance_uid for i in spool.lease(100)] == [pending_old]
        with sqlite3.connect(spool.root / "index.sqlite3") as db:
            rows = {r[0] for r in db.execute("SELECT sop_instance_uid FROM instances")}
        assert rows == {pending_old, sent_recent, sent_unconfirmed}
    finally:
        spool.close()


def test_a_fully_purged_study_leaves_the_index_and_the_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    try:
        study = generate_uid()
        uids = [_put(spool, study)[0] for _ in range(2)]
        _send(spool, *uids)
        _confirm(spool, study, hours_ago=0.01)
        assert spool.purge_forwarded(older_than_seconds=0)[0] == 2
        assert not (spool.objects / study).exists()
        assert spool.study_progress() == []
        assert spool.stats().pending == 0
        # The same instance sent again later is a new arrival, queued and forwarded again.
        again, path = _put(spool, study)
        assert path.exists()
        assert [i.sop_instance_uid for i in spool.lease(10)] == [again]
    finally:
        spool.close()


def test_a_file_replaced_during_the_purge_is_kept(tmp_path: Path) -> None:
    """If the modality re-sends the instance in the instant between the row's deletion and the
    file's, the new bytes are put back, not deleted."""
    spool = Spool(tmp_path / "spool")
    try:
        _, path = _put(spool, generate_uid())
        sent_sha = hashlib.sha256(path.read_bytes()).hexdigest()
        path.write_bytes(b"a newer version of the instance")
        assert spool.files.remove_if_unchanged(path, sent_sha) is False
        assert path.read_bytes() == b"a newer version of the instance"
        assert not list(spool.tmp.iterdir())
        assert spool.files.remove_if_unchanged(path, hashlib.sha256(path.read_bytes()).hexdigest())
        assert not path.exists()
    finally:
        spool.close()


def test_totals_never_go_down(tmp_path: Path) -> None:
    """Issue 12, defect 3: the totals since the spool was created (Prometheus counters) stay
    where they were when the purge deletes forwarded rows, when a sent instance is queued
    again, and when an instance is replaced by a changed copy."""
    spool = Spool(tmp_path / "spool")
    try:
        study = generate_uid()
        uids = [_put(spool, study)[0] for _ in range(3)]
        _send(spool, *uids)
        _confirm(spool, study, hours_ago=1)
        before = spool.totals()
        assert before["received"] == 3 and before["forwarded"] == 3
        assert before["forwarded_bytes"] == before["received_bytes"] > 0

        assert spool.purge_forwarded(older_than_seconds=0)[0] == 3
        assert spool.totals() == before

        # A second study: sent, then reported missing by the hub and queued again.
        other = generate_uid()
        sop, _ = _put(spool, other)
        _send(spool, sop)
        sent = spool.totals()
        assert spool.requeue([sop], error="The hub misses 1 instances.") == 1
        assert spool.totals() == sent
        # Sent again: one more forwarded.
        _send(spool, sop)
        assert spool.totals()["forwarded"] == sent["forwarded"] + 1
        for key, value in sent.items():
            assert spool.totals()[key] >= value
    finally:
        spool.close()


def test_metrics_counters_do_not_decrease_after_the_purge(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from imaging_hub.dicom_gateway.metrics import gateway_registry

    def counters() -> dict[str, float]:
        text = generate_latest(gateway_registry(spool, None)).decode()
        return {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line.endswith(tuple("0123456789")) and "_total " in line
        }

    spool = Spool(tmp_path / "spool")
    try:
        study = generate_uid()
        uids = [_put(spool, study)[0] for _ in range(2)]
        _send(spool, *uids)
        _confirm(spool, study, hours_ago=1)
        before = counters()
        assert before["imaging_hub_gateway_received_instances_total"] == 2
        assert before["imaging_hub_gateway_forwarded_instances_total"] == 2
        spool.purge_forwarded(older_than_seconds=0)
        after = counters()
        assert after == before
    finally:
        spool.close()
