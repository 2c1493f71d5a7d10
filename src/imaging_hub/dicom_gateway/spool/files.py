"""The spool's files: durable writing of instance files (staging, direct I/O, fsync).

An instance is written to ``tmp/`` first (:meth:`SpoolFiles.stage`, on a background thread,
synchronously: O_DSYNC or direct I/O plus fdatasync), then moved to
``objects/<StudyInstanceUID>/<SOPInstanceUID>.dcm`` and its directory entry fsync'd
(:meth:`SpoolFiles.place`). A file reaches ``objects/`` only after every check passed, so every
file there is a complete, checked Part-10 instance; the file is the durable record of the
instance, including what the index needs to rebuild its row after a power cut (its UIDs and its
requested priority, read from the header).
"""

import contextlib
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imaging_hub.dicom.uids import validate_uid
from imaging_hub.errors import SpoolError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StagedFile:
    """An instance being written to ``tmp/`` (see :meth:`SpoolFiles.stage`), and its SHA-256."""

    path: Path
    done: "Future[None]"
    size: int
    sha256: str


def _write_synced(path: Path, parts: tuple[bytes, ...]) -> None:
    """Write *parts* one after the other to a new file, durably (a failure removes the
    partial file).

    The file is opened with O_DSYNC and written with one writev: the write returns once the
    data (and what is needed to read it back) is on stable storage, as a write followed by
    fdatasync would, but without this thread needing the GIL between the two while the
    C-STORE handler holds it checking the data set.
    """
    with _new_file(path, os.O_DSYNC) as fd:
        _write_all(fd, [memoryview(part) for part in parts if len(part)])


