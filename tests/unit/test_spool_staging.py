"""The spool's two-phase write: stage (a synced write in the background), then commit/discard.

The C-STORE handler stages the received bytes before it checks them, so a refused instance must
leave nothing behind, and a write that failed must fail the commit (no Success, no index row).
"""

import errno
import hashlib
import logging
import os
import sqlite3
from pathlib import Path

import pydicom
import pytest

from imaging_hub.dicom_gateway.spool import DIRECT_ALIGNMENT, Spool
from imaging_hub.errors import SpoolError
from tests.conftest import SAMPLES

SAMPLE = SAMPLES / "by-modality" / "MR" / "MR_small.dcm"


def _meta(data: bytes) -> dict[str, str]:
    ds = pydicom.dcmread(SAMPLE, stop_before_pixels=True)
    return {
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "study_instance_uid": str(ds.StudyInstanceUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "sop_class_uid": str(ds.SOPClassUID),
        "transfer_syntax_uid": str(ds.file_meta.TransferSyntaxUID),
    }


def _rows(root: Path) -> int:
    with sqlite3.connect(root / "index.sqlite3") as db:
        count: int = db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
    return count


def test_commit_makes_the_staged_bytes_the_spooled_instance(tmp_path: Path) -> None:
    data = SAMPLE.read_bytes()
    spool = Spool(tmp_path)
    try:
        meta = _meta(data)
        assert spool.commit(spool.stage(data), **meta) is True
        stored = tmp_path / "objects" / meta["study_instance_uid"]
        assert (stored / f"{meta['sop_instance_uid']}.dcm").read_bytes() == data
        assert not list((tmp_path / "tmp").iterdir())
        assert _rows(tmp_path) == 1
        # The same bytes again: nothing replaced, the staged copy dropped.
        assert spool.commit(spool.stage(data), **meta) is False
        assert not list((tmp_path / "tmp").iterdir())
    finally:
        spool.close()


def test_discard_leaves_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    try:
        spool.discard(spool.stage(b"refused bytes" * 1000))
        assert not list((tmp_path / "tmp").iterdir())
        assert not list((tmp_path / "objects").iterdir())
        assert _rows(tmp_path) == 0
    finally:
        spool.close()


def test_a_failed_write_fails_the_commit_and_indexes_nothing(tmp_path: Path) -> None:
    data = SAMPLE.read_bytes()
    spool = Spool(tmp_path)
    try:
        spool.files.tmp = tmp_path / "gone"  # the staging directory vanished: os.open fails
        with pytest.raises(SpoolError):
            spool.commit(spool.stage(data), **_meta(data))
        assert _rows(tmp_path) == 0
        assert not list((tmp_path / "objects").rglob("*.dcm"))
    finally:
        spool.close()


def test_commit_with_a_hostile_uid_drops_the_staged_copy(tmp_path: Path) -> None:
    data = SAMPLE.read_bytes()
    spool = Spool(tmp_path)
    try:
        meta = {**_meta(data), "study_instance_uid": "../../etc"}
        with pytest.raises(Exception, match="StudyInstanceUID"):
            spool.commit(spool.stage(data), **meta)
        assert not list((tmp_path / "tmp").iterdir())
        assert _rows(tmp_path) == 0
    finally:
        spool.close()


def test_staged_parts_become_one_file_hashed_as_a_whole(tmp_path: Path) -> None:
    """The C-STORE handler stages the Part-10 header and the data set as received (no copy
    joining them); the file and its recorded SHA-256 are those of the whole."""
    data = SAMPLE.read_bytes()
    spool = Spool(tmp_path)
    try:
        meta = _meta(data)
        staged = spool.stage(data[:300], data[300:])
        assert staged.size == len(data)
        assert staged.sha256 == hashlib.sha256(data).hexdigest()
        assert spool.commit(staged, **meta) is True
        study = tmp_path / "objects" / meta["study_instance_uid"]
        assert (study / f"{meta['sop_instance_uid']}.dcm").read_bytes() == data
        with sqlite3.connect(tmp_path / "index.sqlite3") as db:
            (digest,) = db.execute("SELECT sha256 FROM instances").fetchone()
        assert digest == hashlib.sha256(data).hexdigest()
    finally:
        spool.close()


@pytest.mark.parametrize(("direct_io", "chunk"), [(False, 777), (True, 2 * DIRECT_ALIGNMENT)])
def test_short_writes_are_continued_until_the_whole_file_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct_io: bool, chunk: int
) -> None:
    """writev may write less than asked (interrupted by a signal, say): the rest follows.
    (A direct write is cut at a block boundary, as the kernel would.)"""
    real_writev = os.writev
    calls: list[int] = []

    def short_writev(fd: int, buffers: list[memoryview]) -> int:
        first = buffers[0][:chunk]
        calls.append(len(first))
        return real_writev(fd, [first])

    monkeypatch.setattr(os, "writev", short_writev)
    data = SAMPLE.read_bytes()
    spool = Spool(tmp_path, direct_io=direct_io)
    try:
        staged = spool.stage(data[:100], b"", data[100:])
        staged.done.result()
        assert staged.path.read_bytes() == data
        assert len(calls) > len(data) // chunk
        assert spool.direct_io is direct_io  # no fall-back happened
    finally:
        spool.close()


