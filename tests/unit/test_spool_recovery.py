"""The spool after a power cut: fsync'd instance files whose index rows were lost come back.

The index runs with ``synchronous=NORMAL``; what a power cut can take is the last commits. The
test removes rows (what a lost commit looks like) and reopens the spool as the gateway would.
"""

import hashlib
import io
import sqlite3
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from imaging_hub.dicom_gateway.spool import Spool
from tests.conftest import SAMPLES

SAMPLE = SAMPLES / "by-modality" / "MR" / "MR_small.dcm"


def _put(spool: Spool, data: bytes) -> str:
    ds = pydicom.dcmread(SAMPLE, stop_before_pixels=True)
    spool.put(
        data,
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
    )
    return str(ds.SOPInstanceUID)


def _forget_all_rows(root: Path) -> None:
    db = sqlite3.connect(root / "index.sqlite3")
    db.execute("DELETE FROM instances")
    db.commit()
    db.close()


def test_files_without_rows_are_queued_again_on_open(tmp_path: Path) -> None:
    data = SAMPLE.read_bytes()
    spool = Spool(tmp_path)
    uid = _put(spool, data)
    spool.close()
    _forget_all_rows(tmp_path)

    reopened = Spool(tmp_path)
    try:
        assert reopened.reindexed == 1
        [item] = reopened.lease(10)
        assert item.sop_instance_uid == uid
        assert item.sha256 == hashlib.sha256(data).hexdigest()
        assert item.size == len(data)
        assert reopened.read(item) == data
    finally:
        reopened.close()
    # known files are not indexed twice
    again = Spool(tmp_path)
    assert again.reindexed == 0
    again.close()


def test_unreadable_or_misnamed_files_stay_unqueued(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    uid = _put(spool, SAMPLE.read_bytes())
    spool.close()
    _forget_all_rows(tmp_path)
    [study_dir] = (tmp_path / "objects").iterdir()
    (study_dir / "1.2.3.4.dcm").write_bytes(b"not DICOM at all")
    (study_dir / f"{uid}.dcm").rename(study_dir / "1.2.3.5.dcm")  # name != content

    reopened = Spool(tmp_path)
    try:
        assert reopened.reindexed == 0
        assert reopened.lease(10) == []
    finally:
        reopened.close()


def test_worker_processes_do_not_reindex(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    _put(spool, SAMPLE.read_bytes())
    spool.close()
    _forget_all_rows(tmp_path)
    worker = Spool(tmp_path, clean_tmp=False)
    try:
        assert worker.reindexed == 0
        assert worker.lease(10) == []
    finally:
        worker.close()


def _put_with_priority(spool: Spool, priority: str | None, rank: int) -> str:
    """An instance of a new study whose header requests *priority* (None: no request)."""
    ds = pydicom.dcmread(SAMPLE)
    ds.StudyInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if priority is not None:
        ds.RequestedProcedurePriority = priority
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    spool.put(
        out.getvalue(),
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        priority=rank,
    )
    return str(ds.StudyInstanceUID)


def test_reindexing_keeps_each_study_priority(tmp_path: Path) -> None:
    """Issue 12, defect 2: after a power cut took the index rows, a STAT study keeps its place
    (the priority is read back from the file's header, as at C-STORE)."""
    spool = Spool(tmp_path)
    routine = _put_with_priority(spool, None, 2)
    urgent = _put_with_priority(spool, "HIGH", 1)
    stat = _put_with_priority(spool, "STAT", 0)
    spool.close()
    db = sqlite3.connect(tmp_path / "index.sqlite3")
    db.execute("DELETE FROM instances")
    db.execute("DELETE FROM studies")
    db.commit()
    db.close()

    reopened = Spool(tmp_path)
    try:
        assert reopened.reindexed == 3
        order = [i.study_instance_uid for i in reopened.lease(10)]
        assert order == [stat, urgent, routine]
        with sqlite3.connect(tmp_path / "index.sqlite3") as check:
            priorities = dict(
                check.execute("SELECT study_instance_uid, priority FROM studies").fetchall()
            )
        assert priorities == {stat: 0, urgent: 1, routine: 2}
    finally:
        reopened.close()