@contextmanager
def _new_file(path: Path, flags: int) -> Iterator[int]:
    """A descriptor of the new file *path*, opened for writing with *flags*; if anything in
    the block fails with OSError, the partial file is removed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | flags, 0o600)
        try:
            yield fd
        finally:
            os.close(fd)
    except OSError:
        path.unlink(missing_ok=True)
        raise


def _write_all(fd: int, views: list[memoryview]) -> None:
    """writev until every byte of *views* is written (a short write continues)."""
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


#: Direct I/O needs the buffer's address, the file offset and the length aligned to the
#: device's logical block size; a page (4 KiB) suits every common device.
DIRECT_ALIGNMENT = 4096


#: Each writing thread keeps an aligned buffer this large at most for the next file; a larger
#: instance (a long multi-frame, say) gets a buffer of its own, released after its write.
KEPT_DIRECT_BUFFER_BYTES = 64 * 1024 * 1024


class _DirectBuffer(threading.local):
    """One page-aligned buffer per writing thread, reused for every file it writes."""

    memory: mmap.mmap | None = None

    @contextmanager
    def at_least(self, size: int) -> Iterator[mmap.mmap]:
        rounded = max(1, -(-size // (1024 * 1024))) * 1024 * 1024
        if rounded > KEPT_DIRECT_BUFFER_BYTES:
            with mmap.mmap(-1, rounded) as own:
                yield own
            return
        if self.memory is None or len(self.memory) < rounded:
            if self.memory is not None:
                self.memory.close()
            self.memory = mmap.mmap(-1, rounded)
        yield self.memory


_direct_buffers = _DirectBuffer()


def _write_direct(path: Path, parts: tuple[bytes, ...]) -> None:
    """Like `_write_synced`, with the file's whole blocks written by direct I/O (O_DIRECT).

    A buffered write copies the data into the page cache first, which costs memory pages the
    spool never reads back soon (the forwarder reads each file once, later) and, on virtual
    machines, fresh pages the host must supply: on this project's benchmark machine the copy
    took about a third of the gateway's CPU for a CT slice once the page cache had grown
    (docs/gateway.md). Here
    the data is copied once into a reused aligned buffer, its whole blocks go to the device
    from there, the last partial block is written through the page cache, and fdatasync makes
    both and the file's size durable. Raises OSError (EINVAL) where the file system has no
    direct I/O; the caller then writes buffered.
    """
    size = sum(len(part) for part in parts)
    whole = size - size % DIRECT_ALIGNMENT
    with _direct_buffers.at_least(size) as memory:
        offset = 0
        for part in parts:
            memory[offset : offset + len(part)] = part
            offset += len(part)
        with _new_file(path, os.O_DIRECT) as fd, memoryview(memory) as view:
            if whole:
                _write_all(fd, [view[:whole]])
            if whole < size:
                flags = fcntl.fcntl(fd, fcntl.F_GETFL)
                fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
                _write_all(fd, [view[whole:size]])
            os.fdatasync(fd)


def _sha256(parts: tuple[bytes, ...]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolFiles:
    """``objects/`` (instance files by study) and ``tmp/`` (files being written) of a spool."""

    def __init__(self, root: Path, *, direct_io: bool = True) -> None:
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.direct_io = direct_io
        self._durable_dirs: set[str] = set()
        # Staged writes (see stage()): one thread per association at most needs one.
        self._writer = ThreadPoolExecutor(max_workers=8, thread_name_prefix="spool-write")

    def close(self) -> None:
        self._writer.shutdown(wait=True)

    def clean_tmp(self) -> None:
        """Partial files of a crash before acknowledgement are garbage: nothing was promised."""
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)

    def path_for(self, study_uid: str, sop_uid: str) -> Path:
        validate_uid(study_uid, name="StudyInstanceUID")
        validate_uid(sop_uid, name="SOPInstanceUID")
        return self.objects / study_uid / f"{sop_uid}.dcm"

    def stage(self, *parts: bytes) -> StagedFile:
        """Start writing *parts* to ``tmp/`` synchronously on a background thread, and hash
        them meanwhile (see :meth:`imaging_hub.dicom_gateway.spool.Spool.stage`)."""
        tmp = self.tmp / f"{uuid.uuid4().hex}.part"
        done = self._writer.submit(self._write, tmp, parts)
        return StagedFile(tmp, done, sum(len(part) for part in parts), _sha256(parts))

    def _write(self, path: Path, parts: tuple[bytes, ...]) -> None:
        if self.direct_io:
            try:
                _write_direct(path, parts)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.direct_io = False
                log.info("the spool's file system refuses direct I/O: writing through the cache")
        _write_synced(path, parts)

    def discard(self, staged: StagedFile) -> None:
        """Drop a staged file (the instance was refused): nothing stays in the spool."""
        with contextlib.suppress(Exception):
            staged.done.result()
        staged.path.unlink(missing_ok=True)

    def place(self, staged: StagedFile, final: Path, study_uid: str) -> None:
        """Wait for *staged* to be written, move it to *final* and make the move durable."""
        try:
            staged.done.result()
            if study_uid not in self._durable_dirs:
                final.parent.mkdir(exist_ok=True)
                # The study directory's own entry; once per study and process (another
                # process may have created it without having fsync'd objects/ yet).
                _fsync_dir(self.objects)
                self._durable_dirs.add(study_uid)
            os.replace(staged.path, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            staged.path.unlink(missing_ok=True)
            raise SpoolError("The spool could not durably store the instance.") from exc

    def stored(self) -> Iterator[tuple[str, Path]]:
        """(study directory name, file) of every instance file in ``objects/``."""
        for study_dir in sorted(self.objects.iterdir()):
            for path in sorted(study_dir.glob("*.dcm")):
                yield study_dir.name, path

    def forget_study(self, study_uid: str) -> None:
        """The study left the spool: remove its directory if empty."""
        with contextlib.suppress(OSError):
            (self.objects / study_uid).rmdir()  # only if empty
        self._durable_dirs.discard(study_uid)

    def remove_if_unchanged(self, path: Path, sha256: str) -> bool:
        """Delete *path* if it still holds the bytes hashed *sha256*.

        The file is moved aside first and deleted only if it still holds the bytes that were
        sent: if the modality re-sent the instance in that instant, the new file is put back.
        """
        aside = self.tmp / f"{uuid.uuid4().hex}.purge"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        if hashlib.sha256(aside.read_bytes()).hexdigest() == sha256:
            aside.unlink()
            return True
        try:
            os.link(aside, path)  # a new version arrived in that instant: put it back
            aside.unlink()
        except FileExistsError:
            log.error("spool file %s changed twice while being purged; kept at %s", path, aside)
        return False