@pytest.mark.parametrize(
    "size", [1, DIRECT_ALIGNMENT - 1, DIRECT_ALIGNMENT, DIRECT_ALIGNMENT + 1, 3_000_001]
)
def test_direct_io_writes_exactly_the_staged_bytes(tmp_path: Path, size: int) -> None:
    """Whole blocks go by direct I/O, the partial last block through the cache: the file is
    the parts, byte for byte, whatever the size (this file system has direct I/O)."""
    data = os.urandom(size)
    spool = Spool(tmp_path)
    try:
        for split in (0, size // 3, size):
            staged = spool.stage(data[:split], data[split:])
            staged.done.result()
            assert staged.path.read_bytes() == data
            spool.discard(staged)
        assert spool.direct_io is True
    finally:
        spool.close()


def test_a_file_system_without_direct_io_is_written_through_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where opening with O_DIRECT fails with EINVAL (NFS, some FUSE file systems; simulated
    here, the test machine's file systems all have direct I/O), the spool switches to buffered
    O_DSYNC writes once, and stores the instance all the same."""
    from imaging_hub.dicom_gateway.spool import files as spool_module

    attempts: list[Path] = []

    def no_direct_io(path: Path, parts: tuple[bytes, ...]) -> None:
        attempts.append(path)
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(spool_module, "_write_direct", no_direct_io)
    data = SAMPLE.read_bytes()
    spool = Spool(tmp_path)
    try:
        meta = _meta(data)
        with caplog.at_level(logging.INFO):
            assert spool.commit(spool.stage(data), **meta) is True
        study = tmp_path / "objects" / meta["study_instance_uid"]
        assert (study / f"{meta['sop_instance_uid']}.dcm").read_bytes() == data
        assert spool.direct_io is False and len(attempts) == 1
        assert "direct I/O" in caplog.text
        spool.discard(spool.stage(data))
        assert len(attempts) == 1  # not tried again
    finally:
        spool.close()


def test_a_direct_write_that_fails_otherwise_fails_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error is not a missing feature: no fall-back, no Success, nothing indexed."""
    from imaging_hub.dicom_gateway.spool import files as spool_module

    def failing_disk(path: Path, parts: tuple[bytes, ...]) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(spool_module, "_write_direct", failing_disk)
    data = SAMPLE.read_bytes()
    spool = Spool(tmp_path)
    try:
        with pytest.raises(SpoolError):
            spool.commit(spool.stage(data), **_meta(data))
        assert spool.direct_io is True
        assert _rows(tmp_path) == 0
        assert not list((tmp_path / "objects").rglob("*.dcm"))
    finally:
        spool.close()


def test_a_large_instance_gets_a_buffer_of_its_own_and_the_kept_one_stays_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imaging_hub.dicom_gateway.spool import files as spool_module

    monkeypatch.setattr(spool_module, "KEPT_DIRECT_BUFFER_BYTES", 1024 * 1024)
    small, large = os.urandom(10_000), os.urandom(3_000_001)
    spool_module._write_direct(tmp_path / "small", (small,))
    kept = spool_module._direct_buffers.memory  # this thread's
    assert kept is not None and len(kept) == 1024 * 1024
    spool_module._write_direct(tmp_path / "large", (large[:5], large[5:]))
    assert spool_module._direct_buffers.memory is kept and len(kept) == 1024 * 1024
    assert (tmp_path / "small").read_bytes() == small
    assert (tmp_path / "large").read_bytes() == large


@pytest.mark.parametrize("direct_io", [False, True])
def test_a_sync_that_fails_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct_io: bool
) -> None:
    """The file was created and written, then its sync failed (a disk error): the partial file
    is removed and the commit fails, on both write paths."""
    data = SAMPLE.read_bytes()

    def failing_sync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    def failing_writev(fd: int, buffers: list[memoryview]) -> int:
        raise OSError(errno.EIO, "Input/output error")  # O_DSYNC: the write itself syncs

    monkeypatch.setattr(os, "fdatasync", failing_sync)
    if not direct_io:
        monkeypatch.setattr(os, "writev", failing_writev)
    spool = Spool(tmp_path, direct_io=direct_io)
    try:
        with pytest.raises(SpoolError):
            spool.commit(spool.stage(data), **_meta(data))
        assert not list((tmp_path / "tmp").iterdir())
        assert _rows(tmp_path) == 0 and not list((tmp_path / "objects").rglob("*.dcm"))
        assert spool.direct_io is direct_io
    finally:
        spool.close()
